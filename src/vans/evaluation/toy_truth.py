"""Truth checks for answers about the toy world: is the answer right, not just worded alike?

Every toy-world sample carries its ground truth in `extra` (see
`vans.data.toyworld.generate.scene_samples`), so an answer can be checked against facts
instead of against the wording of the reference caption. ROUGE-L cannot do this: the answer
templates share most of their words ("The ... hits the ... and ... to the ..."), so a caption
naming the wrong objects or the wrong outcome still scores about 0.3.

Text checks (on the caption, i.e. the [Ans] text):

* `names_movers`: every object that moves in the truth (`extra["movers"]`, e.g. "red
  circle", "green layer") is named in the caption.
* `no_absent_objects`: every "<colour> <noun>" the caption names (colour one of
  `render.COLORS`, noun circle/square/triangle/layer/bin, "block" read as square, plurals
  read as singular) is something the sample shows: an object of the input's or the target's
  last frame, a mover or a piece of scenery ("red bin").
* `event_right`: the caption's event label equals the truth answer's (both classified by
  `event_label` from the verbs of the family's templates), and for predictive families the
  direction agrees where the toy world records one (`facts["leftward"]`, the predictive
  families): if the truth answer says "left"/"right" the caption must say exactly that; if
  it does not (falls, pushes), a direction the caption gives must be the direction of travel.
* `caption_right`: all three.

Video checks (on the answer video, any size; positions are in [0, 1] of the canvas). Pixels
are classified by their nearest palette colour (`classify_colours`); a pixel farther than
`COLOUR_CUTOFF` from every palette colour (a blurred mix, a compression artefact) is
nothing. The mover's colour may legitimately appear elsewhere (the sort family's bins are
drawn in object colours, a tower holds several red squares, earlier objects lie in the bin),
so the pixels of the mover's colour that the input's last frame already shows are ignored,
except those within `POSITION_TOLERANCE` of where the mover itself was (it may stay visible
there while it starts to move).

* `movers_visible`: in some frame of the answer, each mover's colour covers at least
  `MIN_AREA` (of the canvas height squared: objects are sized in heights) of
  not-ignored pixels.
* `movers_placed`: in the answer's last frame, the centre of each mover's not-ignored
  colour is within `POSITION_TOLERANCE` of the canvas, in x and in y, of where the truth's
  last frame has the mover (its `target_objects` position, moved onto the canvas if the
  mover leaves it), and, when the truth moves it `MIN_TRAVEL` or more, nearer to that end
  than to where the mover was at the end of the input. The second condition is what fails a
  video that leaves everything in place: toy movers travel little in one target clip (often
  less than the tolerance), so "near the truth" alone would accept a static video. (A
  bouncing object can end where it started; then a static last frame is right.) When the
  truth's mover ends with its centre off the canvas, an answer that shows (almost) nothing
  of it in its last frame passes too.
* `video_right`: both.

`toy_truth` runs every check for one sample; a check that does not apply (no video) is NaN.
`colours_visible` is the pixel check on its own, for any clip and its object facts.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from vans.data.toyworld.render import BACKGROUND, COLORS, FLOOR, SCENERY

TOY_KEYS = ("family", "movers", "objects", "target_objects", "scenery")
"""The `extra` keys every toy-world sample has and the truth checks read."""

TEXT_CHECKS = ("names_movers", "no_absent_objects", "event_right", "caption_right")
VIDEO_CHECKS = ("movers_visible", "movers_placed", "video_right")
CHECKS = TEXT_CHECKS + VIDEO_CHECKS
"""The keys of `toy_truth`'s result, in table order."""

OBJECT_COLOURS: tuple[str, ...] = tuple(COLORS)
"""Labels of `classify_colours`: index i is OBJECT_COLOURS[i]; -1 is `NOTHING`."""
NOTHING = -1

_PALETTE = np.array([*COLORS.values(), BACKGROUND, FLOOR, SCENERY], dtype=np.float32)
COLOUR_CUTOFF: float = 0.5 * min(
    float(np.linalg.norm(a - b)) for a, b in itertools.combinations(_PALETTE, 2)
)
"""Largest RGB distance at which a pixel still takes a palette colour: half the smallest
distance between two palette colours (yellow and orange, about 71), so a pixel within it of
one colour can never be as close to another."""

