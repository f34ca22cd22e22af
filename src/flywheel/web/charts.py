"""The dashboard's numbers and its Vega-Lite charts, from the store's cycle
records: the page (``/ui/dashboard``) and ``flywheel report`` draw the same."""

from __future__ import annotations

from typing import Any

from flywheel.cycle import list_cycles, review_metrics
from flywheel.cycle.metrics import gate_verdicts, metric_alignment
from flywheel.store import Store

__all__ = ["dashboard_data", "specs"]

_VERDICT_COLORS = {
    "domain": ["promoted", "rolled back", "chosen", "passed, not chosen", "refused"],
    "range": ["#2e7d32", "#c62828", "#1565c0", "#78909c", "#ef6c00"],
}
#: The plain estimate, drawn beside the one the gate judged when that was another: lighter.
_PLAIN_NOT_JUDGED = "plain (not judged)"
_IS_PLAIN = f"datum.estimate === '{_PLAIN_NOT_JUDGED}'"

_OUTCOME_COLORS = {
    "domain": ["promoted", "rolled_back", "gate_failed", "no_candidate", "waiting", "failed"],
    "range": ["#2e7d32", "#c62828", "#ef6c00", "#9e9e9e", "#f9a825", "#6a1b9a"],
}


def dashboard_data(store: Store, workload: str) -> dict[str, Any]:
    """One row per cycle (and per stage) with every velocity metric."""
    cycles = []
    stages = []
    candidates = []
    rows = list_cycles(store, workload)
    verdicts = gate_verdicts(store, rows)
    for row in rows:
        m = row["result"].get("metrics") or {}
        imp = m.get("improvement") or {}
        live = m.get("live") or {}
        outcome = row["result"].get("outcome") or row["status"]
        judged = _judged(verdicts.get(row["id"], []), imp.get("version"))
        for v in verdicts.get(row["id"], []):
            candidates.append({"cycle": row["number"], "outcome": outcome, **v})
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
                # the estimate the gate judged (plain, or reweighted) and the plain one
                "estimate": judged.get("estimate"),
                "gain": judged.get("gain", imp.get("difference")),
                "gain_low": (judged.get("ci95") or imp.get("ci95") or [None, None])[0],
                "gain_high": (judged.get("ci95") or imp.get("ci95") or [None, None])[1],
                "plain_gain": imp.get("difference"),
                "plain_low": (imp.get("ci95") or [None, None])[0],
                "plain_high": (imp.get("ci95") or [None, None])[1],
                "refused_by": judged.get("refused_by"),
                "power": judged.get("power_text"),
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
        "candidates": candidates,
        "alignment": metric_alignment(store, workload),
        "review": review_metrics(store, workload),
    }


def _judged(verdicts: list[dict[str, Any]], version: str | None) -> dict[str, Any]:
    """The verdict on the cycle's candidate the page sums it up by (the chosen one,
    else the one with the best judged gain)."""
    return next((v for v in verdicts if v["version"] == version), None) or max(
        verdicts, key=lambda v: v["gain"] if v["gain"] is not None else -2.0, default={}
    )


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
                        "estimate": r.get("estimate"),
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
                    {"field": "estimate", "type": "nominal", "title": "gain judged on"},
                    {"field": "gain_low", "type": "quantitative", "format": "+.1%", "title": "judged CI low"},
                    {
                        "field": "gain_high",
                        "type": "quantitative",
                        "format": "+.1%",
                        "title": "judged CI high",
                    },
                    {"field": "outcome", "type": "nominal"},
                ],
            },
        },
        "gain": _gain_chart(data.get("candidates", [])),
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


