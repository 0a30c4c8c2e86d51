"""The build's report: counts per step, every rejection with its reason, the model calls
made, and the clips' durations beside the paper's (VANS-Data-100K: inputs 9.43 s, targets
3.76 s on average)."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

PAPER_SECONDS = {"input": 9.43, "target": 3.76}
"""docs/paper_facts.md#data: mean input and target clip durations."""


def duration_stats(seconds: list[float], paper: float) -> dict[str, float | int | None]:
    if not seconds:
        return {
            "count": 0,
            "mean": None,
            "median": None,
            "min": None,
            "max": None,
            "paper_mean": paper,
        }
    return {
        "count": len(seconds),
        "mean": round(statistics.fmean(seconds), 3),
        "median": round(statistics.median(seconds), 3),
        "min": round(min(seconds), 3),
        "max": round(max(seconds), 3),
        "paper_mean": paper,
    }


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The report as a few lines for the terminal."""
    counts = report["counts"]
    lines = [", ".join(f"{k} {v}" for k, v in counts.items())]
    for name in ("input", "target"):
        d = report["durations"][name]
        if d["count"]:
            lines.append(
                f"{name} clips: mean {d['mean']:.2f} s, median {d['median']:.2f} s "
                f"(paper {PAPER_SECONDS[name]} s)"
            )
    if report["rejections"]:
        lines.append(f"rejected: {rejection_counts(report)}")
    for role, calls in report["calls"].items():
        lines.append(
            f"{role}: {calls['calls']} calls, {calls['cache_hits']} cached, "
            f"{calls['failed']} failed"
        )
    return lines


def rejection_counts(report: dict[str, Any]) -> str:
    """How many items each step rejected ("8 at usable, 2 at pair"), or "none"."""
    reasons = Counter(r["step"] for r in report["rejections"])
    return ", ".join(f"{n} at {s}" for s, n in reasons.items()) or "none"
