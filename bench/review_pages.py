"""Web page benchmark: server time of the review pages with N tasks.

    python bench/review_pages.py [--tasks 1000000] [--db sqlite|postgresql|all] [--requests 200]

Fills a fresh store (SQLite file, and/or a fresh PostgreSQL database on
127.0.0.1:5432) with N synthetic tasks of 6 steps each (bench/curate.py's
generator) and 10,000 review items, then times requests to the pages through
the real app in-process (routing, auth, queries, templates; no network):
the task list (first page, filtered by workload, by outcome, by negative
feedback, 100 pages deep by cursor), the task view of random tasks, the
review queue, and the content search (a scan). The baseline, measured in the
same run, is ``/healthz`` (the framework and one query): the ratios say what
the pages add. Prints p50/p95 per page; JSON to bench/results/review_pages.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from curate import generate  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from flywheel.config import Settings  # noqa: E402
from flywheel.records import utcnow  # noqa: E402
from flywheel.server import create_app  # noqa: E402
from flywheel.store import Store  # noqa: E402
from flywheel.store import tables as t  # noqa: E402

PG_ADMIN = "postgresql+psycopg://root@127.0.0.1:5432/test"


def review_items(store: Store, n_tasks: int, n: int = 10_000) -> None:
    rng = random.Random(1)
    now = utcnow()
    rows = [
        {
            "id": f"r{i}",
            "task_id": f"t{i * (n_tasks // n):08d}",
            "workload": "bench",
            "reason": "low confidence",
            "rule": "low_confidence",
            "priority": rng.random(),
            "state": "pending",
            "created_at": now,
            "updated_at": now,
        }
        for i in range(n)
    ]
    with store.engine.begin() as conn:
        conn.execute(t.review_items.insert(), rows)


def timed(client: TestClient, url: str, headers: dict[str, str], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.get(url, headers=headers)
        out.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{url}: {response.status_code} {response.text[:300]}")
    return out


def bench(url: str, tasks: int, requests: int) -> dict[str, object]:
    home = Path(tempfile.mkdtemp())
    settings = Settings(database_url=url, home=home, url=None)
    store = Store.open(settings)
    started = time.perf_counter()
    generate(store, tasks)
    review_items(store, tasks)
    if url.startswith("postgresql"):
        with store.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    fill = time.perf_counter() - started
    key, _ = store.create_key("bench", ["review"])
    headers = {"Authorization": f"Bearer {key}"}
    rng = random.Random(2)
    results: dict[str, dict[str, float]] = {}
    with TestClient(create_app(settings, store=store), base_url="http://localhost") as client:
        deep = "/ui/tasks"
        for _ in range(100):  # follow "older tasks" 100 pages down
            page = client.get(deep, headers=headers).text
            marker = 'href="/ui/tasks?'
            deep = "/ui/tasks?" + page.split(marker, 1)[1].split('"', 1)[0].replace("&amp;", "&")
        pages = {
            "healthz (baseline)": "/healthz",
            "task list": "/ui/tasks",
            "task list, workload": "/ui/tasks?workload=bench",
            "task list, failed": "/ui/tasks?outcome=failure",
            "task list, negative feedback": "/ui/tasks?feedback=negative",
            "task list, 100 pages deep": deep,
            "task view": None,
            "review queue": "/ui/review",
            "review queue, workload": "/ui/review?workload=bench",
        }
        for name, path in pages.items():
            timed(client, path or "/ui/tasks/t00000001", headers, 3)  # warm
            if path is None:
                samples = []
                for _ in range(requests):
                    task = f"/ui/tasks/t{rng.randrange(tasks):08d}"
                    samples += timed(client, task, headers, 1)
            else:
                samples = timed(client, path, headers, requests)
            results[name] = {
                "p50_ms": statistics.median(samples),
                "p95_ms": statistics.quantiles(samples, n=20)[-1],
            }
        search = timed(client, "/ui/tasks?search=zzz-not-there", headers, 3)
        results["content search, no match (full scan)"] = {
            "p50_ms": statistics.median(search),
            "p95_ms": max(search),
        }
    base = results["healthz (baseline)"]["p50_ms"]
    for row in results.values():
        row["p50_vs_baseline"] = row["p50_ms"] / base
    store.close()
    return {"tasks": tasks, "fill_seconds": fill, "pages": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "all"), default="all")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    report: dict[str, object] = {}
    for backend in ("sqlite", "postgresql") if args.db == "all" else (args.db,):
        if backend == "sqlite":
            url = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
            report[backend] = bench(url, args.tasks, args.requests)
            continue
        name = f"flywheel_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            report[backend] = bench(PG_ADMIN.rsplit("/", 1)[0] + f"/{name}", args.tasks, args.requests)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    for backend, r in report.items():
        print(f"\n{backend}: {r['tasks']:,} tasks (filled in {r['fill_seconds']:.0f} s)")  # type: ignore[index]
        print(f"{'page':<40} {'p50 ms':>8} {'p95 ms':>8} {'p50 / healthz':>14}")
        for name, row in r["pages"].items():  # type: ignore[index]
            print(f"{name:<40} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} {row['p50_vs_baseline']:>14.1f}")
    out = ROOT / "bench" / "results" / "review_pages.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
