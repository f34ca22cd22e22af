"""The cycle owns turning the loop: it runs the stages in order (curate,
review, improve, evaluate, canary, watch, decide), checkpoints each in the
store so a crashed cycle resumes, keeps one cycle per workload at a time, and
computes the velocity metrics that the dashboard plots."""

from flywheel.cycle.lock import StoreLock, lock_holder
from flywheel.cycle.metrics import cycle_metrics, review_metrics, satisfaction
from flywheel.cycle.runner import STAGES, CyclePolicy, CycleRun, get_cycle, list_cycles, run_cycle

__all__ = [
    "STAGES",
    "CyclePolicy",
    "CycleRun",
    "StoreLock",
    "cycle_metrics",
    "get_cycle",
    "list_cycles",
    "lock_holder",
    "review_metrics",
    "run_cycle",
    "satisfaction",
]
