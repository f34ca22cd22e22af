"""Workloads: the kinds of job an agent does, as datasets of requests with a
way to tell a right answer. BFCL ships with the project; users bring JSONL."""

from flywheel.errors import InvalidInput

__all__ = ["load_categories"]


def load_categories(categories: list[str], *, per_category: int | None = None, seed: int = 0) -> list:  # type: ignore[type-arg]
    """BFCL items of any mix of single- and multi-turn categories."""
    from flywheel.workloads.bfcl import SINGLE_TURN, load_bfcl
    from flywheel.workloads.bfcl_multi import MULTI_TURN, load_multi_turn

    single = [c for c in categories if c in SINGLE_TURN]
    multi = [c for c in categories if c in MULTI_TURN]
    unknown = sorted(set(categories) - set(single) - set(multi))
    if unknown or not categories:
        raise InvalidInput(
            f"unknown BFCL categories {unknown}" if unknown else "no BFCL categories given",
            hint=f"choose among {', '.join(SINGLE_TURN + MULTI_TURN)}",
        )
    items: list = []  # type: ignore[type-arg]
    items.extend(load_bfcl(single, limit=per_category, seed=seed) if single else [])
    items.extend(load_multi_turn(multi, limit=per_category, seed=seed) if multi else [])
    return items
