"""``flywheel report``: the dashboard as one static HTML file (charts drawn by
the bundled Vega-Lite, no network needed to open it) and a PNG per chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flywheel.store import Store
from flywheel.web.charts import dashboard_data, specs

__all__ = ["write_report"]


def write_report(
    store: Store, workload: str, folder: Path, *, png: bool = True, data: dict[str, Any] | None = None
) -> Path:
    """Write ``folder/index.html`` (and ``folder/CHART.png`` each, and the numbers
    as ``data.json``); returns the HTML's path. ``data``: ``dashboard_data``'s,
    when the caller has it already."""
    import vl_convert

    from flywheel.web.pages import STATIC, _env

    folder.mkdir(parents=True, exist_ok=True)
    data = data if data is not None else dashboard_data(store, workload)
    charts = specs(data)
    if png:
        for name, spec in charts.items():
            fixed = {**spec, "width": 640}  # "container" has no size outside a page
            (folder / f"{name}.png").write_bytes(vl_convert.vegalite_to_png(fixed, scale=2))
    body = (
        _env()
        .get_template("dashboard_body.html")
        .render(workload=workload, workloads=[workload], data=data, charts=charts)
    )
    bundle = vl_convert.javascript_bundle().replace("</script", "<\\/script")  # type: ignore[call-arg]
    html = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>data-flywheel report: {_escape(workload)}</title>"
        f"<style>{(STATIC / 'app.css').read_text()}</style></head><body><main>"
        f"{body}</main>"
        f"<script>{bundle}</script>"
        f"<script>{(STATIC / 'dashboard.js').read_text()}</script></body></html>"
    )
    path = folder / "index.html"
    path.write_text(html)
    (folder / "data.json").write_text(json.dumps(data, indent=2, default=str))
    return path


def _escape(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))
