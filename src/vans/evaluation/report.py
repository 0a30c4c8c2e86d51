"""The results table in the layout of the VANS paper's Table 2, with its protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from vans.evaluation.text_metrics import ROUGE_VARIANTS

if TYPE_CHECKING:
    from vans.evaluation.runner import EvalResult

ROUGE_DESCRIPTIONS = {
    "coco": "COCO-caption LCS F-measure, beta = 1.2, PTB-style tokens",
    "rouge-score": "Google rouge-score rougeL F1, its default tokenizer, no stemming",
}


def results_markdown(results: Sequence[EvalResult]) -> str:
    """A Markdown table (one row per result) followed by the protocol behind the numbers."""
    fvd_labels = sorted({r.fvd_label for r in results})
    fvd = fvd_labels[0] if len(fvd_labels) == 1 else "FVD / FVD-toy"
    lines = [
        f"| Model | BLEU@4↑ | ROUGE-L↑ | {fvd}↓ | CLIP-V↑ | CLIP-T↑ |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r.metrics
        cells = [
            _num(m.get("bleu4"), 4),
            _num(m.get("rouge_l"), 4),
            _num(m.get("fvd"), 2),
            _num(m.get("clip_v"), 4),
            _num(m.get("clip_t"), 4),
        ]
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    lines += ["", "Protocol:"]
    for r in results:
        p = r.protocol
        videos = ", ".join(
            f"{v['frames']} frames at {v['height']}x{v['width']}" for v in p["video"]
        )
        others = ", ".join(
            f"{v}: {_num(r.rouge_l_variants.get(v), 4)}"
            for v in ROUGE_VARIANTS
            if v != p["rouge_l_variant"]
        )
        lines += [
            f"- **{r.name}**: {r.num_samples} samples scored, {r.num_failed} failed "
            f"(see failures.jsonl); source {p['source']}, seed {p['seed']}.",
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
    return "\n".join(lines) + "\n"


def _num(value: float | None, digits: int) -> str:
    if value is None:
        return "–"
    # A Fréchet distance of identical sets can come out as -1e-12: print 0, not -0.00.
    return f"{0.0 if abs(value) < 0.5 * 10**-digits else value:.{digits}f}"
