"""Cost at ingest seen from the server: ``POST /v1/events`` prices calls and says how many
it could not price, and /metrics counts them by model with a bounded set of labels."""

import orjson
import pytest
from tests.helpers import now, task_events
from tests.server.conftest import auth
from tests.server.test_metrics import _value

from flywheel.ingest import IngestResult
from flywheel.records import new_id
from flywheel.server.metrics import UNPRICED_MODEL_LABELS, ServerMetrics


def _with_calls(*calls: tuple[str, int, int]) -> list[dict]:
    events = task_events(steps=0)
    task_id = events[0]["id"]
    events[1:1] = [
        {
            "type": "llm_call",
            "id": new_id(),
            "task_id": task_id,
            "seq": seq,
            "model": model,
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "started_at": now(),
        }
        for seq, (model, tokens_in, tokens_out) in enumerate(calls, start=1)
    ]
    return events


def test_events_get_their_cost_and_the_answer_counts_the_unpriced(client, store, keys):
    events = _with_calls(("gpt-4.1-mini", 2000, 500), ("acme-large", 10, 10), ("acme-large", 1, 1))
    response = client.post("/v1/events", content=orjson.dumps(events), headers=auth(keys["ingest"]))
    assert response.status_code == 200
    assert response.json()["unpriced_calls"] == 2
    steps = store.get_task(events[0]["id"]).steps
    assert [s.data["cost"] for s in steps] == [pytest.approx((2000 * 0.40 + 500 * 1.60) / 1e6), None, None]
    text = client.get("/metrics", headers=auth(keys["review"])).text
    assert _value(text, "flywheel_unpriced_llm_calls_total", model="acme-large") == 2
    assert _value(text, "flywheel_unpriced_llm_calls_total", model="gpt-4.1-mini") is None


def test_the_unpriced_counter_keeps_its_labels_bounded():
    metrics = ServerMetrics()
    many = {f"model-{i}": 1 for i in range(UNPRICED_MODEL_LABELS + 25)}
    metrics.record_ingest("events", IngestResult(received=0, stored=0, duplicates=0, unpriced=many))
    metrics.record_ingest("events", IngestResult(received=0, stored=0, duplicates=0, unpriced={"model-0": 1}))
    text = metrics.exposition().decode()
    series = [line for line in text.splitlines() if line.startswith("flywheel_unpriced_llm_calls_total{")]
    assert len(series) == UNPRICED_MODEL_LABELS + 1
    assert _value(text, "flywheel_unpriced_llm_calls_total", model="other") == 25
    assert _value(text, "flywheel_unpriced_llm_calls_total", model="model-0") == 2
