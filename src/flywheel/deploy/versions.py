"""Agent versions and their deployment: immutable, content-addressed bundles,
a stable version and an optional canary per workload, sticky routing.

A version's id is the hash of its canonical config (model and parameters,
system prompt, few-shot examples, knowledge snapshot, tool policy, rules,
adapter): the same bundle is the same version. Numbers count up per workload.
Every deployment change is one transaction and one audit event.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import func, select, update

from flywheel.errors import Conflict, InvalidInput, NotFound
from flywheel.records import AgentVersion, utcnow
from flywheel.store import Store
from flywheel.store import tables as t

__all__ = [
    "CONFIG_KEYS",
    "config_diff",
    "create_version",
    "deployment",
    "get_version",
    "list_versions",
    "promote",
    "rollback",
    "route",
    "set_canary",
]

CONFIG_KEYS = (
    "model",
    "system_prompt",
    "few_shot",
    "knowledge",
    "knowledge_snapshot",
    "rules",
    "tool_policy",
    "adapter",
    "few_shot_pool",  # per-request examples, their embeddings pinned
    "max_retries",
    "max_steps",
    "max_tokens",
)


def _canonical(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)


def create_version(
    store: Store,
    workload: str,
    config: dict[str, Any],
    *,
    parent_id: str | None = None,
    dataset_id: str | None = None,
    strategy: str | None = None,
    actor: str = "cli",
) -> AgentVersion:
    """The version of this exact config (created if new)."""
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise InvalidInput(f"unknown agent config keys {unknown}; known: {', '.join(CONFIG_KEYS)}")
    digest = hashlib.sha256(f"{workload}\n{_canonical(config)}".encode()).hexdigest()
    version_id = f"v-{digest[:20]}"
    with store._writing() as conn:
        row = (
            conn.execute(select(t.agent_versions).where(t.agent_versions.c.id == version_id))
            .mappings()
            .first()
        )
        if row is not None:
            return AgentVersion(**row)
        number = (
            conn.execute(
                select(func.max(t.agent_versions.c.number)).where(t.agent_versions.c.workload == workload)
            ).scalar()
            or 0
        ) + 1
        values = {
            "id": version_id,
            "workload": workload,
            "number": number,
            "parent_id": parent_id,
            "config": json.loads(_canonical(config)),
            "dataset_id": dataset_id,
            "strategy": strategy,
            "created_at": utcnow(),
        }
        conn.execute(t.agent_versions.insert(), values)
        store._audit(
            conn,
            actor,
            "version.create",
            "agent_version",
            version_id,
            {"workload": workload, "number": number, "strategy": strategy},
        )
    return AgentVersion(**values)


def get_version(store: Store, ref: str) -> AgentVersion:
    """By id, or ``WORKLOAD@NUMBER``."""
    c = t.agent_versions.c
    query = select(t.agent_versions)
    if "@" in ref and ref.rpartition("@")[2].isdigit():
        workload, _, number = ref.rpartition("@")
        query = query.where(c.workload == workload, c.number == int(number))
    else:
        query = query.where(c.id == ref)
    with store.engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFound(
            f"no agent version {ref!r}", hint="list them with 'flywheel versions list --workload W'"
        )
    return AgentVersion(**row)


def list_versions(store: Store, workload: str) -> list[AgentVersion]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(t.agent_versions)
            .where(t.agent_versions.c.workload == workload)
            .order_by(t.agent_versions.c.number)
        ).mappings()
        return [AgentVersion(**r) for r in rows]


def config_diff(a: AgentVersion, b: AgentVersion) -> dict[str, dict[str, Any]]:
    """Keys whose values differ: ``{key: {"from": ..., "to": ...}}`` (few-shot lists summarised)."""
    out = {}
    for key in sorted(set(a.config) | set(b.config)):
        before, after = a.config.get(key), b.config.get(key)
        if before == after:
            continue
        if isinstance(before, list) or isinstance(after, list):
            before_set = {_canonical(x) if isinstance(x, dict) else str(x) for x in before or []}
            after_set = {_canonical(x) if isinstance(x, dict) else str(x) for x in after or []}
            out[key] = {
                "added": sorted(after_set - before_set)[:20],
                "removed": sorted(before_set - after_set)[:20],
                "from": len(before or []),
                "to": len(after or []),
            }
        else:
            out[key] = {"from": before, "to": after}
    return out


def deployment(store: Store, workload: str) -> dict[str, Any] | None:
    with store.engine.connect() as conn:
        row = (
            conn.execute(select(t.deployments).where(t.deployments.c.workload == workload)).mappings().first()
        )
    return dict(row) if row else None


def _bucket(session_id: str, workload: str) -> float:
    """A session's fixed place in [0, 1): the same session always lands the same way."""
    digest = hashlib.sha256(f"{workload}\x00{session_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def route(store: Store, workload: str, session_id: str | None) -> AgentVersion | None:
    """The version serving this session: the canary for its share of sessions, else stable."""
    current = deployment(store, workload)
    if current is None:
        return None
    chosen = current["stable_version"]
    canary_on = current["canary_version"] and current["canary_share"] > 0 and session_id is not None
    if canary_on and _bucket(session_id or "", workload) < current["canary_share"]:
        chosen = current["canary_version"]
    return get_version(store, chosen)


def _change(
    store: Store,
    workload: str,
    actor: str,
    action: str,
    values: dict[str, Any],
    expect_canary: str | None = None,
    reason: str = "",
    expect_updated_at: Any = None,
) -> dict[str, Any]:
    with store._writing() as conn:
        current = (
            conn.execute(select(t.deployments).where(t.deployments.c.workload == workload)).mappings().first()
        )
        if current is None:
            if action != "deploy.promote":
                raise Conflict(
                    f"workload {workload!r} has no deployment yet",
                    hint="promote a version first: flywheel deploy promote VERSION",
                )
            conn.execute(
                t.deployments.insert(),
                {
                    "workload": workload,
                    "canary_version": None,
                    "canary_share": 0.0,
                    **values,
                    "updated_at": utcnow(),
                },
            )
        else:
            if expect_updated_at is not None and current["updated_at"] != expect_updated_at:
                raise Conflict(
                    f"the deployment of {workload!r} changed since it was read: someone else changed it",
                    hint="check 'flywheel deploy status' and decide again",
                )
            if expect_canary is not None and current["canary_version"] != expect_canary:
                raise Conflict(
                    f"the canary of {workload!r} is {current['canary_version']!r}, not {expect_canary!r}: "
                    "someone changed it first"
                )
            conn.execute(
                update(t.deployments)
                .where(t.deployments.c.workload == workload)
                .values(**values, updated_at=utcnow())
            )
        store._audit(conn, actor, action, "deployment", workload, {**values, "reason": reason})
    return deployment(store, workload) or {}


def set_canary(
    store: Store, workload: str, version_id: str | None, share: float, *, actor: str = "cli"
) -> dict[str, Any]:
    """Serve ``version_id`` to ``share`` of sessions (``share=0`` or no version: the kill switch)."""
    if not 0.0 <= share <= 1.0:
        raise InvalidInput(f"the canary share must be between 0 and 1, not {share}")
    if version_id is not None:
        version = get_version(store, version_id)
        if version.workload != workload:
            raise InvalidInput(
                f"version {version_id} belongs to workload {version.workload!r}, not {workload!r}"
            )
        version_id = version.id
    return _change(
        store,
        workload,
        actor,
        "deploy.canary",
        {"canary_version": version_id, "canary_share": share if version_id else 0.0},
    )


def promote(
    store: Store,
    workload: str,
    version_id: str,
    *,
    actor: str = "cli",
    reason: str = "",
    expect_canary: str | None = None,
    expect_updated_at: Any = None,
) -> dict[str, Any]:
    """Make ``version_id`` stable (and end any canary). ``expect_canary`` or
    ``expect_updated_at`` (from the deployment as read) make it a compare-and-swap:
    two processes promoting at once cannot both win."""
    version = get_version(store, version_id)
    if version.workload != workload:
        raise InvalidInput(f"version {version_id} belongs to workload {version.workload!r}, not {workload!r}")
    values = {"stable_version": version.id, "canary_version": None, "canary_share": 0.0}
    return _change(
        store,
        workload,
        actor,
        "deploy.promote",
        values,
        expect_canary=expect_canary,
        reason=reason,
        expect_updated_at=expect_updated_at,
    )


def rollback(store: Store, workload: str, *, actor: str = "cli", reason: str = "") -> dict[str, Any]:
    """Stop the canary: every session goes back to the stable version."""
    current = deployment(store, workload)
    if current is None or not current["canary_version"]:
        raise Conflict(f"workload {workload!r} has no canary to roll back")
    values = {"canary_version": None, "canary_share": 0.0}
    return _change(
        store,
        workload,
        actor,
        "deploy.rollback",
        values,
        expect_canary=current["canary_version"],
        reason=reason,
    )
