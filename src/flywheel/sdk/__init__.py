"""The agent-side SDK: tasks, steps, human signals, OpenAI capture.

It imports only ``records``, ``config`` and ``errors`` of ours (never the
store or the server), batches in memory, flushes from a background thread,
and spools to disk when it cannot deliver.
"""

from flywheel.sdk.client import Flywheel, init
from flywheel.sdk.task import TaskHandle, current_task

__all__ = ["Flywheel", "TaskHandle", "current_task", "init"]