POSITION_TOLERANCE = 0.12
"""How far (in canvas units, in x and in y) an answer's mover may end from the truth's."""
MIN_AREA = 0.0005
"""Fewest pixels, as a fraction of the canvas height squared, that make a colour visible:
an eighth of the smallest toy object (a sorted triangle, 0.09 x 0.09 / 2 heights squared),
of which H.264's half-resolution colour leaves only a few pixels at 64x64."""

MIN_TRAVEL = 0.03
"""Below this distance between a mover's start and end, "nearer to its end than to its start"
is not asked: compression moves a colour's centre by up to about a pixel (0.016 at 64x64),
and a bouncing object can end where it started."""

_SAME_PLACE = 0.005
"""Fact positions are rounded to 0.001: an object within this of its old place did not move."""

_NOUNS = {
    "circle": "circle",
    "square": "square",
    "block": "square",
    "triangle": "triangle",
    "layer": "layer",
    "bin": "bin",
}
_MENTION = re.compile(rf"\b({'|'.join(COLORS)})\s+({'|'.join(_NOUNS)})s?\b", re.IGNORECASE)
_DIRECTION = re.compile(r"\b(left|right)(?:wards?)?\b", re.IGNORECASE)


# --- text ----------------------------------------------------------------------------------


def is_toy_sample(extra: Mapping[str, Any] | None) -> bool:
    """Whether a sample's `extra` holds the toy world's ground truth (`TOY_KEYS`)."""
    return extra is not None and all(key in extra for key in TOY_KEYS)


def mentions(text: str) -> list[str]:
    """The "<colour> <noun>" names a text mentions, in order, lower-case and singular, with
    "block" read as "square" (the toy world's squares are called blocks in the stack family)."""
    return [f"{c.lower()} {_NOUNS[n.lower()]}" for c, n in _MENTION.findall(text)]


def names_movers(caption: str, movers: Sequence[str]) -> bool:
    """Whether the caption names every mover."""
    named = set(mentions(caption))
    return all(m in named for m in movers)


def absent_mentions(caption: str, extra: Mapping[str, Any]) -> list[str]:
    """The names the caption mentions that the sample does not show (see the module doc)."""
    present = {o["name"] for o in (*extra["objects"], *extra["target_objects"])}
    present |= set(extra["movers"]) | set(extra["scenery"])
    return [m for m in dict.fromkeys(mentions(caption)) if m not in present]


def _has(pattern: str, text: str) -> bool:
    return re.search(pattern, text) is not None


def event_label(family: str, text: str) -> str | None:
    """The event a text describes, from the verbs of the family's answer templates (and of
    its distractors, so a wrong answer gets a label of its own), or None if none is found.

    collision: "slides on" (the struck object moves on) or "bounces back" (the striker
    rebounds); bounce: "rebounds" or "continues"; fall: "falls" or "keeps sliding"; push:
    "pushed off"; stack: "placed <colour>" (the block that goes on the tower); sort:
    "<object> into <colour> bin"; fill: "poured <colour>" (the layer poured in). The
    direction is not part of the label (see `directions`).
    """
    t = text.lower()
    if family == "collision":
        if _has(r"\b(bounc\w*|rebound\w*|back)\b", t):
            return "bounces back"
        if _has(r"\b(slid\w*|push\w*|moves?|moving|rolls?|continues)\b", t):
            return "slides on"
        return "stops" if _has(r"\bstops?\b", t) else None
    if family == "bounce":
        if _has(r"\b(bounc\w*|rebound\w*|back)\b", t):
            return "rebounds"
        if _has(r"\b(keeps?|continues|past|on)\b", t):
            return "continues"
        return "stops" if _has(r"\b(stops?|turns?)\b", t) else None
    if family == "fall":
        if _has(r"\bwithout fall", t):
            return "keeps sliding"
        if _has(r"\b(falls?|falling|drops?|dropping)\b", t):
            return "falls"
        if _has(r"\b(keeps? sliding|slides on|along)\b", t):
            return "keeps sliding"
        return "stops" if _has(r"\b(stops?|bounc\w*)\b", t) else None
    if family == "push":
        if _has(r"\bpush\w*\b", t) and _has(r"\b(falls?|drops?|off|over)\b", t):
            return "pushed off"
        return "other" if _has(r"\b(falls?|stops?|bounc\w*)\b", t) else None
    named = mentions(t)
    if family == "stack":
        if _has(r"\b(knocked|taken|removed)\b", t):
            return "removed"
        blocks = [m for m in named if m.endswith(" square")]
        return f"placed {blocks[0].split()[0]}" if blocks else None
    if family == "sort":
        things = [m for m in named if not m.endswith(" bin")]
        bins = [m for m in named if m.endswith(" bin")]
        return f"{things[0]} into {bins[0]}" if things and bins else None
    if family == "fill":
        if _has(r"\b(emptied|poured out|removed)\b", t):
            return "emptied"
        layers = [m for m in named if m.endswith(" layer")]
        return f"poured {layers[0].split()[0]}" if layers else None
    return None


