"""The dashboard's numbers and its Vega-Lite charts, from the store's cycle
records: the page (``/ui/dashboard``) and ``flywheel report`` draw the same."""

from __future__ import annotations

from typing import Any

from flywheel.cycle import list_cycles, review_metrics
from flywheel.store import Store

__all__ = ["dashboard_data", "specs"]

_OUTCOME_COLORS = {
    "domain": ["promoted", "rolled_back", "gate_failed", "no_candidate", "waiting", "failed"],
    "range": ["#2e7d32", "#c62828", "#ef6c00", "#9e9e9e", "#f9a825", "#6a1b9a"],
}


def dashboard_data(store: Store, workload: str) -> dict[str, Any]:
    """One row per cycle (and per stage) with every velocity metric."""
    cycles = []
    stages = []
    for row in list_cycles(store, workload):
        m = row["result"].get("metrics") or {}
        imp = m.get("improvement") or {}
        live = m.get("live") or {}
        outcome = row["result"].get("outcome") or row["status"]
        cycles.append(
            {
                "cycle": row["number"],
                "status": row["status"],
                "outcome": outcome,
                "trigger": row["trigger"],
                "started_at": row["started_at"].isoformat(),
                "served_version": m.get("served_version"),
                "candidate_version": imp.get("version"),
                "baseline_accuracy": (imp.get("accuracy") or [None, None])[0],
                "candidate_accuracy": (imp.get("accuracy") or [None, None])[1],
                "gain": imp.get("difference"),
                "gain_low": (imp.get("ci95") or [None, None])[0],
                "gain_high": (imp.get("ci95") or [None, None])[1],
                "held_out_items": imp.get("items"),
                "error_rate": (imp.get("error_rate") or [None, None])[1],
                "signal_density": m.get("signal_density"),
                "examples": m.get("examples"),
                "new_tasks": m.get("new_tasks"),
                "cycle_seconds": m.get("cycle_seconds"),
                "bottleneck": m.get("bottleneck"),
                "cost_per_task": live.get("cost_per_task"),
                "satisfaction": live.get("satisfaction"),
                "seconds_per_task": live.get("seconds_per_task"),
                "review_backlog": (m.get("review") or {}).get("backlog"),
            }
        )
        for stage, seconds in (m.get("stage_seconds") or {}).items():
            stages.append(
                {
                    "cycle": row["number"],
                    "stage": stage,
                    "seconds": seconds,
                    "bottleneck": stage == m.get("bottleneck"),
                }
            )
    return {
        "workload": workload,
        "cycles": cycles,
        "stages": stages,
        "review": review_metrics(store, workload),
    }


def _line(title: str, field: str, fmt: str, rows: list[dict[str, Any]], y_title: str) -> dict[str, Any]:
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": title,
        "width": "container",
        "height": 180,
        "data": {"values": [r for r in rows if r.get(field) is not None]},
        "layer": [
            {"mark": {"type": "line", "color": "#455a64"}},
            {
                "mark": {"type": "point", "filled": True, "size": 90},
                "encoding": {
                    "color": {
                        "field": "outcome",
                        "type": "nominal",
                        "scale": _OUTCOME_COLORS,
                        "title": "cycle",
                    },
                    "tooltip": [
                        {"field": "cycle", "type": "ordinal"},
                        {"field": field, "type": "quantitative", "format": fmt},
                        {"field": "outcome", "type": "nominal"},
                        {"field": "served_version", "type": "nominal"},
                    ],
                },
            },
        ],
        "encoding": {
            "x": {"field": "cycle", "type": "ordinal", "title": "cycle", "axis": {"labelAngle": 0}},
            "y": {"field": field, "type": "quantitative", "title": y_title, "axis": {"format": fmt}},
        },
    }


