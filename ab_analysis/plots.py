"""PNG plots (matplotlib, Agg backend, imported lazily) returned as bytes; no state is kept."""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ab_analysis.report import DailyLift, MetricResult

__all__ = ["daily_lift_png", "forest_png"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def forest_png(rows: list[MetricResult]) -> bytes:
    """Forest plot of relative lifts with their CIs (one line per ok result), as PNG bytes."""
    plt = _pyplot()
    ok = [r for r in rows if r.result.status == "ok" and math.isfinite(r.result.rel_lift)]
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(ok), 1) + 1.2))
    try:
        for i, r in enumerate(ok):
            x = r.result
            lo = x.rel_ci_low if math.isfinite(x.rel_ci_low) else x.rel_lift
            hi = x.rel_ci_high if math.isfinite(x.rel_ci_high) else x.rel_lift
            color = (
                "tab:green"
                if r.significant and x.rel_lift > 0
                else ("tab:red" if r.significant else "tab:gray")
            )
            ax.plot([100 * lo, 100 * hi], [i, i], color=color, lw=2)
            ax.plot([100 * x.rel_lift], [i], "o", color=color)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(ok)))
        ax.set_yticklabels(
            [r.metric + ("" if r.segment is None else f" [{r.segment}={r.segment_value}]") for r in ok]
        )
        ax.invert_yaxis()
        ax.set_xlabel("relative lift, % (CI)")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        return buf.getvalue()
    finally:
        plt.close(fig)


def daily_lift_png(daily: DailyLift) -> bytes:
    """Cumulative relative lift per day for one metric, as PNG bytes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3))
    try:
        ax.plot(list(daily.days), [100 * v for v in daily.rel_lift], marker="o")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_ylabel("cumulative rel. lift, %")
        ax.set_title(daily.metric)
        fig.autofmt_xdate()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        return buf.getvalue()
    finally:
        plt.close(fig)