def directions(text: str) -> set[str]:
    """The directions ("left", "right") a text names."""
    return {d.lower() for d in _DIRECTION.findall(text)}


def event_right(caption: str, answer: str, extra: Mapping[str, Any]) -> bool:
    """Whether the caption describes the truth answer's event (see the module doc)."""
    family, facts = extra["family"], extra.get("facts", {})
    truth = event_label(family, answer)
    if truth is None or event_label(family, caption) != truth:
        return False
    if "leftward" not in facts:  # the procedural families record no direction
        return True
    said, expected = directions(caption), directions(answer)
    if expected:
        return said == expected
    return said <= {"left" if facts["leftward"] else "right"}


# --- pixels --------------------------------------------------------------------------------


def _numpy(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    array = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.dtype != np.uint8 or array.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (..., H, W, 3), got {array.dtype} {array.shape}")
    return array


def classify_colours(
    frames: torch.Tensor | np.ndarray, cutoff: float = COLOUR_CUTOFF
) -> np.ndarray:
    """Label every pixel of uint8 (..., H, W, 3) frames with the index of its object colour
    in `OBJECT_COLOURS`, or `NOTHING` (-1) where the nearest palette colour is the
    background, the floor or the scenery grey, or is farther than `cutoff`. int8 (..., H, W)."""
    array = _numpy(frames)
    # Each distinct colour is classified once: toy frames hold few of them.
    flat = array.reshape(-1, 3).astype(np.int32)
    keys = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    colours, index = np.unique(keys, return_inverse=True)
    rgb = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], axis=1)
    labels = np.empty(len(rgb), dtype=np.int8)
    squares = (_PALETTE**2).sum(1)
    # |x - c|^2 = |x|^2 - 2 x.c + |c|^2, in chunks that bound memory at protocol size.
    for start in range(0, len(rgb), 1 << 20):
        x = rgb[start : start + (1 << 20)].astype(np.float32)
        dist = (x**2).sum(1, keepdims=True) - 2 * x @ _PALETTE.T + squares
        nearest = dist.argmin(1)
        close = np.take_along_axis(dist, nearest[:, None], 1)[:, 0] <= cutoff**2
        labels[start : start + len(x)] = np.where(
            close & (nearest < len(OBJECT_COLOURS)), nearest, NOTHING
        )
    return labels[index].reshape(array.shape[:-1])


def _resample_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour labels (H, W) at another canvas size: a stretch, since positions are
    fractions of the canvas."""
    h, w = labels.shape
    rows = ((np.arange(size[0]) + 0.5) * h / size[0]).astype(int)
    cols = ((np.arange(size[1]) + 0.5) * w / size[1]).astype(int)
    return labels[rows[:, None], cols[None, :]]


def _box(size: tuple[int, int], position: Sequence[float], half: float) -> np.ndarray:
    """Pixels whose centre is within `half` of `position` (canvas units) in x and in y."""
    h, w = size
    ys = (np.arange(h) + 0.5) / h
    xs = (np.arange(w) + 0.5) / w
    x, y = position
    return (np.abs(ys - y) <= half)[:, None] & (np.abs(xs - x) <= half)[None, :]


def _min_pixels(size: tuple[int, int], min_area: float) -> float:
    return max(1.0, min_area * size[0] ** 2)


def colours_visible(
    frames: torch.Tensor | np.ndarray,
    objects: Sequence[Mapping[str, Any]],
    *,
    tolerance: float = POSITION_TOLERANCE,
    min_area: float = MIN_AREA,
) -> list[bool]:
    """For a clip (uint8 (T, H, W, 3), any size) and the facts of its last frame (each with
    "color" and "position" [x, y] in [0, 1] of the canvas, as `window_facts` writes them):
    whether each object's colour is visible where the facts put it, i.e. covers at least
    `min_area` x H**2 pixels of the last frame within `tolerance` of its position in x and y.

    Objects of one colour closer than `tolerance` can stand in for each other (a sorted bin
    holds same-coloured objects 0.09 heights apart); pass a smaller tolerance to tell them
    apart.
    """
    labels = classify_colours(_numpy(frames)[-1])
    size = labels.shape
    need = _min_pixels(size, min_area)
    out = []
    for o in objects:
        colour = OBJECT_COLOURS.index(o["color"])
        near = _box(size, o["position"], tolerance)
        out.append(bool(np.count_nonzero((labels == colour) & near) >= need))
    return out


def _distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Distance of two positions in canvas units: the larger of the x and y differences."""
    return max(abs(a[0] - b[0]), abs(a[1] - b[1]))


