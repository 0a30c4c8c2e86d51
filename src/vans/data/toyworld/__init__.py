"""A procedural 2-D toy world that generates VNEP samples with known ground truth.

Both task families of the paper: predictive (collisions, bounces, falls, pushes) and
procedural (stacking, sorting, filling by a visible rule), with multi-future hypothetical
questions, reasoning texts, perception facts and multiple-choice questions.

The config imports eagerly; the generator (torch, PyAV) only when one of its names is used,
so that commands which only read a config start at once.
"""

from typing import Any

from vans.data.toyworld.config import FAMILY_NAMES, ToyWorldConfig, ToyWorldError

_GENERATOR = ("FAMILIES", "ToySample", "iter_samples", "write_toyworld")

__all__ = ["FAMILY_NAMES", "ToyWorldConfig", "ToyWorldError", *_GENERATOR]


def __getattr__(name: str) -> Any:
    if name in _GENERATOR:
        from vans.data.toyworld import generate

        return getattr(generate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
