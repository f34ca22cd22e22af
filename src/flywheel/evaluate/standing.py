"""The items a gate judges on: the workload's standing evaluation set
(``flywheel.curate.eval_set``), its stale items held out until re-validated."""

from __future__ import annotations

from flywheel.evaluate.offline import EvalItem, items_of_rows
from flywheel.store import Store

__all__ = ["standing_items"]


def standing_items(store: Store, workload: str) -> list[EvalItem]:
    """Every active, fresh item of the workload's standing set, as items to answer."""
    rows = [r for r in store.eval_set_items(workload) if r["stale"] is None]
    examples = store.examples_by_id([r["id"] for r in rows])
    return items_of_rows([examples[r["id"]] for r in rows if r["id"] in examples])
