"""PNG plots (matplotlib, Agg backend, imported lazily) returned as bytes; no state is kept."""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ab_analysis.report import DailyLift, MetricResult

__all__ = ["VERDICT_COLORS", "daily_lift_png", "forest_png"]

#: Harmful is red, a win green, everything else grey (the HTML legend says the same).
VERDICT_COLORS = {"win": "tab:green", "loss": "tab:red", "violated": "tab:red"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def forest_png(rows: list[MetricResult]) -> bytes:
    """Forest plot of relative lifts with the intervals the report shows (one line per ok result),
    coloured by verdict (grey when untrusted), as PNG bytes."""
    from ab_analysis.markdown import shown_ci

    plt = _pyplot()
    ok = [r for r in rows if r.result.status == "ok" and math.isfinite(r.result.rel_lift)]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * max(len(ok), 1) + 1.3))
    try:
        for i, r in enumerate(ok):
            x = r.result
            _, _, lo, hi, _ = shown_ci(r)
            lo = lo if math.isfinite(lo) else x.rel_lift
            hi = hi if math.isfinite(hi) else x.rel_lift
            color = VERDICT_COLORS.get(r.verdict, "tab:gray") if r.trusted else "lightgray"
            ax.plot([100 * lo, 100 * hi], [i, i], color=color, lw=2)
            ax.plot([100 * x.rel_lift], [i], "o", color=color)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(ok)))
        ax.set_yticklabels(
            [
                r.metric
                + (f" · {r.arm}" if r.arm else "")
                + ("" if r.segment is None else f" [{r.segment}={r.segment_value}]")
                for r in ok
            ]
        )
        ax.invert_yaxis()
        ax.set_xlabel("relative lift, % (CI as in the table); green win, red harmful, grey inconclusive")
        return _png(fig)
    finally:
        plt.close(fig)


def daily_lift_png(daily: DailyLift) -> bytes:
    """Cumulative relative lift per day for one metric and arm, with its (unadjusted) CI band, as PNG bytes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3))
    try:
        days = list(daily.days)
        ax.plot(days, [100 * v for v in daily.rel_lift], marker="o", label="cumulative lift")
        if daily.rel_ci_low and daily.rel_ci_high:
            lo = [100 * v if math.isfinite(v) else math.nan for v in daily.rel_ci_low]
            hi = [100 * v if math.isfinite(v) else math.nan for v in daily.rel_ci_high]
            ax.fill_between(range(len(days)), lo, hi, alpha=0.25, label="unadjusted CI")
            ax.legend(loc="best", fontsize=8)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_ylabel("cumulative rel. lift, %")
        title = daily.metric + (f" · {daily.arm}" if daily.arm else "")
        if daily.raw:
            title += " — RAW data (no capping/CUPED)"
        ax.set_title(title)
        fig.autofmt_xdate()
        return _png(fig)
    finally:
        plt.close(fig)
