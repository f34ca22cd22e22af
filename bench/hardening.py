"""Does the server stay responsive while it works through the heaviest input it accepts?

    python bench/hardening.py [--backend sqlite|postgresql] [--repeat 3]

It starts a real `flywheel serve` (one process) on a fresh database and, in the
same run, polls `GET /healthz` back to back from one client while each load
below is posted from another, and compares the latency with `/healthz` at idle
(the same-run baseline):

* the largest allowed batch: FLYWHEEL_MAX_BATCH_EVENTS events filling most of
  FLYWHEEL_MAX_BODY_BYTES, once as plain text (the fast path) and once with a
  redaction trigger in every event (the field-by-field walk);
* adversarial redaction inputs at the field limit (FLYWHEEL_MAX_FIELD_CHARS):
  repeated private-key headers (quadratic in the old pattern: 8 s for 160 KB),
  an e-mail-like run without an @, a JWT-like run without dots, and a text
  that triggers every detector;
* a gzip bomb (200 MB of spaces in about 200 KB): its answer and the server's
  resident memory before and after.

Latency: p50, p99 and max of the /healthz answers that overlapped the load,
with max / idle p50 as the ratio. Nothing here is asserted; the tests check
behaviour, this measures it.

Prints a table and writes JSON to bench/results/hardening.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from flywheel.config import Settings
from flywheel.store import Store

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from ingest import Server, commit_id  # noqa: E402  (bench/ingest.py: the same live server)

PG_ADMIN = os.environ.get("FLYWHEEL_TEST_PG", "postgresql+psycopg://root@127.0.0.1:5432/test")


# ---------------------------------------------------------------- loads


def _now() -> str:
    return datetime.now(UTC).isoformat()


def largest_batch(settings: Settings, trigger: str) -> bytes:
    """``max_batch_events`` tool calls whose text fills ~90% of the body limit;
    ``trigger`` (empty, or text a redaction detector looks for) in each."""
    n = settings.max_batch_events
    task_id = str(uuid.uuid4())
    at = _now()
    probe = {
        "type": "tool_call",
        "id": "x" * 36,
        "task_id": task_id,
        "seq": 1,
        "name": "search",
        "arguments": {"q": ""},
        "output": "",
        "started_at": at,
    }
    room = int(settings.max_body_bytes * 0.9) // n - len(orjson.dumps(probe)) - len(trigger)
    words = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do " * (room // 60 + 1))[
        : max(room, 0)
    ]
    events = [
        {
            **probe,
            "id": str(uuid.uuid4()),
            "seq": i,
            "output": words + trigger,
            "arguments": {"q": f"query {i}"},
        }
        for i in range(n)
    ]
    body = orjson.dumps({"events": events})
    assert len(body) <= settings.max_body_bytes, len(body)
    return body


def adversarial(settings: Settings, unit: str) -> bytes:
    """One event whose output is ``unit`` repeated up to the field limit."""
    text = (unit * (settings.max_field_chars // len(unit) + 1))[: settings.max_field_chars]
    event = {
        "type": "tool_call",
        "id": str(uuid.uuid4()),
        "task_id": str(uuid.uuid4()),
        "name": "dump",
        "output": text,
        "started_at": _now(),
    }
    return orjson.dumps([event])


def gzip_bomb(size: int) -> bytes:
    compressor = zlib.compressobj(9, wbits=31)
    chunk = b" " * 1_000_000
    return b"".join(compressor.compress(chunk) for _ in range(size // len(chunk))) + compressor.flush()


EVERY_TRIGGER = "sk- eyJ bearer -----BEGIN @ 1.1.1 1234 5678 9012 3 a:b:c "


# ------------------------------------------------------------- measuring


def poll_healthz(url: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(timeout=120) as client:
        while not stop.is_set():
            start = time.perf_counter()
            client.get(f"{url}/healthz").raise_for_status()
            out.append(time.perf_counter() - start)


def idle(url: str, seconds: float = 2.0) -> list[float]:
    stop, latencies = threading.Event(), []
    poller = threading.Thread(target=poll_healthz, args=(url, stop, latencies))
    poller.start()
    time.sleep(seconds)
    stop.set()
    poller.join()
    return latencies


def under_load(
    url: str, key: str, body: bytes, headers: dict[str, str]
) -> tuple[list[float], float, int, Any]:
    """/healthz latencies while ``body`` is posted to /v1/events, the post's own
    time, its status and its answer."""
    stop, latencies = threading.Event(), []
    poller = threading.Thread(target=poll_healthz, args=(url, stop, latencies))
    poller.start()
    time.sleep(0.2)
    latencies.clear()  # only what overlaps the load
    start = time.perf_counter()
    response = httpx.post(
        f"{url}/v1/events",
        content=body,
        headers={"Authorization": f"Bearer {key}", "content-type": "application/json", **headers},
        timeout=600,
    )
    took = time.perf_counter() - start
    stop.set()
    poller.join()
    try:
        answer = response.json()
    except ValueError:
        answer = response.text[:200]
    return latencies, took, response.status_code, answer


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies) or [float("nan")]
    return {
        "n": len(latencies),
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


def run(backend: str, repeat: int) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="flywheel-hardening-"))
    database = f"flywheel_bench_{uuid.uuid4().hex[:8]}"
    if backend == "sqlite":
        url = f"sqlite:///{home / 'flywheel.db'}"
    else:
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{database}"
        _postgres(f'CREATE DATABASE "{database}"')
    settings = Settings(database_url=url)
    store = Store.open(settings)
    key, _ = store.create_key("bench", ["ingest"])
    store.close()
    loads = {
        "largest batch, plain text": (largest_batch(settings, ""), {}),
        "largest batch, a redaction trigger in each event": (
            largest_batch(settings, " mail ops@example.org"),
            {},
        ),
        "field limit: repeated private-key headers": (
            adversarial(settings, "-----BEGIN PRIVATE KEY-----"),
            {},
        ),
        "field limit: e-mail-like run, no @": (adversarial(settings, "a."), {}),
        "field limit: JWT-like run, no dots": (adversarial(settings, "-eyJ"), {}),
        "field limit: every detector's trigger": (adversarial(settings, EVERY_TRIGGER), {}),
        "gzip bomb: 200 MB of spaces": (gzip_bomb(200_000_000), {"content-encoding": "gzip"}),
    }
    server = Server(url, home)
    result: dict[str, Any] = {
        "backend": backend,
        "commit": commit_id(),
        "cpus": os.cpu_count(),
        "max_body_bytes": settings.max_body_bytes,
        "max_batch_events": settings.max_batch_events,
        "max_field_chars": settings.max_field_chars,
        "loads": [],
    }
    try:
        idle_latencies = idle(server.url)
        result["idle"] = summary(idle_latencies)
        for name, (body, headers) in loads.items():
            for attempt in range(repeat):
                rss_before = server.rss_mb()
                latencies, took, status, answer = under_load(server.url, key, body, headers)
                row = {
                    "load": name,
                    "attempt": attempt,
                    "body_bytes": len(body),
                    "status": status,
                    "request_s": took,
                    "rss_before_mb": rss_before,
                    "rss_after_mb": server.rss_mb(),
                    "stored": answer.get("stored") if isinstance(answer, dict) else None,
                    "error": (answer.get("error") or {}).get("message")
                    if isinstance(answer, dict)
                    else answer,
                    **summary(latencies),
                }
                row["max_over_idle_p50"] = row["max_ms"] / result["idle"]["p50_ms"]
                result["loads"].append(row)
    finally:
        server.stop()
        if backend == "postgresql":
            _postgres(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return result


def _postgres(statement: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(statement))
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--repeat", type=int, default=3, help="posts of each load")
    args = parser.parse_args()
    result = run(args.backend, args.repeat)
    out = ROOT / "bench" / "results" / "hardening.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))

    idle_row = result["idle"]
    print(
        f"backend {result['backend']}, commit {result['commit']}, {result['cpus']} CPUs; "
        f"/healthz at idle: p50 {idle_row['p50_ms']:.1f} ms, p99 {idle_row['p99_ms']:.1f} ms, "
        f"max {idle_row['max_ms']:.1f} ms ({idle_row['n']} polls)"
    )
    header = (
        f"{'load':50s} {'body':>8s} {'status':>6s} {'request':>8s} "
        f"{'hz p50':>7s} {'hz p99':>7s} {'hz max':>7s} {'max/idle':>8s} {'RSS':>12s}"
    )
    print(header)
    print("-" * len(header))
    for row in result["loads"]:
        print(
            f"{row['load'][:50]:50s} {row['body_bytes'] / 1e6:7.2f}M {row['status']:>6d} "
            f"{row['request_s']:7.2f}s {row['p50_ms']:6.1f}m {row['p99_ms']:6.1f}m {row['max_ms']:6.0f}m "
            f"{row['max_over_idle_p50']:7.0f}x {row['rss_before_mb']:5.0f}->{row['rss_after_mb']:4.0f}M"
        )
    print(f"(hz: /healthz latency in ms while the load was processed; JSON in {out.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
