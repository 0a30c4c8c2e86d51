"""What a toy-world event family produces, and the helpers families share.

A family draws a `Scene`: one input episode and one or more `Future`s. Future 0 is what
really happens; the others answer a hypothetical question about the same input video
(multi-future prediction). Every future carries full sprite tracks over input + target
frames; their input parts are identical by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vans.data.toyworld.render import COLORS, SHAPES, Sprite


@dataclass(frozen=True)
class Clock:
    """Frame timing shared by the input and target clips (the target follows the input)."""

    fps: float
    input_frames: int
    target_frames: int

    @property
    def total(self) -> int:
        return self.input_frames + self.target_frames

    @property
    def times(self) -> np.ndarray:
        return np.arange(self.total, dtype=np.float64) / self.fps

    @property
    def input_duration(self) -> float:
        return self.input_frames / self.fps

    @property
    def target_duration(self) -> float:
        return self.target_frames / self.fps


@dataclass
class Future:
    """One possible continuation of the input and everything said about it."""

    question: str
    answer: str
    reasoning: str
    sprites: list[Sprite]
    movers: list[str]
    """Names of the objects the answer says move in the target clip."""
    hypothesis: str | None = None
    """The counterfactual premise ("the wall is not there"); None for the factual future."""
    distractors: list[str] = field(default_factory=list)
    """Plausible wrong answers, for multiple-choice questions."""


@dataclass
class Scene:
    family: str
    task: str
    """"procedural" or "predictive", as in the paper's two task families."""
    futures: list[Future]
    facts: dict[str, Any] = field(default_factory=dict)
    """Family-specific ground truth (pattern, rule, ...), stored in the sample's `extra`."""


class ObjectPicker:
    """Draws (colour, shape) pairs while honouring held-out compositions.

    With `mode="exclude"` no drawn object uses a held-out pair (a training split); with
    `mode="only"` the first object drawn for a scene, always one the answer names, uses a
    held-out pair (a test split of unseen compositions).
    """

    def __init__(
        self, held_out: frozenset[tuple[str, str]] = frozenset(), mode: str = "exclude"
    ) -> None:
        if mode not in ("exclude", "only"):
            raise ValueError(f"held-out mode must be 'exclude' or 'only', got {mode!r}")
        self.held_out = held_out
        self.mode = mode

    def pick(
        self,
        rng: np.random.Generator,
        n: int,
        *,
        shapes: tuple[str, ...] = SHAPES,
        colors: tuple[str, ...] | None = None,
    ) -> list[tuple[str, str]]:
        """`n` objects with distinct colours; colours are tried in the order given if any."""
        palette = list(colors) if colors is not None else list(rng.permutation(list(COLORS)))
        chosen: list[tuple[str, str]] = []
        for color in palette:
            options = [(color, s) for s in shapes]
            allowed = [p for p in options if self.allowed(p, first=not chosen)]
            if allowed:
                chosen.append(allowed[rng.integers(len(allowed))])
            elif colors is not None:
                raise Unsatisfiable(f"no allowed shape for colour {color}")
            if len(chosen) == n:
                return chosen
        raise Unsatisfiable(f"cannot draw {n} objects under the held-out rule")

    def allowed(self, pair: tuple[str, str], first: bool = False) -> bool:
        """Whether `pair` may be drawn; `first` marks the object the answer is about."""
        if self.mode == "exclude":
            return pair not in self.held_out
        return pair in self.held_out if first else True


class Unsatisfiable(Exception):
    """The held-out rule leaves no valid draw; the generator redraws the scene."""


def article(word: str) -> str:
    """ "a" or "an" for the word that follows."""
    return "an" if word[0] in "aeiou" else "a"


def name_of(color: str, shape: str) -> str:
    return f"{color} {shape}"


def path(times: np.ndarray, keys: list[tuple[float, float, float]]) -> np.ndarray:
    """Piecewise-linear (x, y) through keyframes (t, x, y); held before and after them."""
    kt, kx, ky = (np.asarray(k, dtype=np.float64) for k in zip(*keys, strict=True))
    return np.stack([np.interp(times, kt, kx), np.interp(times, kt, ky)], axis=1)


def boxed(xy: np.ndarray, half_w: float, half_h: float | None = None) -> np.ndarray:
    """Add half-extents to an (T, 2) centre path, giving an (T, 4) sprite track."""
    half_h = half_w if half_h is None else half_h
    sizes = np.broadcast_to(np.array([half_w, half_h]), xy.shape)
    return np.concatenate([xy, sizes], axis=1)


def mirror(sprites: list[Sprite], aspect: float) -> list[Sprite]:
    """Reflect a scene left-right so every event also happens in the other direction."""
    out = []
    for s in sprites:
        track = s.track.copy()
        track[:, 0] = aspect - track[:, 0]
        out.append(Sprite(s.kind, s.color, track, s.name))
    return out


def choose(rng: np.random.Generator, options: list[str] | tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def object_sprite(color: str, shape: str, track: np.ndarray) -> Sprite:
    return Sprite(shape, COLORS[color], track, name_of(color, shape))
