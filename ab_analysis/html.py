"""Self-contained HTML report: the Markdown table's content plus inline base64 PNG plots."""

from __future__ import annotations

import base64
import html
import math
from typing import TYPE_CHECKING

from ab_analysis.plots import daily_lift_png, forest_png

if TYPE_CHECKING:
    from ab_analysis.report import Report

__all__ = ["render_html"]


def _f(v: float | None, pct: bool = False) -> str:
    if v is None or not math.isfinite(v):
        return "—"
    return f"{100 * v:+.2f}%" if pct else f"{v:.4g}"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'


def render_html(report: Report) -> str:
    """The whole report as one HTML string (no external resources)."""
    e = html.escape
    s = report.srm
    rows = []
    for r in report.results:
        x = r.result
        seg = "all" if r.segment is None else f"{r.segment}={r.segment_value}"
        cls = ' class="sig"' if r.significant else ""
        rows.append(
            f"<tr{cls}><td>{e(r.metric)}</td><td>{e(seg)}</td><td>{e(x.status)}</td>"
            f"<td>{x.n_control} / {x.n_treatment}</td><td>{_f(x.control_mean)}</td><td>{_f(x.treatment_mean)}</td>"
            f"<td>{_f(x.abs_lift)} [{_f(x.abs_ci_low)}, {_f(x.abs_ci_high)}]</td>"
            f"<td>{_f(x.rel_lift, True)} [{_f(x.rel_ci_low, True)}, {_f(x.rel_ci_high, True)}]</td>"
            f"<td>{_f(x.p_value)}</td><td>{_f(r.p_adjusted)}</td><td>{e(x.message)}</td></tr>"
        )
    plots = [_img(forest_png(list(report.results)), "forest plot of relative lifts")]
    plots += [_img(daily_lift_png(d), f"cumulative daily lift of {d.metric}") for d in report.daily]
    conv = "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in report.to_dict()["conventions"].items())
    srm = (
        f"counts {list(s.counts)}, expected share {[round(v, 4) for v in s.expected_share]}, "
        f"p = {_f(s.p_value)}" + (" — <b>MISMATCH: do not trust the lifts</b>" if s.mismatch else " (ok)")
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>A/B report: {e(report.treatment)} vs {e(report.control)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}tr.sig{{background:#eef8ee}}</style></head>
<body><h1>A/B report: {e(report.treatment)} vs {e(report.control)}</h1>
<p><b>Sample ratio check</b>: {srm}</p>
<p>alpha = {report.alpha}, correction = {e(report.correction)}, relative CI = {e(report.relative_ci)}</p>
<table><tr><th>metric</th><th>segment</th><th>status</th><th>n C / T</th><th>control</th><th>treatment</th>
<th>abs lift [CI]</th><th>rel lift [CI]</th><th>p</th><th>p adj</th><th>note</th></tr>
{"".join(rows)}</table>
<h2>Plots</h2>{"".join(plots)}
<h2>Conventions</h2><ul>{conv}</ul></body></html>
"""
