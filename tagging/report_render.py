"""The student report's outputs: the Markdown text, the reliability diagram (PNG) and the headline
figures for summary.json ``student_report``.

A thin layer over the report dict that :func:`tagging.distill_report.build_report` computes; nothing
here scores anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tagging.report_calibration import Calibration

__all__ = ["HEADLINE_COLUMNS", "headline", "reliability_png", "render_markdown"]


def reliability_png(cal: Calibration, *, title: str = "student confidence vs teacher agreement") -> bytes:
    """Reliability diagram (bin accuracy vs mean confidence, the diagonal, bin counts) as PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (ax, axc) = plt.subplots(
        2, 1, figsize=(5.5, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    try:
        full = [b for b in cal.bins if b.count]
        width = (cal.bins[0].upper - cal.bins[0].lower) if cal.bins else 1.0
        ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=1, label="perfect calibration")
        ax.bar(
            [b.lower for b in full], [b.accuracy or 0.0 for b in full], width=width, align="edge",
            alpha=0.35, color="tab:blue", edgecolor="tab:blue", label="bin accuracy",
        )  # fmt: skip
        ax.plot(
            [b.mean_confidence for b in full], [b.accuracy for b in full], "o-", color="tab:blue",
            label="accuracy at mean confidence",
        )  # fmt: skip
        ece = "n/a" if cal.ece is None else f"{cal.ece:.3f}"
        ax.set_title(f"{title}\nECE {ece} over {cal.n_tags} tags")
        ax.set_ylabel("accuracy (tag in the teacher's answer)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(loc="best", fontsize=8)
        axc.bar(
            [b.lower for b in cal.bins],
            [b.count for b in cal.bins],
            width=width,
            align="edge",
            color="tab:gray",
        )
        axc.set_ylim(0, max([b.count for b in cal.bins] + [1]) * 1.25)
        for b in full:
            axc.text(b.lower + width / 2, b.count, str(b.count), ha="center", va="bottom", fontsize=7)
        axc.set_xlabel("student confidence")
        axc.set_ylabel("tags")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        return buf.getvalue()
    finally:
        plt.close(fig)


HEADLINE_COLUMNS = (
    ("P", "precision"), ("R", "recall"), ("F1", "f1"), ("fuzzy F1", "fuzzy_f1"),
    ("redundancy", "redundancy"), ("boilerplate", "boilerplate_rate"), ("tags/note", "tags_per_note"),
)  # fmt: skip


def headline(report: Mapping[str, Any]) -> dict[str, Any]:
    """The figures for summary.json ``student_report``."""
    rows = report["taggers"]

    def f1(name: str) -> float | None:
        r = rows.get(name, {})
        return r["overall"]["f1"] if "overall" in r else None

    best = report.get("best_peer")
    return {
        "n_notes": rows["student"]["n_notes"],
        "student_f1": f1("student"),
        "student_fuzzy_f1": rows["student"]["overall"]["fuzzy_f1"],
        "teacher_self_f1": f1("teacher (self-agreement)"),
        "teacher_self_f1_all": f1("teacher (self-agreement, all doubly-answered)"),
        "student_f1_all_doubly": f1("student (all doubly-answered)"),
        "best_peer": best,
        "best_peer_f1": f1(best) if best else None,
        "student_vs_best_peer": (report.get("student_vs_best_peer") or {}).get("f1_ratio"),
        "ece": report["calibration"]["ece"],
    }


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: the main table, per-category table (student vs best peer), calibration."""
    sp = report["split"]
    lines = [
        f"# Student report: {report['run']}",
        "",
        f"Gold: the teacher's tags (`{report['tables']['teacher']}`). Scored test notes: "
        f"{sp['scored_test_notes']} of {sp['test_notes']} held-out test notes "
        f"({sp['unanswered_test_notes']} have no teacher answer and are not scored; cap {sp['max_notes']}); "
        f"{sp['train_notes']} teacher-answered train notes.",
        "",
        "| tagger | notes covered | n_notes | " + " | ".join(h for h, _ in HEADLINE_COLUMNS) + " |",
        "|---|---|---:|" + "---:|" * len(HEADLINE_COLUMNS),
    ]
    for name, r in report["taggers"].items():
        if "overall" in r:
            vals = " | ".join(_fmt(r["overall"][k]) for _, k in HEADLINE_COLUMNS)
        else:
            vals = f"unavailable: {_cell(str(r.get('error')))}" + " |" * (len(HEADLINE_COLUMNS) - 1)
        lines.append(f"| {name} | {r['covers']} | {r['n_notes']} | {vals} |")
    best = report.get("best_peer")
    ratio = report.get("student_vs_best_peer") or {}
    lines += ["", f"Best peer: **{best or '–'}**; student / best peer F1 = {_fmt(ratio.get('f1_ratio'))} "
              f"(fuzzy F1: {_fmt(ratio.get('fuzzy_f1_ratio'))})."]  # fmt: skip
    lines += _threshold_note(report["taggers"].get("closed-set", {}))
    lines += ["", _per_category(report, best), "", _calibration_md(report["calibration"])]
    return "\n".join(lines) + "\n"


def _threshold_note(row: Mapping[str, Any]) -> list[str]:
    """The closed-set peer's threshold and where it was tuned (nothing when the row has none)."""
    if "threshold" not in row:
        return []
    tuning = row.get("threshold_tuning") or {}
    if not tuning.get("val_f1"):
        return ["", f"closed-set threshold: {_fmt(row['threshold'])} (its default: no validation notes "
                "with a teacher answer to tune it on)."]  # fmt: skip
    grid = [float(t) for t in tuning["val_f1"]]
    return ["", f"closed-set threshold: {_fmt(row['threshold'])}, tuned for F1 vs the teacher on the "
            f"{tuning['n_notes']} validation notes with a teacher answer (grid {min(grid):g}..{max(grid):g}; "
            "never on the test notes)."]  # fmt: skip


def _per_category(report: Mapping[str, Any], best: str | None) -> str:
    student = report["taggers"]["student"]["per_category"]
    peer = report["taggers"][best]["per_category"] if best else {}
    p = best or "best peer"
    out = [
        f"## Per category: student vs {p}",
        "",
        f"| category | n_notes | student F1 | {p} F1 | student fuzzy F1 | {p} fuzzy F1 | student tags/note |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for cat, s in student.items():
        q = peer.get(cat, {})
        out.append(
            f"| {_cell(cat) or '(none)'} | {s['n_notes']} | {_fmt(s['f1'])} | {_fmt(q.get('f1'))} | "
            f"{_fmt(s['fuzzy_f1'])} | {_fmt(q.get('fuzzy_f1'))} | {_fmt(s['tags_per_note'])} |"
        )
    return "\n".join(out)


def _calibration_md(cal: Mapping[str, Any]) -> str:
    out = [
        "## Calibration of the student's confidence",
        "",
        f"ECE ({len(cal['bins'])} equal-width bins) = {_fmt(cal['ece'])} over {cal['n_tags']} tags; "
        f"accuracy {_fmt(cal['accuracy'])} (a tag is correct when it is one of the teacher's tags), "
        f"mean confidence {_fmt(cal['mean_confidence'])}.",
        "",
        "![reliability diagram](reliability.png)",
        "",
        "| confidence bin | tags | mean confidence | accuracy |",
        "|---|---:|---:|---:|",
    ]
    for b in cal["bins"]:
        if b["count"]:
            out.append(
                f"| [{b['lower']:.3f}, {b['upper']:.3f}) | {b['count']} | {_fmt(b['mean_confidence'])} | "
                f"{_fmt(b['accuracy'])} |"
            )
    return "\n".join(out)
