"""What the toy world generates (`ToyWorldConfig`) and its checks, apart from the generator
so that reading a config (the CLI's defaults, a recipe's splits) does not import torch."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from vans.data.toyworld.render import COLORS, SHAPES
from vans.data.toyworld.scene import Clock
from vans.errors import VansError

PREDICTIVE_FAMILIES = ("collision", "bounce", "fall", "push")
"""Event families of the predictive task (`vans.data.toyworld.predictive`)."""
PROCEDURAL_FAMILIES = ("stack", "sort", "fill")
"""Event families of the procedural task (`vans.data.toyworld.procedural`)."""
FAMILY_NAMES = PREDICTIVE_FAMILIES + PROCEDURAL_FAMILIES
ANSWER_SHAPES: dict[str, tuple[str, ...]] = {"stack": ("square",), "fill": ()}
"""Shapes a family's answer object can have, where not all of them (fill names layers)."""

MAX_SIZE = (352, 640)


class ToyWorldError(VansError):
    """An invalid toy-world configuration; names the field."""


HELD_OUT = ("red triangle", "green circle", "blue square")
"""The colour-shape pairs the recipes hold out: no training sample shows them, each colour
and shape is still seen, and a held-out test split shows one in every sample."""


@dataclass(frozen=True)
class ToyWorldConfig:
    """What to generate. Every field is a CLI option of `vans data toyworld`."""

    num: int = 100
    """Number of samples (manifest rows). A multi-future scene adds one row per future."""
    seed: int = 0
    """Random seed; the same config gives identical frames and manifests."""
    size: tuple[int, int] = (64, 64)
    """Canvas (height, width): square or landscape, from 32x32 up to 352x640."""
    fps: float = 8.0
    """Frame rate of both clips."""
    input_frames: int = 33
    """Frames in the input clip (at least 2 s of video; 4k+1 suits the Wan VAE)."""
    target_frames: int = 17
    """Frames in the target clip (at least 1 s; 4k+1 suits the Wan VAE)."""
    families: tuple[str, ...] = FAMILY_NAMES
    """Event families to draw from, in rotation (see `FAMILY_NAMES`)."""
    multi_future: float = 0.3
    """Probability that a scene with a hypothetical variant also emits it (same input video)."""
    held_out: tuple[str, ...] = ()
    """Colour-shape pairs such as "red circle", for splits of unseen compositions."""
    held_out_mode: str = "exclude"
    """"exclude": no object uses a held-out pair. "only": the answer's object always does."""

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ToyWorldError("invalid toy-world config: " + "; ".join(problems))

    def _problems(self) -> Iterator[str]:
        if self.num < 1:
            yield f"num must be >= 1, got {self.num}"
        h, w = self.size
        if not (32 <= h <= MAX_SIZE[0] and 32 <= w <= MAX_SIZE[1] and w >= h):
            yield (
                f"size must be HxW with 32 <= H <= W, H <= {MAX_SIZE[0]}, W <= {MAX_SIZE[1]}; "
                f"got {h}x{w}"
            )
        if h % 2 or w % 2:  # H.264 4:2:0 stores even sizes: an odd one would lose a row
            yield f"size must be even in both sides (H.264 stores even sizes), got {h}x{w}"
        if not 0 <= self.seed < 2**32:
            yield f"seed must be in [0, 2**32), got {self.seed}"
        if not (self.fps > 0 and math.isfinite(self.fps)):
            yield f"fps must be a positive number, got {self.fps}"
        elif self.input_frames / self.fps < 2.0:
            yield f"input_frames must cover at least 2 s at {self.fps} fps, got {self.input_frames}"
        elif self.target_frames / self.fps < 1.0:
            yield (
                f"target_frames must cover at least 1 s at {self.fps} fps, got {self.target_frames}"
            )
        if not 0 <= self.multi_future <= 1:
            yield f"multi_future is a probability, in [0, 1]; got {self.multi_future}"
        unknown = [f for f in self.families if f not in FAMILY_NAMES]
        if unknown or not self.families:
            yield (
                f"families must be a non-empty subset of {sorted(FAMILY_NAMES)}, "
                f"got {list(self.families)}"
            )
        for pair in self.held_out:
            parts = pair.split()
            if len(parts) != 2 or parts[0] not in COLORS or parts[1] not in SHAPES:
                yield (
                    f"held_out entries must be '<colour> <shape>' with colour in {sorted(COLORS)} "
                    f"and shape in {list(SHAPES)}, got {pair!r}"
                )
        if self.held_out_mode not in ("exclude", "only"):
            yield f"held_out_mode must be 'exclude' or 'only', got {self.held_out_mode!r}"
        elif self.held_out_mode == "only":
            if not self.held_out:
                yield "held_out_mode 'only' needs at least one held_out pair"
            elif not self.active_families:
                yield (
                    f"held_out_mode 'only': no family in {list(self.families)} can show "
                    f"any of {list(self.held_out)}"
                )

    @property
    def clock(self) -> Clock:
        return Clock(self.fps, self.input_frames, self.target_frames)

    @property
    def active_families(self) -> tuple[str, ...]:
        """Families to rotate through: under "only", those that can show a held-out pair."""
        if self.held_out_mode != "only":
            return self.families
        shapes = {pair.split()[-1] for pair in self.held_out}
        return tuple(f for f in self.families if shapes & set(ANSWER_SHAPES.get(f, SHAPES)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"], d["families"], d["held_out"] = (
            list(self.size),
            list(self.families),
            list(self.held_out),
        )
        return d