def _moved(
    name: str, before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
) -> list[Sequence[float]]:
    """Positions of `name` in the facts `after` that the facts `before` do not have."""
    old = [o["position"] for o in before if o["name"] == name]
    return [
        o["position"]
        for o in after
        if o["name"] == name and all(_distance(o["position"], p) > _SAME_PLACE for p in old)
    ]


def mover_checks(
    video: torch.Tensor | np.ndarray,
    input_frame: torch.Tensor | np.ndarray,
    extra: Mapping[str, Any],
    *,
    tolerance: float = POSITION_TOLERANCE,
    min_area: float = MIN_AREA,
) -> tuple[list[bool], list[bool]]:
    """(visible, placed) for each of `extra["movers"]` in an answer video (uint8 (T, H, W, 3),
    any size), given the input clip's last frame; the rules are in the module doc."""
    labels = classify_colours(video)
    size = labels.shape[1:]
    before = _resample_labels(classify_colours(input_frame), size)
    need = _min_pixels(size, min_area)
    ys = (np.arange(size[0]) + 0.5) / size[0]
    xs = (np.arange(size[1]) + 0.5) / size[1]
    visible, placed = [], []
    for name in extra["movers"]:
        colour = OBJECT_COLOURS.index(name.split()[0])
        # Where the mover ends, and where it was at the end of the input.
        ends = _moved(name, extra["objects"], extra["target_objects"])
        starts = _moved(name, extra["target_objects"], extra["objects"])
        if not ends:  # it ends where it was (a bounce can): both are its last position
            ends = starts = [o["position"] for o in extra["target_objects"] if o["name"] == name]
        own = np.zeros(size, dtype=bool)
        for p in starts:
            own |= _box(size, p, tolerance)
        mine = (labels == colour) & ~((before == colour) & ~own)
        visible.append(bool(mine.reshape(len(labels), -1).sum(1).max() >= need))
        last = mine[-1]
        # A mover whose centre ends off the canvas shows little or nothing of itself.
        gone = all(not (0 <= x <= 1 and 0 <= y <= 1) for x, y in ends)
        if np.count_nonzero(last) < need or not ends:
            placed.append(gone and np.count_nonzero(last) < need)
            continue
        rows, cols = np.nonzero(last)
        centre = (float(xs[cols].mean()), float(ys[rows].mean()))
        on_canvas = [(min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)) for x, y in ends]
        to_end = min(_distance(centre, p) for p in on_canvas)
        far_starts = [q for q in starts if min(_distance(q, p) for p in ends) >= MIN_TRAVEL]
        to_start = min((_distance(centre, q) for q in far_starts), default=math.inf)
        placed.append(to_end <= tolerance and to_end < to_start)
    return visible, placed


# --- one sample ----------------------------------------------------------------------------


def toy_truth(
    extra: Mapping[str, Any],
    answer: str,
    caption: str,
    video: torch.Tensor | np.ndarray | None = None,
    input_frame: torch.Tensor | np.ndarray | None = None,
) -> dict[str, bool | float]:
    """Every truth check of one answer (keys `CHECKS`, rules in the module doc): `answer` is
    the sample's ground-truth caption, `caption` the one to check, `video` the answer video
    (uint8 (T, H, W, 3), any size) and `input_frame` the input clip's last frame (H, W, 3),
    needed with a video. The video checks are NaN without a video."""
    text = {
        "names_movers": names_movers(caption, extra["movers"]),
        "no_absent_objects": not absent_mentions(caption, extra),
        "event_right": event_right(caption, answer, extra),
    }
    result: dict[str, bool | float] = {**text, "caption_right": all(text.values())}
    if video is None:
        return result | dict.fromkeys(VIDEO_CHECKS, math.nan)
    if input_frame is None:
        raise ValueError("the video checks need the input clip's last frame")
    visible, placed = mover_checks(video, input_frame, extra)
    return result | {
        "movers_visible": all(visible),
        "movers_placed": all(placed),
        "video_right": all(visible) and all(placed),
    }
