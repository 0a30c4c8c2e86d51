"""Stage 2's anchor filter (docs/paper_facts.md#joint-grpo-stage-2): the frozen reasoner's
caption the renderer is trained to draw, kept only if it is close to the ground truth
("captions with ROUGE-L < 0.6 are discarded and regenerated")."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vans.models.prompting import parse_output
from vans.models.vlm import Reasoner, SamplingConfig
from vans.rewards.vans import rouge_rewards


@dataclass(frozen=True)
class Anchor:
    """The caption the frozen reasoner wrote for a prompt."""

    caption: str | None
    """The first caption with ROUGE-L >= the threshold; None if none passed."""
    rouge: float
    """Its ROUGE-L (the best of the tries when none passed)."""
    tries: int
    """Captions looked at: the passing one's position + 1, or all of them."""


def write_anchor(
    reasoner: Reasoner,
    frames: torch.Tensor,
    question: str,
    truth: str,
    *,
    tries: int,
    min_rouge: float,
    sampling: SamplingConfig,
    seed: int,
    fps: float,
) -> Anchor:
    """Sample `tries` answers in one call and take the first whose caption reaches
    `min_rouge` against `truth`."""
    texts = reasoner.generate(
        frames, [question], num_samples=tries, sampling=sampling, seed=seed, fps=fps
    )[0]
    captions = [parse_output(t).caption for t in texts]
    scores = rouge_rewards(captions, truth)
    for i, score in enumerate(scores):
        if score >= min_rouge:
            return Anchor(captions[i], score, i + 1)
    return Anchor(None, max(scores), tries)
