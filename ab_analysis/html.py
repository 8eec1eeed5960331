"""Self-contained HTML report: banner, headline, verdict table, data notes and inline base64 PNG plots."""

from __future__ import annotations

import base64
import html
import math
from typing import TYPE_CHECKING

from ab_analysis.markdown import shown_ci, srm_banner
from ab_analysis.plots import daily_lift_png, forest_png
from ab_analysis.report import conventions

if TYPE_CHECKING:
    from ab_analysis.report import MetricResult, Report

__all__ = ["render_html"]

_CSS = """body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}th{background:#f4f4f4}
tr.win{background:#dff5df}tr.loss,tr.violated{background:#fadadd}tr.untrusted{color:#999;background:#f3f3f3}
.banner{padding:1em;margin:0 0 1em;border-radius:4px;font-weight:bold}.fail{background:#c62828;color:#fff}
.warning{background:#ffe08a;color:#333}.headline{font-size:1.2em;margin:.5em 0 1em}
.legend span{display:inline-block;padding:2px 8px;margin-right:6px;border:1px solid #ccc}
.srm-fail{color:#c62828;font-weight:bold}.srm-warning{color:#8a6d00;font-weight:bold}"""


def _f(v: float | None, pct: bool = False) -> str:
    if v is None or not math.isfinite(v):
        return "—"
    return f"{100 * v:+.2f}%" if pct else f"{v:.4g}"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'


def _row(r: MetricResult, with_arm: bool) -> str:
    e = html.escape
    x, ex = r.result, r.extras
    alo, ahi, rlo, rhi, level = shown_ci(r)
    cls = r.verdict if r.trusted else "untrusted"
    verdict = e(r.verdict) + ("" if r.trusted else " (untrusted: SRM)")
    b, s = ex.bayes, ex.sequential
    bayes = "—" if b is None else f"{100 * b.chance_to_win:.1f}% / {100 * b.risk_treatment:.2g}%"
    seq = "—" if s is None else f"{_f(s.p_value)} [{_f(s.ci_low)}, {_f(s.ci_high)}]"
    note = f"underpowered: MDE {_f(ex.mde_rel, True).lstrip('+')} at 80 % power" if r.underpowered else ""
    if x.message:
        note = f"{note}; {x.message}" if note else x.message
    arm = f"<td>{e(r.arm or '')}</td>" if with_arm else ""
    lvl = "—" if not math.isfinite(level) else f"{100 * level:.3g} %"
    return (
        f'<tr class="{cls}"><td>{e(r.metric)}{" (guardrail)" if r.guardrail else ""}</td>{arm}<td>{e(r.scope)}</td>'
        f"<td><b>{verdict}</b></td><td>{x.n_control} / {x.n_treatment}</td><td>{_f(x.control_mean)}</td>"
        f"<td>{_f(x.treatment_mean)}</td><td>{_f(x.rel_lift, True)} [{_f(rlo, True)}, {_f(rhi, True)}]</td>"
        f"<td>{_f(x.abs_lift)} [{_f(alo)}, {_f(ahi)}]</td><td>{lvl}</td><td>{_f(x.p_value)}</td>"
        f"<td>{_f(r.p_adjusted)}</td><td>{bayes}</td><td>{seq}</td><td>{_f(ex.mde_rel, True).lstrip('+')}</td>"
        f"<td>{e(note)}</td></tr>"
    )


def render_html(report: Report) -> str:
    """The whole report as one HTML string (no external resources)."""
    e = html.escape
    arms = report.arms
    with_arm = len(arms) > 2
    title = f"A/B report: {', '.join(arms[1:])} vs {report.control}"
    banner = srm_banner(report)
    banner_html = f'<div class="banner {report.srm_status}">{e(banner)}</div>' if banner else ""
    srm_rows = "".join(
        f"<tr><td>{e(s.label)}</td><td>{', '.join(f'{e(a)}={c}' for a, c in zip(s.arms, s.counts, strict=False))}</td>"
        f'<td>{_f(s.p_value)}</td><td class="srm-{s.status}">{e(s.status)}</td></tr>'
        for s in (report.srm, *report.srm_segments)
    )
    rows = "".join(_row(r, with_arm) for r in report.results)
    plots = [_img(forest_png(list(report.results)), "forest plot of relative lifts")]
    plots += [
        _img(daily_lift_png(d), f"cumulative daily lift of {d.metric}" + (f" ({d.arm})" if d.arm else ""))
        for d in report.daily
    ]
    conv = "".join(
        f"<li><b>{e(k)}</b>: {e(v)}</li>"
        for k, v in conventions(report.relative_ci, report.use_t, report.correction).items()
    )
    notes = "".join(f"<li><b>{e(n.topic)}</b>: {e(n.text)}</li>" for n in report.notes) or (
        "<li>nothing: no caps, CUPED or dropped rows</li>"
    )
    arm_h = "<th>arm</th>" if with_arm else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{e(title)}</title>
<style>{_CSS}</style></head>
<body>{banner_html}<h1>{e(title)}</h1>
<p class="headline"><b>Headline</b>: {e(report.headline())}</p>
<h2>Sample ratio check</h2>
<p>fail when p &lt; {report.srm.threshold:g}; warning when p &lt; {report.srm.warn_threshold:g}</p>
<table><tr><th>scope</th><th>counts</th><th>χ² p</th><th>status</th></tr>{srm_rows}</table>
<h2>Results</h2>
<p>{e(report.ci_text)}; α = {report.alpha:g}; correction = {e(report.correction)}; relative CI = {e(report.relative_ci)}.
A shown CI excludes 0 exactly when the row is significant.</p>
<p class="legend">Legend: <span style="background:#dff5df">win</span><span style="background:#fadadd">loss (harmful) /
guardrail violated</span><span>inconclusive / guardrail ok</span><span style="background:#f3f3f3;color:#999">untrusted
(SRM failed)</span></p>
<table><tr><th>metric</th>{arm_h}<th>segment</th><th>verdict</th><th>n C / T</th><th>control</th><th>treatment</th>
<th>rel lift [CI]</th><th>abs lift [CI]</th><th>CI level</th><th>p</th><th>p adj</th><th>P(win) / risk</th>
<th>always-valid p [CI]</th><th>MDE (rel)</th><th>note</th></tr>
{rows}</table>
<h2>What was done to the data</h2><ul>{notes}</ul>
<h2>Plots</h2>{"".join(plots)}
<h2>Conventions</h2><ul>{conv}</ul></body></html>
"""
