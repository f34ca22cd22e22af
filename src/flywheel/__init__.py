"""data-flywheel: make AI agents improve from their own production traffic.

import flywheel
fw = flywheel.init(workload="support-triage")
with fw.task(session_id="s1", input=question) as task:
    task.tool_call(name="lookup", arguments={"id": 7}, output=row)
    task.finish(output=answer, success=True, confidence=0.83)
"""

from flywheel.sdk import Flywheel, TaskHandle, current_task, init

__version__ = "0.1.0"

__all__ = ["Flywheel", "TaskHandle", "__version__", "current_task", "init"]
