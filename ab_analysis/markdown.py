"""Markdown rendering of a :class:`~ab_analysis.report.Report` (a thin view; no statistics here)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ab_analysis.report import MetricResult, conventions, fmt, pct

if TYPE_CHECKING:
    from ab_analysis.report import Report
    from ab_analysis.srm import SRMResult

__all__ = ["LEGEND", "VERDICT_MARK", "render_markdown", "shown_ci", "srm_banner", "srm_line"]

VERDICT_MARK = {"win": "🟩", "loss": "🟥", "violated": "🟥", "inconclusive": "⬜", "ok": "⬜", "n/a": "·"}
LEGEND = (
    "🟩 win (significant in the good direction) · 🟥 loss / guardrail violated (significant and harmful) "
    "· ⬜ inconclusive / guardrail ok · greyed: untrusted (SRM failed)"
)


def shown_ci(r: MetricResult) -> tuple[float, float, float, float, float]:
    """``(abs_low, abs_high, rel_low, rel_high, level)`` of the interval the report shows for a row."""
    a = r.extras.adjusted
    if a is not None:
        return a.abs_low, a.abs_high, a.rel_low, a.rel_high, a.level
    x = r.result
    return x.abs_ci_low, x.abs_ci_high, x.rel_ci_low, x.rel_ci_high, 1 - x.alpha


def srm_line(s: SRMResult) -> str:
    """``overall: counts control=.. treatment=.., p = .., status``."""
    names = s.arms or tuple(f"arm{i}" for i in range(len(s.counts)))
    counts = ", ".join(f"{a}={c}" for a, c in zip(names, s.counts, strict=True))
    return f"{s.label}: {counts}; χ² p = {fmt(s.p_value)} → **{s.status}**"


def srm_banner(report: Report) -> str | None:
    """The banner text for a failed or warned SRM gate (``None`` when all checks are ok)."""
    gate = report.srm_gate()
    if gate["status"] == "fail":
        return (
            f"SAMPLE RATIO MISMATCH in {', '.join(gate['failed'])} (p < {gate['threshold']:g}): the assignment "
            "is broken or the logging is biased; the lifts below are not trustworthy and the verdicts are withheld."
        )
    if gate["status"] == "warning":
        return (
            f"Sample ratio warning in {', '.join(gate['warned'])} ({gate['threshold']:g} ≤ p < "
            f"{gate['warn_threshold']:g}): check the assignment before trusting the lifts."
        )
    return None


def _row(r: MetricResult, arms: int) -> str:
    x, e = r.result, r.extras
    alo, ahi, rlo, rhi, level = shown_ci(r)
    verdict = f"{VERDICT_MARK[r.verdict]} {r.verdict}" + ("" if r.trusted else " (untrusted: SRM)")
    b = e.bayes
    bayes = "—" if b is None else f"{100 * b.chance_to_win:.1f}% / {100 * b.risk_treatment:.2g}%"
    s = e.sequential
    seq = "—" if s is None else f"{fmt(s.p_value)} [{fmt(s.ci_low)}, {fmt(s.ci_high)}]"
    note = "underpowered: MDE " + pct(e.mde_rel).lstrip("+") + " at 80 % power" if r.underpowered else ""
    if x.message:
        note = f"{note}; {x.message}" if note else x.message
    arm = f" | {r.arm}" if arms > 1 else ""
    lvl = "—" if not math.isfinite(level) else f"{100 * level:.3g} %"
    return (
        f"| {r.metric}{' (guardrail)' if r.guardrail else ''}{arm} | {r.scope} | {verdict} "
        f"| {x.n_control} / {x.n_treatment} | {fmt(x.control_mean)} | {fmt(x.treatment_mean)} "
        f"| {pct(x.rel_lift)} [{pct(rlo)}, {pct(rhi)}] | {fmt(x.abs_lift)} [{fmt(alo)}, {fmt(ahi)}] | {lvl} "
        f"| {fmt(x.p_value)} | {fmt(r.p_adjusted)}{' *' if r.significant else ''} | {bayes} | {seq} "
        f"| {pct(e.mde_rel).lstrip('+')} | {note} |"
    )


def render_markdown(report: Report) -> str:
    """The whole report as Markdown: banner, headline, SRM checks, results, data notes, conventions."""
    arms = report.arms
    title = f"# A/B report: {', '.join(arms[1:])} vs {report.control}"
    lines = [title, ""]
    banner = srm_banner(report)
    if banner:
        lines += [f"> **{'⛔' if report.srm_status == 'fail' else '⚠️'} {banner}**", ""]
    lines += [f"**Headline**: {report.headline()}", ""]
    lines += [
        f"## Sample ratio check (fail: p < {report.srm.threshold:g}; warning: p < {report.srm.warn_threshold:g})",
        "",
    ]
    lines += [f"- {srm_line(s)}" for s in (report.srm, *report.srm_segments)]
    lines += [
        "",
        f"## Results ({report.ci_text}; α = {report.alpha:g}, correction = {report.correction}, "
        f"relative CI = {report.relative_ci})",
        "",
        f"Legend: {LEGEND}",
        "",
    ]
    arm_h = " | arm" if len(arms) > 2 else ""
    lines.append(
        f"| metric{arm_h} | segment | verdict | n C / T | control | treatment | rel lift [CI] | abs lift [CI] "
        "| CI level | p | p adj | P(win) / risk | always-valid p [CI] | MDE (rel) | note |"
    )
    lines.append("|---" * (15 + (len(arms) > 2)) + "|")
    lines += [_row(r, len(arms) - 1 if len(arms) > 2 else 1) for r in report.results]
    lines += ["", "## What was done to the data", ""]
    lines += [f"- **{n.topic}**: {n.text}" for n in report.notes] or [
        "- nothing: no caps, CUPED or dropped rows"
    ]
    lines += ["", "## Conventions", ""]
    lines += [
        f"- **{k}**: {v}" for k, v in conventions(report.relative_ci, report.use_t, report.correction).items()
    ]
    return "\n".join(lines) + "\n"