def specs(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Vega-Lite specs by name, data inlined."""
    cycles = data["cycles"]
    accuracy_rows = []
    for r in cycles:
        for who in ("baseline", "candidate"):
            if r[f"{who}_accuracy"] is not None:
                accuracy_rows.append(
                    {
                        "cycle": r["cycle"],
                        "version": who,
                        "accuracy": r[f"{who}_accuracy"],
                        "outcome": r["outcome"],
                        "gain_low": r["gain_low"],
                        "gain_high": r["gain_high"],
                    }
                )
    out = {
        "accuracy": {
            "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
            "title": "held-out accuracy: current version vs candidate, per cycle",
            "width": "container",
            "height": 200,
            "data": {"values": accuracy_rows},
            "mark": {"type": "line", "point": {"filled": True, "size": 80}},
            "encoding": {
                "x": {"field": "cycle", "type": "ordinal", "axis": {"labelAngle": 0}},
                "y": {"field": "accuracy", "type": "quantitative", "axis": {"format": ".0%"}},
                "color": {"field": "version", "type": "nominal", "title": "version"},
                "tooltip": [
                    {"field": "cycle", "type": "ordinal"},
                    {"field": "version", "type": "nominal"},
                    {"field": "accuracy", "type": "quantitative", "format": ".1%"},
                    {"field": "gain_low", "type": "quantitative", "format": "+.1%", "title": "gain CI low"},
                    {"field": "gain_high", "type": "quantitative", "format": "+.1%", "title": "gain CI high"},
                    {"field": "outcome", "type": "nominal"},
                ],
            },
        },
        "gain": {
            "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
            "title": "gain of the candidate with its 95% CI (promotions green, rollbacks red)",
            "width": "container",
            "height": 180,
            "data": {"values": [r for r in cycles if r["gain"] is not None]},
            "layer": [
                {
                    "mark": {"type": "rule", "strokeWidth": 2},
                    "encoding": {
                        "y": {
                            "field": "gain_low",
                            "type": "quantitative",
                            "axis": {"format": "+.0%"},
                            "title": "gain",
                        },
                        "y2": {"field": "gain_high"},
                        "color": {"field": "outcome", "type": "nominal", "scale": _OUTCOME_COLORS},
                    },
                },
                {
                    "mark": {"type": "point", "filled": True, "size": 90},
                    "encoding": {
                        "y": {"field": "gain", "type": "quantitative"},
                        "color": {
                            "field": "outcome",
                            "type": "nominal",
                            "scale": _OUTCOME_COLORS,
                            "title": "cycle",
                        },
                        "tooltip": [
                            {"field": "cycle", "type": "ordinal"},
                            {"field": "gain", "type": "quantitative", "format": "+.1%"},
                            {"field": "outcome", "type": "nominal"},
                            {"field": "candidate_version", "type": "nominal"},
                        ],
                    },
                },
                {
                    "mark": {"type": "rule", "color": "#999", "strokeDash": [4, 4]},
                    "encoding": {"y": {"datum": 0}},
                },
            ],
            "encoding": {"x": {"field": "cycle", "type": "ordinal", "axis": {"labelAngle": 0}}},
        },
        "stages": {
            "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
            "title": "cycle time by stage (outlined: the bottleneck)",
            "width": "container",
            "height": 200,
            "data": {"values": data["stages"]},
            "mark": {"type": "bar"},
            "encoding": {
                "x": {"field": "cycle", "type": "ordinal", "axis": {"labelAngle": 0}},
                "y": {"field": "seconds", "type": "quantitative", "stack": "zero", "title": "seconds"},
                "color": {"field": "stage", "type": "nominal"},
                "stroke": {
                    "condition": {"test": "datum.bottleneck", "value": "#000"},
                    "value": None,
                },
                "strokeWidth": {"condition": {"test": "datum.bottleneck", "value": 2}, "value": 0},
                "tooltip": [
                    {"field": "cycle", "type": "ordinal"},
                    {"field": "stage", "type": "nominal"},
                    {"field": "seconds", "type": "quantitative", "format": ".1f"},
                    {"field": "bottleneck", "type": "nominal"},
                ],
            },
        },
        "signal_density": _line(
            "signal density (usable examples per 1,000 tasks)", "signal_density", ".0f", cycles, "per 1,000"
        ),
        "cost": _line("live cost per task", "cost_per_task", "$.5f", cycles, "USD"),
        "satisfaction": _line(
            "user satisfaction (positive share of reactions)", "satisfaction", ".0%", cycles, "positive"
        ),
        "backlog": _line("review backlog at the end of each cycle", "review_backlog", "d", cycles, "items"),
    }
    return out