def gain_rows(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The gain chart's points: per cycle and candidate (``band``), the estimate
    the gate judged, and the plain one beside it when the gate judged the
    reweighted one; each labelled with its name."""
    rows = []
    for c in candidates:
        if c.get("gain") is None:
            continue
        candidate = c.get("strategy") or c["version"]
        common = {
            "cycle": c["cycle"],
            "band": f"{c['cycle']} · {candidate}",
            "candidate": candidate,
            "version": c["version"],
            "status": c["status"],
            "refused_by": c.get("refused_by") or "",
            "power": c.get("power_text") or "",
        }
        low, high = c.get("ci95") or [None, None]
        rows.append(
            {
                **common,
                "estimate": f"judged: {c['estimate']}",
                "slot": "1",
                "gain": c["gain"],
                "low": low,
                "high": high,
                "label": [c["estimate"], "(judged)"],
            }
        )
        if c["estimate"] != "plain" and c.get("plain_gain") is not None:
            plain_low, plain_high = c.get("plain_ci95") or [None, None]
            rows.append(
                {
                    **common,
                    "estimate": _PLAIN_NOT_JUDGED,
                    "slot": "2",
                    "gain": c["plain_gain"],
                    "low": plain_low,
                    "high": plain_high,
                    "label": ["plain"],
                }
            )
    return rows


def _gain_chart(candidates: list[dict[str, Any]]) -> dict[str, Any]:
    rows = gain_rows(candidates)
    bands = list(dict.fromkeys(r["band"] for r in rows))  # cycle by cycle, candidates in the gate's order
    color = {"field": "status", "type": "nominal", "scale": _VERDICT_COLORS, "title": "gate"}
    opacity = {"condition": {"test": _IS_PLAIN, "value": 0.35}, "value": 1}
    place = {  # one band per cycle and candidate; the plain estimate just right of the judged one
        "x": {
            "field": "band",
            "type": "nominal",
            "sort": bands,
            "title": "cycle · candidate",
            "axis": {"labelAngle": 0, "labelLimit": 160},
        },
        "xOffset": {"field": "slot", "type": "nominal"},
    }
    tooltip = [
        {"field": "cycle", "type": "ordinal"},
        {"field": "candidate", "type": "nominal"},
        {"field": "estimate", "type": "nominal"},
        {"field": "gain", "type": "quantitative", "format": "+.1%"},
        {"field": "low", "type": "quantitative", "format": "+.1%", "title": "95% CI low"},
        {"field": "high", "type": "quantitative", "format": "+.1%", "title": "95% CI high"},
        {"field": "status", "type": "nominal", "title": "gate"},
        {"field": "refused_by", "type": "nominal", "title": "refused by"},
        {"field": "power", "type": "nominal"},
    ]

    def label(test: str, weight: str, lines: int) -> dict[str, Any]:  # the estimate's name over its CI
        return {
            "transform": [{"filter": test}],
            "mark": {
                "type": "text",
                "baseline": "bottom",
                "dy": -4 - 12 * (lines - 1),  # lines run downwards from the first one
                "fontSize": 10,
                "fontWeight": weight,
            },
            "encoding": {
                **place,
                "y": {"field": "high", "type": "quantitative"},
                "text": {"field": "label"},
                "opacity": opacity,
            },
        }

    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": {
            "text": "gain the gate judged, per candidate, with its 95% CI",
            "subtitle": "solid: the estimate the gate judged (plain, or reweighted to the baseline's "
            "traffic); light: the plain one beside it",
        },
        "width": "container",
        "height": 200,
        "data": {"values": rows},
        "layer": [
            {
                "mark": {"type": "rule", "strokeWidth": 2},
                "encoding": {
                    **place,
                    "y": {
                        "field": "low",
                        "type": "quantitative",
                        "axis": {"format": "+.0%"},
                        "title": "gain",
                    },
                    "y2": {"field": "high"},
                    "color": color,
                    "opacity": opacity,
                },
            },
            {
                "mark": {"type": "point", "filled": True, "size": 90},
                "encoding": {
                    **place,
                    "y": {"field": "gain", "type": "quantitative"},
                    "color": color,
                    "opacity": opacity,
                    "tooltip": tooltip,
                },
            },
            label(f"!({_IS_PLAIN})", "bold", 2),
            label(_IS_PLAIN, "normal", 1),
            {
                "mark": {"type": "rule", "color": "#999", "strokeDash": [4, 4]},
                "encoding": {"y": {"datum": 0}},
            },
        ],
    }
