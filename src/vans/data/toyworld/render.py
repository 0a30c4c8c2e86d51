"""Sprites and the rasteriser of the toy world.

The world is a 2-D side view. World units: y runs from 0 (top) to 1 (bottom) and x from 0
to the canvas aspect ratio W/H, so one world unit is H pixels and shapes stay round on any
canvas. Everything drawn is a `Sprite` whose track gives its box per frame, so static
scenery, moving objects, disappearing walls and growing liquid layers share one renderer.
Colours are flat (no anti-aliasing) so tests can recover objects from pixels exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 45, 45),
    "green": (40, 180, 70),
    "blue": (50, 95, 235),
    "yellow": (240, 210, 40),
    "purple": (160, 70, 210),
    "orange": (245, 140, 30),
}
"""Object colours: far apart in RGB so they survive video compression."""

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

BACKGROUND = (28, 30, 36)
FLOOR = (84, 72, 60)
SCENERY = (150, 150, 150)
"""Floor, walls, ledges and containers: a grey no object uses."""

FLOOR_Y = 0.86
"""Top of the floor band, in world units."""


@dataclass
class Sprite:
    """A drawable thing and where it is in every frame.

    `track` has shape (T, 4): centre x, centre y, half-width, half-height in world units;
    a row of NaN hides the sprite in that frame. `kind` is a shape name (an object) or
    "rect" (scenery, layers). `name` is how language refers to it ("red circle").
    """

    kind: str
    color: tuple[int, int, int]
    track: np.ndarray
    name: str = ""

    @classmethod
    def still(
        cls,
        kind: str,
        color: tuple[int, int, int],
        box: tuple[float, ...],
        num_frames: int,
        name: str = "",
    ) -> Sprite:
        return cls(kind, color, np.tile(np.asarray(box, dtype=np.float64), (num_frames, 1)), name)


def _shape_mask(
    kind: str, xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, hw: float, hh: float
) -> np.ndarray:
    """Boolean mask of a shape over pixel-centre coordinates `xs` (1, w) and `ys` (h, 1)."""
    if kind == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= hw * hw
    if kind in ("square", "rect"):
        return (np.abs(xs - cx) <= hw) & (np.abs(ys - cy) <= hh)
    if kind == "triangle":
        # Apex up: the half-width grows linearly from 0 at the top to hw at the base.
        rel = (ys - (cy - hh)) / (2 * hh)
        return (rel >= 0) & (rel <= 1) & (np.abs(xs - cx) <= hw * rel)
    raise ValueError(f"unknown sprite kind {kind!r}")


def render(sprites: list[Sprite], frames: range | list[int], size: tuple[int, int]) -> np.ndarray:
    """Rasterise `sprites` over the floor at the given frame indices into uint8 (T, H, W, 3).

    Sprites are painted in list order, so later ones cover earlier ones.
    """
    height, width = size
    scale = float(height)  # pixels per world unit
    out = np.empty((len(frames), height, width, 3), dtype=np.uint8)
    out[:] = BACKGROUND
    floor_row = int(np.ceil(FLOOR_Y * scale - 0.5))  # first row whose pixel centre is on the floor
    out[:, floor_row:] = FLOOR
    for i, t in enumerate(frames):
        canvas = out[i]
        for sprite in sprites:
            cx, cy, hw, hh = sprite.track[t] * scale
            if np.isnan(cx):
                continue
            # Rasterise only inside the sprite's bounding box: cheap at any canvas size.
            x0, x1 = max(int(cx - hw), 0), min(int(np.ceil(cx + hw)) + 1, width)
            y0, y1 = max(int(cy - hh), 0), min(int(np.ceil(cy + hh)) + 1, height)
            if x0 >= x1 or y0 >= y1:
                continue
            xs = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5
            ys = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5
            mask = _shape_mask(sprite.kind, xs, ys, cx, cy, hw, hh)
            canvas[y0:y1, x0:x1][mask] = sprite.color
    return out
