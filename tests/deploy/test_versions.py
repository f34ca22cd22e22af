"""Versions, routing and deployment changes on the real store."""

import pytest

import flywheel
from flywheel.deploy import (
    config_diff,
    create_version,
    deployment,
    get_version,
    promote,
    rollback,
    route,
    set_canary,
)
from flywheel.deploy.versions import _bucket
from flywheel.errors import Conflict, InvalidInput, NotFound


def test_versions_are_content_addressed_and_numbered(store):
    a = create_version(store, "w", {"model": "local", "rules": ["be brief"]})
    again = create_version(store, "w", {"rules": ["be brief"], "model": "local"})
    config = {"model": "local", "rules": ["be brief", "use metric units"]}
    b = create_version(store, "w", config, parent_id=a.id, strategy="rules")
    assert again.id == a.id and (a.number, b.number) == (1, 2)
    assert get_version(store, "w@2").id == b.id and b.parent_id == a.id
    assert config_diff(a, b) == {"rules": {"added": ["use metric units"], "removed": [], "from": 1, "to": 2}}
    with pytest.raises(InvalidInput, match="unknown agent config keys"):
        create_version(store, "w", {"modle": "local"})
    with pytest.raises(NotFound):
        get_version(store, "w@9")


def test_canary_is_sticky_and_close_to_its_share(store):
    stable = create_version(store, "w", {"model": "local"})
    candidate = create_version(store, "w", {"model": "local", "rules": ["x"]})
    promote(store, "w", stable.id)
    set_canary(store, "w", candidate.id, 0.2)
    sessions = [f"session-{i}" for i in range(100_000)]
    on_canary = sum(_bucket(s, "w") < 0.2 for s in sessions)
    assert abs(on_canary / len(sessions) - 0.2) < 0.005
    served = {s: route(store, "w", s).id for s in sessions[:200]}
    assert served == {s: route(store, "w", s).id for s in sessions[:200]}  # sticky
    assert set(served.values()) == {stable.id, candidate.id}
    set_canary(store, "w", candidate.id, 0.0)  # kill switch
    assert {route(store, "w", s).id for s in sessions[:200]} == {stable.id}


def test_promotion_races_have_one_winner_and_everything_is_audited(store):
    v1 = create_version(store, "w", {"model": "local"})
    v2 = create_version(store, "w", {"model": "local", "rules": ["a"]})
    v3 = create_version(store, "w", {"model": "local", "rules": ["b"]})
    promote(store, "w", v1.id)
    set_canary(store, "w", v2.id, 0.5)
    promote(store, "w", v2.id, expect_canary=v2.id, reason="won the A/B")
    with pytest.raises(Conflict, match="someone changed it first"):
        promote(store, "w", v2.id, expect_canary=v2.id)  # the second promoter loses
    set_canary(store, "w", v3.id, 0.1)
    rollback(store, "w", reason="error rate up")
    assert deployment(store, "w")["canary_version"] is None
    with pytest.raises(Conflict, match="no canary"):
        rollback(store, "w")
    actions = [e.action for e in reversed(store.audit_events(record_type="deployment"))]
    expected = ["deploy.promote", "deploy.canary", "deploy.promote", "deploy.canary", "deploy.rollback"]
    assert actions == expected
    other = create_version(store, "elsewhere", {"model": "local"})
    with pytest.raises(InvalidInput, match="belongs to workload 'elsewhere'"):
        set_canary(store, "w", other.id, 0.1)


def test_the_sdk_gets_the_routed_version_and_records_it(store, settings):
    stable = create_version(store, "w", {"model": "local"})
    canary = create_version(store, "w", {"model": "local", "rules": ["r"]})
    promote(store, "w", stable.id)
    set_canary(store, "w", canary.id, 1.0)
    fw = flywheel.init("w", settings=settings)
    with fw.task(session_id="s1", input="x") as task:
        config = fw.agent_config(session_id="s1")
        task.finish("ok")
    fw.flush()
    fw.close()
    assert config.id == canary.id
    assert store.get_task(task.id).agent_version == canary.id


def test_two_promoters_reading_the_same_state_one_wins(store):
    v1 = create_version(store, "w", {"model": "local"})
    v2 = create_version(store, "w", {"model": "local", "rules": ["a"]})
    v3 = create_version(store, "w", {"model": "local", "rules": ["b"]})
    promote(store, "w", v1.id)
    seen = deployment(store, "w")["updated_at"]
    promote(store, "w", v2.id, expect_updated_at=seen)
    with pytest.raises(Conflict, match="changed since it was read"):
        promote(store, "w", v3.id, expect_updated_at=seen)
    assert deployment(store, "w")["stable_version"] == v2.id
