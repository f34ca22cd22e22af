"""Prometheus metrics of the server, safe with several worker processes.

Counters of what a process did (events ingested, rejected; model calls left
unpriced; review actions)
and its writer's queue live in ``prometheus_client``; when the server runs
several workers, ``flywheel serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a
fresh folder so every worker writes its own file and a scrape of any worker
sums them all. What the store knows (review backlog, per-version live
success, latency and cost, cycle durations, open degradation alerts) is
read from the store at scrape time, so it is the same from every worker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from flywheel.ingest import IngestResult
from flywheel.records import utcnow
from flywheel.store import Store
from flywheel.store import tables as t

__all__ = ["ServerMetrics", "StoreCollector"]

LIVE_WINDOW = timedelta(hours=1)
#: Distinct model labels of the unpriced-calls counter per process; later models count as "other".
UNPRICED_MODEL_LABELS = 50


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class ServerMetrics:
    """The per-process series, and the exposition of everything."""

    def __init__(self, store_collector: Collector | None = None) -> None:
        # In multi-process mode values go to files, whatever the registry; the
        # scrape collects them from the folder instead.
        self.registry = CollectorRegistry()
        self.store_collector = store_collector
        self.events = Counter(
            "flywheel_ingested_events",
            "Events received, by route and result",
            ["route", "result"],
            registry=self.registry,
        )
        self.reviews = Counter(
            "flywheel_review_actions",
            "Review actions taken in the web pages",
            ["action"],
            registry=self.registry,
        )
        self.unpriced = Counter(
            "flywheel_unpriced_llm_calls",
            "Model calls ingested with tokens but no cost whose model has no price, by model "
            f"(the first {UNPRICED_MODEL_LABELS} models a process sees; the rest as 'other')",
            ["model"],
            registry=self.registry,
        )
        self._unpriced_models: set[str] = set()
        self.pending = Gauge(
            "flywheel_writer_pending_rows",
            "Rows waiting for the group commit",
            registry=self.registry,
            multiprocess_mode="livesum",
        )

    def record_ingest(self, route: str, result: IngestResult) -> None:
        self.events.labels(route, "stored").inc(result.stored)
        self.events.labels(route, "duplicate").inc(result.duplicates)
        self.events.labels(route, "rejected").inc(len(result.rejected))
        for model, n in result.unpriced.items():
            self.unpriced.labels(self._model_label(model)).inc(n)

    def _model_label(self, model: str) -> str:
        """The model as a label, bounded: names come from traffic, so their number is not ours."""
        if model not in self._unpriced_models:
            if len(self._unpriced_models) >= UNPRICED_MODEL_LABELS:
                return "other"
            self._unpriced_models.add(model)
        return model

    def exposition(self) -> bytes:
        if _multiprocess():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = self.registry
        out = generate_latest(registry)
        if self.store_collector is not None:
            store_registry = CollectorRegistry()
            store_registry.register(self.store_collector)
            out += generate_latest(store_registry)
        return out


class StoreCollector(Collector):
    """Gauges read from the store at scrape time."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Any]:
        backlog = GaugeMetricFamily("flywheel_review_backlog", "Pending review items", labels=["workload"])
        success = GaugeMetricFamily(
            "flywheel_live_success_ratio",
            "Share of tasks that succeeded, last hour",
            labels=["workload", "version"],
        )
        tasks = GaugeMetricFamily(
            "flywheel_live_tasks", "Tasks ingested in the last hour", labels=["workload", "version"]
        )
        latency = GaugeMetricFamily(
            "flywheel_live_task_seconds", "Mean task duration, last hour", labels=["workload", "version"]
        )
        cost = GaugeMetricFamily(
            "flywheel_live_cost_per_task_usd",
            "Mean model cost per task, last hour",
            labels=["workload", "version"],
        )
        cycle = GaugeMetricFamily(
            "flywheel_cycle_seconds",
            "Duration of the last finished cycle, by stage",
            labels=["workload", "stage"],
        )
        alerts = GaugeMetricFamily(
            "flywheel_open_degradation_alerts",
            "Degradation alerts no cycle has answered",
            labels=["workload"],
        )
        since = utcnow() - LIVE_WINDOW
        tc, sc = t.tasks.c, t.steps.c
        with self.store.engine.connect() as conn:
            rc = t.review_items.c
            for workload, n in conn.execute(
                select(rc.workload, func.count()).where(rc.state == "pending").group_by(rc.workload)
            ):
                backlog.add_metric([workload], n)
            recent = select(tc.id, tc.workload, tc.agent_version, tc.success, tc.duration_ms).where(
                tc.ingested_at >= since
            )
            sub = recent.subquery()
            costs = (
                select(sc.task_id, func.sum(sc.data["cost"].as_float()).label("cost"))
                .where(sc.kind == "llm_call", sc.task_id.in_(select(sub.c.id)))
                .group_by(sc.task_id)
                .subquery()
            )
            rows = conn.execute(
                select(
                    sub.c.workload,
                    sub.c.agent_version,
                    func.count(),
                    func.sum(case((sub.c.success.is_(True), 1), else_=0)),
                    func.avg(sub.c.duration_ms),
                    func.avg(costs.c.cost),
                )
                .select_from(sub.outerjoin(costs, costs.c.task_id == sub.c.id))
                .group_by(sub.c.workload, sub.c.agent_version)
            )
            for workload, version, n, ok, ms, usd in rows:
                labels = [workload, version or "none"]
                tasks.add_metric(labels, n)
                success.add_metric(labels, (ok or 0) / n if n else 0.0)
                if ms is not None:
                    latency.add_metric(labels, float(ms) / 1000)
                if usd is not None:
                    cost.add_metric(labels, float(usd))
            cyc = t.cycles.c
            last = (
                select(cyc.workload, func.max(cyc.number).label("number"))
                .where(cyc.status == "succeeded")
                .group_by(cyc.workload)
                .subquery()
            )
            for workload, result in conn.execute(
                select(cyc.workload, cyc.result).join(
                    last, (last.c.workload == cyc.workload) & (last.c.number == cyc.number)
                )
            ):
                metrics = (result or {}).get("metrics") or {}
                if metrics.get("cycle_seconds") is not None:
                    cycle.add_metric([workload, "total"], metrics["cycle_seconds"])
                for stage, seconds in (metrics.get("stage_seconds") or {}).items():
                    cycle.add_metric([workload, stage], seconds)
            ac = t.alerts.c
            for workload, n in conn.execute(
                select(ac.workload, func.count()).where(ac.cycle_id.is_(None)).group_by(ac.workload)
            ):
                alerts.add_metric([workload], n)
        yield from (backlog, tasks, success, latency, cost, cycle, alerts)
