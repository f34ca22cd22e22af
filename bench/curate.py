"""Curation benchmark: the whole curation of N synthetic tasks in SQLite.

    python bench/curate.py [--tasks 1000000]

Generates N tasks (6 steps each: a model call, tool calls with errors, retries
and fallbacks, a retrieval, a reasoning step; feedback on ~35%, corrections on
~3%, questions drawn from a pool so that near-duplicates abound) straight into
a fresh SQLite store, then times, in the same run:

* ``flywheel.curate.curate`` with the default rules (everything: signals,
  examples, quality, exact and near dedup, splits, staleness, review items,
  the dataset version written back);
* a straightforward pandas pass of the same rules (signals from the same
  tables, first-matching rule per task, exact dedup), which writes nothing.

Each pass runs in a process of its own (its peak RSS is its own). Reports
seconds, tasks/s, peak RSS and the ratio; JSON to bench/results/curate.json.
``--keep-db FILE`` keeps the generated tasks and reuses them on the next run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from flywheel.config import Settings  # noqa: E402
from flywheel.curate import DEFAULT_RULES, curate, parse_rules  # noqa: E402
from flywheel.store import RowBatch, Store  # noqa: E402

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": f"tool_{i}",
            "description": f"tool number {i}",
            "parameters": {
                "type": "object",
                "properties": {"q": {"type": "string"}, "n": {"type": "integer"}},
                "required": ["q"],
            },
        },
    }
    for i in range(40)
]
WORDS = [
    "order",
    "refund",
    "weather",
    "flight",
    "hotel",
    "invoice",
    "account",
    "password",
    "shipping",
    "delivery",
    "table",
    "price",
]


def rss_mb() -> float:
    """This process's peak RSS: VmHWM (``ru_maxrss`` would count the RSS the parent
    had when it forked this process), where /proc has it."""
    status = Path("/proc/self/status")
    lines = status.read_text().splitlines() if status.exists() else []
    for line in lines:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no /proc: an upper bound


def generate(store: Store, n: int, seed: int = 0) -> float:
    rng = random.Random(seed)
    questions = [" ".join(rng.choice(WORDS) for _ in range(8)) + f" #{i}" for i in range(max(1000, n // 20))]
    base = datetime.now(UTC) - timedelta(days=60)
    started = time.perf_counter()
    batch = RowBatch()
    for i in range(n):
        task_id = f"t{i:08d}"
        at = base + timedelta(seconds=i * 5)
        tool = TOOLS[rng.randrange(len(TOOLS))]["function"]["name"]
        question = rng.choice(questions) + ("" if rng.random() < 0.7 else f" please {rng.randrange(100)}")
        failed = rng.random() < 0.15
        retried = rng.random() < 0.2
        confidence = round(rng.uniform(0.1, 1.0), 3)
        duration = rng.lognormvariate(6, 0.6)
        end = at + timedelta(milliseconds=duration)
        call = {"name": tool, "arguments": {"q": question[:20], "n": rng.randrange(10)}}
        batch.tasks_finished.append(
            {
                "id": task_id,
                "workload": "bench",
                "session_id": f"s{rng.randrange(n // 8 + 1)}",
                "agent_version": None,
                "input": question,
                "output": [call],
                "success": not failed,
                "confidence": confidence,
                "error": None,
                "started_at": at,
                "ended_at": end,
                "duration_ms": duration,
                "metadata": {},
                "redactions": 0,
                "ingested_at": at,
            }
        )
        steps = [
            (
                "llm_call",
                "m",
                None,
                {
                    "model": "m",
                    "messages": [{"role": "user", "content": question}],
                    "tools": TOOLS[:3] + [t for t in TOOLS if t["function"]["name"] == tool],
                    "response": {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": tool, "arguments": json.dumps(call["arguments"])},
                            }
                        ],
                    },
                },
            ),
            (
                "tool_call",
                tool,
                "Timeout" if retried else None,
                {"name": tool, "arguments": call["arguments"], "attempt": 1, "fallback": False},
            ),
            (
                "tool_call",
                tool,
                None,
                {
                    "name": tool,
                    "arguments": call["arguments"],
                    "attempt": 2 if retried else 1,
                    "fallback": False,
                },
            ),
            (
                "tool_call",
                "escalate",
                None,
                {"name": "escalate", "arguments": {}, "attempt": 1, "fallback": failed},
            ),
            (
                "retrieval",
                None,
                None,
                {"query": question, "documents": [{"content": "policy text", "score": 0.7}]},
            ),
            ("reasoning", None, None, {"text": "thinking about " + tool}),
        ]
        for seq, (kind, name, error, data) in enumerate(steps, start=1):
            batch.steps.append(
                {
                    "id": f"{task_id}-{seq}",
                    "task_id": task_id,
                    "seq": seq,
                    "kind": kind,
                    "name": name,
                    "started_at": at,
                    "ended_at": end,
                    "latency_ms": 1.0,
                    "error": error,
                    "data": data,
                    "redactions": 0,
                    "ingested_at": at,
                }
            )
        r = rng.random()
        if r < 0.35:
            batch.feedback.append(
                {
                    "id": f"f{i}",
                    "task_id": task_id,
                    "thumbs": -1 if failed or r < 0.05 else 1,
                    "rating": None,
                    "comment": None,
                    "edited": False,
                    "edited_output": None,
                    "retried": False,
                    "abandoned": False,
                    "source": "user",
                    "at": end + timedelta(minutes=5),
                    "redactions": 0,
                    "ingested_at": at,
                }
            )
        if failed and rng.random() < 0.2:
            fixed = {"name": tool, "arguments": {"q": question[:20], "n": 0}}
            batch.corrections.append(
                {
                    "id": f"c{i}",
                    "task_id": task_id,
                    "output": None,
                    "tool_calls": [fixed],
                    "author": "user",
                    "at": end + timedelta(hours=1),
                    "redactions": 0,
                    "ingested_at": at,
                }
            )
        if len(batch.steps) >= 60_000:
            store.write_batch(batch)
            batch = RowBatch()
            print(f"  generated {i + 1:,} tasks", file=sys.stderr)
    store.write_batch(batch)
    return time.perf_counter() - started


def pandas_pass(database: Path) -> dict:
    """The same rules, written the straightforward way with pandas."""
    import sqlite3

    import numpy as np
    import pandas as pd

    started = time.perf_counter()
    conn = sqlite3.connect(database)
    tasks = pd.read_sql(
        "SELECT id, session_id, success, confidence, duration_ms, ended_at, input FROM tasks WHERE workload = 'bench'",
        conn,
    )
    tools = pd.read_sql(
        "SELECT task_id, SUM(error IS NOT NULL) AS errors, SUM(json_extract(data, '$.attempt') > 1) AS retries, "
        "MAX(json_extract(data, '$.fallback')) AS fallback FROM steps WHERE kind = 'tool_call' GROUP BY task_id",
        conn,
    )
    fb = pd.read_sql(
        "SELECT task_id, MIN(thumbs) AS min_thumbs, MAX(thumbs) AS max_thumbs, MAX(edited) AS edited FROM feedback GROUP BY task_id",
        conn,
    )
    corr = pd.read_sql("SELECT DISTINCT task_id, 1 AS corrected FROM corrections", conn)
    llm = pd.read_sql(
        "SELECT task_id, json_extract(data, '$.response') AS response FROM steps WHERE kind = 'llm_call'",
        conn,
    )
    df = tasks.merge(tools, left_on="id", right_on="task_id", how="left").merge(
        fb, left_on="id", right_on="task_id", how="left", suffixes=("", "_fb")
    )
    df = df.merge(corr, left_on="id", right_on="task_id", how="left", suffixes=("", "_c")).merge(
        llm, left_on="id", right_on="task_id", how="left", suffixes=("", "_l")
    )
    negative = df.min_thumbs.fillna(0) < 0
    positive = df.max_thumbs.fillna(0) > 0
    tool_error = df.errors.fillna(0) > 0
    clean = (df.success == 1) & ~tool_error & ~negative
    slow = df.duration_ms > df.duration_ms.quantile(0.99)
    conditions = [
        df.corrected.fillna(0) > 0,
        negative | (df.confidence < 0.3) | (df.edited.fillna(0) > 0),
        tool_error | (df.retries.fillna(0) > 0) | (df.fallback.fillna(0) > 0),
        clean & positive,
        clean & ~(df.confidence < 0.5),
        slow,
    ]
    df["action"] = np.select(
        conditions, ["train", "review", "review", "train", "train", "drop"], default="none"
    )
    train = df[df.action == "train"]
    train = train.assign(key=train.input.astype(str) + "|" + train.response.astype(str)).drop_duplicates(
        "key"
    )
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "tasks": len(df),
        "train_examples": len(train),
        "actions": df.action.value_counts().to_dict(),
    }


def _child(mode: str, database: Path) -> dict:
    """One measured pass in a fresh process, so that its peak RSS is its own."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--db", str(database)],
        capture_output=True,
        text=True,
        check=False,
    )
    sys.stderr.write(out.stderr)
    if out.returncode != 0:
        raise SystemExit(f"the {mode} pass failed ({out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


class _WorkerPeaks:
    """The peak RSS of this process's children (the workers of pass one), polled
    from /proc while they run. ``RUSAGE_CHILDREN`` would overstate it: a child
    started by fork and exec keeps the RSS its parent had when it forked."""

    def __init__(self) -> None:
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> _WorkerPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        me = str(os.getpid())
        while not self._stop.wait(0.2):
            for status in Path("/proc").glob("[0-9]*/status"):
                try:
                    fields = dict(
                        line.split(":", 1) for line in status.read_text().splitlines() if ":" in line
                    )
                except OSError:  # it exited meanwhile
                    continue
                if fields.get("PPid", "").strip() == me and "VmHWM" in fields:
                    self.peak_kb = max(self.peak_kb, int(fields["VmHWM"].split()[0]))


def _run_child(mode: str, database: Path) -> None:
    workers = _WorkerPeaks()
    if mode == "pandas":
        result = pandas_pass(database)
    else:
        settings = Settings(
            database_url=f"sqlite:///{database}", home=database.parent / "home", sqlite_synchronous="NORMAL"
        )
        store = Store.open(settings)
        started = time.perf_counter()
        with workers:
            curated = curate(
                store,
                "bench",
                parse_rules(DEFAULT_RULES),
                progress=lambda n: n % 100_000 == 0 and print(f"  curated {n:,}", file=sys.stderr),
            )
        result = {"seconds": time.perf_counter() - started, "summary": curated.summary}
    result["peak_rss_mb"] = rss_mb()
    # the largest worker process of the first pass (each holds one chunk at a time)
    result["worker_peak_rss_mb"] = workers.peak_kb / 1024
    print(json.dumps(result, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument(
        "--keep-db",
        type=Path,
        help="keep the generated tasks in this file, and reuse it when it exists (curation runs on a copy)",
    )
    parser.add_argument("--child", choices=("flywheel", "pandas"), help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _run_child(args.child, args.db)
        return
    workdir = Path(tempfile.mkdtemp(prefix="fw-curate-"))
    database = workdir / "flywheel.db"
    gen_seconds = None
    if args.keep_db and args.keep_db.exists():
        shutil.copy(args.keep_db, database)
        print(f"reusing {args.keep_db}", file=sys.stderr)
    else:
        store = Store.open(
            Settings(database_url=f"sqlite:///{database}", home=workdir / "home", sqlite_synchronous="NORMAL")
        )
        gen_seconds = generate(store, args.tasks)
        store.close()
        print(f"generated {args.tasks:,} tasks in {gen_seconds:.0f} s", file=sys.stderr)
        if args.keep_db:
            shutil.copy(database, args.keep_db)
    baseline = _child("pandas", database)
    ours = _child("flywheel", database)
    shutil.rmtree(workdir, ignore_errors=True)
    tasks = ours["summary"]["tasks_processed"]
    report = {
        "backend": "sqlite",
        "tasks": tasks,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
        "generate_seconds": gen_seconds,
        "flywheel": {**ours, "tasks_per_s": tasks / ours["seconds"]},
        "pandas": {**baseline, "tasks_per_s": tasks / baseline["seconds"]},
        "ratio_time_vs_pandas": ours["seconds"] / baseline["seconds"],
    }
    print(f"{'pass':<10}{'seconds':>10}{'tasks/s':>12}{'peak RSS MB':>14}{'worker peak MB':>16}")
    for name in ("flywheel", "pandas"):
        row = report[name]
        print(
            f"{name:<10}{row['seconds']:>10.1f}{row['tasks_per_s']:>12.0f}{row['peak_rss_mb']:>14.0f}"
            f"{row['worker_peak_rss_mb']:>16.0f}"
        )
    print(
        f"flywheel / pandas time: {report['ratio_time_vs_pandas']:.2f} (the pandas pass builds no examples, "
        "dedups exactly only, writes nothing)"
    )
    s = ours["summary"]
    print(
        f"examples {s['examples']:,} ({s['splits']}), review items {s['review_items']:,}, density {s['signal_density']['overall']}/1000, "
        f"duplicates exact {s['actions'].get('exact_duplicates', 0):,} near {s['actions'].get('near_duplicates', 0):,}"
    )
    out = ROOT / "bench" / "results" / "curate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"JSON in {out}")


if __name__ == "__main__":
    main()
