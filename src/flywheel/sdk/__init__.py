"""The agent-side SDK: tasks, steps, human signals, OpenAI capture.

It imports only ``records``, ``config`` and ``errors`` of ours (never the
store or the server), batches in memory, flushes from a background thread,
spools to disk when it cannot deliver, and writes what the server refuses for
good to a dead-letter file (``flywheel.sdk.pipeline`` has the rules).
"""

from flywheel.sdk.client import Flywheel, init
from flywheel.sdk.task import TaskHandle, current_task

__all__ = ["Flywheel", "TaskHandle", "current_task", "init"]
