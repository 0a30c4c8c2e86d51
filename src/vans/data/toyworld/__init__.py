"""A procedural 2-D toy world that generates VNEP samples with known ground truth.

Both task families of the paper: predictive (collisions, bounces, falls, pushes) and
procedural (stacking, sorting, filling by a visible rule), with multi-future hypothetical
questions, reasoning texts, perception facts and multiple-choice questions.
"""

from vans.data.toyworld.generate import (
    FAMILIES,
    ToySample,
    ToyWorldConfig,
    ToyWorldError,
    iter_samples,
    write_toyworld,
)

__all__ = [
    "FAMILIES",
    "ToySample",
    "ToyWorldConfig",
    "ToyWorldError",
    "iter_samples",
    "write_toyworld",
]
