"""Cost at ingest: an llm_call with tokens and no cost is priced from the price table,
whatever way it came in; a client's cost is kept; an unknown model is counted, not guessed."""

import orjson
import pytest
from tests.helpers import now, task_events

from flywheel.errors import ConfigError
from flywheel.ingest import Ingestor
from flywheel.records import new_id


def _call(task_id: str, model: str, **fields) -> dict:
    return {
        "type": "llm_call",
        "id": new_id(),
        "task_id": task_id,
        "model": model,
        "messages": [{"role": "user", "content": "q"}],
        "started_at": now(),
        **fields,
    }


def _costs(store, task_id: str) -> dict[str, float | None]:
    return {s.name: s.data["cost"] for s in store.get_task(task_id).steps}


def test_a_known_model_with_tokens_gets_its_list_price(store, settings):
    events = task_events(steps=0)
    task_id = events[0]["id"]
    events[1:1] = [
        _call(task_id, "gpt-4o-mini-2024-07-18", input_tokens=1000, output_tokens=200),
        _call(task_id, "openai/gpt-4.1", input_tokens=10, output_tokens=0),
    ]
    result = Ingestor(store, settings).ingest(events)
    assert (result.stored, result.unpriced_calls) == (4, 0)
    assert _costs(store, task_id) == {
        "gpt-4o-mini-2024-07-18": pytest.approx((1000 * 0.15 + 200 * 0.60) / 1e6),
        "openai/gpt-4.1": pytest.approx(10 * 2.00 / 1e6),
    }


def test_the_request_body_path_prices_too_redacted_or_not(store, settings):
    events = task_events(steps=0)
    task_id = events[0]["id"]
    secret = "sk-" + "a1B2" * 12  # makes the batch take the redacting path
    events[1:1] = [
        _call(task_id, "claude-3-5-haiku-20241022", input_tokens=1_000_000, output_tokens=0),
        _call(
            task_id,
            "claude-3-haiku-20240307",
            input_tokens=0,
            output_tokens=1_000_000,
            messages=[{"role": "user", "content": f"my key is {secret}"}],
        ),
    ]
    ingestor = Ingestor(store, settings)
    first, second = events[:2] + events[3:], events[:1] + events[2:]
    assert ingestor.ingest_body(orjson.dumps({"events": first})).stored == 3
    assert ingestor.ingest_body(orjson.dumps(second)).stored == 1
    assert _costs(store, task_id) == {
        "claude-3-5-haiku-20241022": pytest.approx(0.80),
        "claude-3-haiku-20240307": pytest.approx(1.25),
    }
    assert secret not in orjson.dumps(store.get_task(task_id).model_dump(mode="json")).decode()


def test_a_cost_the_client_gave_is_kept(store, settings):
    events = task_events(steps=0)
    task_id = events[0]["id"]
    events[1:1] = [
        _call(task_id, "gpt-4o", input_tokens=1000, output_tokens=1000, cost=0.5),
        _call(task_id, "gpt-4o-free-tier", input_tokens=1000, output_tokens=1000, cost=0.0),
    ]
    result = Ingestor(store, settings).ingest(events)
    assert result.unpriced_calls == 0
    assert _costs(store, task_id) == {"gpt-4o": 0.5, "gpt-4o-free-tier": 0.0}


def test_an_unknown_model_stays_null_and_is_counted(store, settings):
    events = task_events(steps=0)
    task_id = events[0]["id"]
    events[1:1] = [
        _call(task_id, "acme-large", input_tokens=5, output_tokens=5),
        _call(task_id, "acme-large", input_tokens=7, output_tokens=1, seq=2),
        _call(task_id, "gpt-4o-mini"),  # no tokens: nothing to price, nothing to count
        _call(task_id, "gpt-4o", input_tokens=3),  # half the usage is not a cost either
    ]
    result = Ingestor(store, settings).ingest(events)
    assert result.unpriced == {"acme-large": 2}
    assert result.as_dict()["unpriced_calls"] == 2
    assert all(s.data["cost"] is None for s in store.get_task(task_id).steps)


def test_a_user_price_file_overrides_a_built_in_price(store, settings, tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text("gpt-4o-mini: {input: 1.0, output: 2.0}\nacme-large: [10, 20]\n")
    events = task_events(steps=0)
    task_id = events[0]["id"]
    events[1:1] = [
        _call(task_id, "gpt-4o-mini", input_tokens=1_000_000, output_tokens=1_000_000),
        _call(task_id, "acme-large-v2", input_tokens=100_000, output_tokens=0),
    ]
    ingestor = Ingestor(store, settings.model_copy(update={"prices": path}))
    assert ingestor.ingest(events).unpriced_calls == 0
    assert _costs(store, task_id) == {"gpt-4o-mini": 3.0, "acme-large-v2": 1.0}


def test_a_bad_price_file_stops_the_ingestor_with_a_clear_error(store, settings, tmp_path):
    path = tmp_path / "prices.json"
    path.write_text('{"gpt-4o-mini": {"input": -0.15, "output": 0.6}}')
    with pytest.raises(ConfigError) as info:
        Ingestor(store, settings.model_copy(update={"prices": path}))
    assert str(path) in str(info.value)
    assert "'gpt-4o-mini'" in str(info.value) and "input price -0.15" in str(info.value)
