"""Seeds derived from seeds: every random choice in training draws from a generator seeded
here, so a run does not depend on how its samples are split over processes, and a resumed
run replays the interrupted one exactly."""

from __future__ import annotations

import numpy as np
import torch

TRAIN_STREAM, EVAL_STREAM, ORDER_STREAM = 0, 1, 2
"""Streams of `sample_seed`: training positions, eval positions, epoch orders."""


def sample_seed(seed: int, position: int, stream: int = TRAIN_STREAM) -> int:
    """The seed for every random choice about the sample at `position` of the run (stream 0)
    or of the eval set (stream 1), or for one purpose of a sample (a sample's seed and a
    purpose number): well mixed, so neighbouring positions are unrelated."""
    return int(np.random.SeedSequence([seed, stream, position]).generate_state(1)[0])


def seeded_generator(seed: int, purpose: int) -> torch.Generator:
    """A CPU generator for one purpose of a sample with seed `seed`
    (`sample_seed(seed, purpose)`)."""
    return torch.Generator().manual_seed(sample_seed(seed, purpose))
