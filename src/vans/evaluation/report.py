"""The results table in the layout of the VANS paper's Table 2, with its protocol; for
toy-world samples, a second table of truth checks (overall and per family)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING

from vans.evaluation.text_metrics import ROUGE_VARIANTS
from vans.evaluation.toy_truth import CHECKS, MIN_TRAVEL, POSITION_TOLERANCE

if TYPE_CHECKING:
    from vans.evaluation.runner import EvalResult

METRICS = ("bleu4", "rouge_l", "fvd", "clip_v", "clip_t")
"""The columns of the paper's table, in its order."""

TRUTH_HEADERS = {
    "names_movers": "Names movers",
    "no_absent_objects": "No absent object",
    "event_right": "Event",
    "caption_right": "Caption right",
    "movers_visible": "Movers visible",
    "movers_placed": "Movers placed",
    "video_right": "Video right",
}
"""Column headers of the truth table, one per `toy_truth.CHECKS` key."""

ROUGE_DESCRIPTIONS = {
    "coco": "COCO-caption LCS F-measure, beta = 1.2, PTB-style tokens",
    "rouge-score": "Google rouge-score rougeL F1, its default tokenizer, no stemming",
}


def results_markdown(rows: Sequence[EvalResult | Sequence[EvalResult]]) -> str:
    """A Markdown table followed by the protocol behind the numbers.

    A row is one result, or the results of one model trained with several seeds (same name):
    each cell is then "mean ± std" (sample standard deviation, n - 1) over the seeds.
    """
    groups = [list(row) if isinstance(row, Sequence) else [row] for row in rows]
    fvd_labels = sorted({r.fvd_label for group in groups for r in group})
    fvd = fvd_labels[0] if len(fvd_labels) == 1 else "FVD / FVD-toy"
    lines = [
        f"| Model | BLEU@4↑ | ROUGE-L↑ | {fvd}↓ | CLIP-V↑ | CLIP-T↑ |",
        "|---|---|---|---|---|---|",
    ]
    for group in groups:
        cells = [_cell([r.metrics.get(m) for r in group], 2 if m == "fvd" else 4) for m in METRICS]
        lines.append(f"| {_row_name(group)} | " + " | ".join(cells) + " |")
    lines += _truth_tables(groups)
    lines += ["", "Protocol:"]
    for group in groups:
        r, p = group[0], group[0].protocol
        videos = ", ".join(
            f"{v['frames']} frames at {v['height']}x{v['width']}" for v in p["video"]
        )
        others = ", ".join(
            f"{v}: {_cell([g.rouge_l_variants.get(v) for g in group], 4)}"
            for v in ROUGE_VARIANTS
            if v != p["rouge_l_variant"]
        )
        sources = "; ".join(g.protocol["source"] for g in group)
        lines += [
            f"- **{r.name}**: {' / '.join(str(g.num_samples) for g in group)} samples scored, "
            f"{' / '.join(str(g.num_failed) for g in group)} failed (see failures.jsonl); "
            f"{'sources' if len(group) > 1 else 'source'} {sources}; seed {p['seed']}.",
            f"  - Videos: {videos or 'none'}; the ground truth is resized to the same size; "
            "CLIP-V compares frame i with frame i and FVD features see both at one frame count "
            "(when counts differ, both are resampled to the shorter with floor(linspace) "
            "indices).",
            f"  - ROUGE-L: {p['rouge_l_variant']} ({ROUGE_DESCRIPTIONS[p['rouge_l_variant']]}); "
            f"other variant {others}. BLEU@4: COCO-caption corpus BLEU (closest reference length).",
            f"  - CLIP-V / CLIP-T embedder: {p['embedder'] or 'none'}; CLIP-T is each generated "
            "frame against the ground-truth caption, averaged.",
            f"  - {r.fvd_label}: "
            + (
                f"I3D features from {p['i3d']}"
                if r.fvd_label == "FVD"
                else "Fréchet distance of the embedder's video features (mean frame embedding "
                "and last-minus-first frame embedding); not comparable with I3D FVD"
            )
            + ".",
        ]
        if all(g.well_formed is not None for g in group):
            cell = _cell([_percent(g.well_formed) for g in group], 1)
            lines.append(
                f"  - Well-formed answers ([Think]…[/Think][Ans]…[/Ans], the r_f condition): "
                f"{cell}%."
            )
        if r.truth:
            counts = ", ".join(f"{f} {n}" for f, n in r.truth_samples.items())
            lines.append(
                f"  - Truth checks: {sum(r.truth_samples.values())} toy-world samples ({counts}); "
                "% of the samples a check applies to (video checks need an answer video). "
                'Caption: every mover named, no "<colour> <noun>" the scene lacks, the '
                "event (and direction) of the truth's template verbs. Video (pixels by nearest "
                "palette colour): each mover's colour visible; in the last frame its centre "
                f"within {POSITION_TOLERANCE} of the canvas of the truth's end and nearer to "
                f"it than to its start (when they are {MIN_TRAVEL} or more apart). "
                "See docs/evaluation.md."
            )
    return "\n".join(lines) + "\n"


def _truth_tables(groups: list[list[EvalResult]]) -> list[str]:
    """The truth checks of the toy-world samples: overall, then per family (no lines when no
    result has toy-world samples)."""
    toy = [group for group in groups if group[0].truth]
    if not toy:
        return []
    headers = " | ".join(f"{TRUTH_HEADERS[k]}↑" for k in CHECKS)
    lines = ["", "Truth checks on the toy world (% of samples):", "", f"| Model | {headers} |"]
    lines.append("|" + "---|" * (len(CHECKS) + 1))
    for group in toy:
        cells = [_cell([_percent(r.truth.get(k)) for r in group], 1) for k in CHECKS]
        lines.append(f"| {_row_name(group)} | " + " | ".join(cells) + " |")
    lines += ["", "Per family:", "", f"| Model | Family | Samples | {headers} |"]
    lines.append("|" + "---|" * (len(CHECKS) + 3))
    for group in toy:
        for family, count in group[0].truth_samples.items():
            rates = [r.truth_by_family.get(family, {}) for r in group]
            cells = [_cell([_percent(f.get(k)) for f in rates], 1) for k in CHECKS]
            lines.append(f"| {_row_name(group)} | {family} | {count} | " + " | ".join(cells) + " |")
    return lines


def _row_name(group: list[EvalResult]) -> str:
    return group[0].name + (f" ({len(group)} seeds)" if len(group) > 1 else "")


def _percent(rate: float | None) -> float | None:
    return None if rate is None else 100 * rate


def _cell(values: list[float | None], digits: int) -> str:
    if len(values) == 1 or any(v is None for v in values):
        return _num(values[0], digits) if len(values) == 1 else "–"
    mean = statistics.fmean(values)
    return f"{_num(mean, digits)} ± {statistics.stdev(values):.{digits}f}"


def _num(value: float | None, digits: int) -> str:
    if value is None:
        return "–"
    # A Fréchet distance of identical sets can come out as -1e-12: print 0, not -0.00.
    return f"{0.0 if abs(value) < 0.5 * 10**-digits else value:.{digits}f}"
