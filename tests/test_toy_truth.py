"""Truth checks of toy-world answers: the ground truth passes every check in every family
(from disk and in memory, square and landscape, resized), deliberately wrong captions and
videos fail, and the pixel rules by hand."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy import ndimage

from vans.data.manifest import load_manifest
from vans.data.toyworld import FAMILIES, ToyWorldConfig, iter_samples, write_toyworld
from vans.data.toyworld.render import BACKGROUND, COLORS, FLOOR, SCENERY, SHAPES
from vans.data.video import read_video, resize_center_crop
from vans.evaluation.toy_truth import (
    CHECKS,
    COLOUR_CUTOFF,
    MIN_TRAVEL,
    NOTHING,
    OBJECT_COLOURS,
    TEXT_CHECKS,
    VIDEO_CHECKS,
    classify_colours,
    colours_visible,
    directions,
    event_label,
    is_toy_sample,
    mentions,
    mover_checks,
    toy_truth,
)

SIZES = {"square": (64, 64), "landscape": (64, 112)}


@dataclass
class Case:
    """One generated sample: its text and truth, and its clips from disk and from memory."""

    id: str
    answer: str
    extra: dict[str, Any]
    disk_input: torch.Tensor
    disk_target: torch.Tensor
    input_frames: np.ndarray
    target_frames: np.ndarray


def _cases(config: ToyWorldConfig, out: Path) -> list[Case]:
    memory = {s.id: s for s in iter_samples(config)}
    cases = []
    for s in load_manifest(write_toyworld(config, out)):
        m = memory[s.id]
        cases.append(
            Case(
                s.id,
                s.answer,
                s.extra,
                read_video(s.input.path).frames,
                read_video(s.target.path).frames,
                m.input_frames,
                m.target_frames,
            )
        )
    return cases


@pytest.fixture(scope="module", params=list(SIZES))
def cases(request, tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    # Two rotations of the 7 families with every hypothetical future: 20 samples.
    config = ToyWorldConfig(num=20, seed=11, size=SIZES[request.param], multi_future=1.0)
    return _cases(config, tmp_path_factory.mktemp(request.param))


def _all_true(checks: dict[str, bool | float]) -> bool:
    return set(checks) == set(CHECKS) and all(v is True for v in checks.values())


# --- the ground truth passes ---------------------------------------------------------------


def test_ground_truth_passes_every_check_in_every_family(cases: list[Case]) -> None:
    assert {c.extra["family"] for c in cases} == set(FAMILIES)
    assert sum(c.extra["hypothesis"] is not None for c in cases) == 6  # collision/bounce/fall
    for c in cases:
        assert is_toy_sample(c.extra)
        from_disk = toy_truth(c.extra, c.answer, c.answer, c.disk_target, c.disk_input[-1])
        in_memory = toy_truth(c.extra, c.answer, c.answer, c.target_frames, c.input_frames[-1])
        assert _all_true(from_disk), (c.id, from_disk)
        assert _all_true(in_memory), (c.id, in_memory)


def test_ground_truth_passes_at_another_answer_size(cases: list[Case]) -> None:
    for c in cases:
        h, w = c.disk_target.shape[1:3]
        bigger = resize_center_crop(c.disk_target, (2 * h, 2 * w))
        checks = toy_truth(c.extra, c.answer, c.answer, bigger, c.disk_input[-1])
        assert _all_true(checks), (c.id, checks)


def test_every_object_of_a_truth_clip_is_visible_where_its_facts_say(cases: list[Case]) -> None:
    for c in cases:
        for clip, facts in ((c.disk_input, "objects"), (c.disk_target, "target_objects")):
            objects = c.extra[facts]
            on_canvas = [0 <= o["position"][0] <= 1 for o in objects]
            # An object whose centre has left the canvas may still show its edge.
            seen = colours_visible(clip, objects)
            assert all(v for v, on in zip(seen, on_canvas, strict=True) if on), (c.id, facts)
            assert not any(colours_visible(np.zeros_like(clip), objects))


def test_without_a_video_the_video_checks_do_not_apply(cases: list[Case]) -> None:
    c = cases[0]
    checks = toy_truth(c.extra, c.answer, c.answer)
    assert all(checks[k] is True for k in TEXT_CHECKS)
    assert all(math.isnan(checks[k]) for k in VIDEO_CHECKS)
    with pytest.raises(ValueError, match="input clip's last frame"):
        toy_truth(c.extra, c.answer, c.answer, c.disk_target)
    assert not is_toy_sample({"family": "collision"}) and not is_toy_sample(None)


# --- wrong captions fail -------------------------------------------------------------------


def test_a_caption_naming_another_colour_fails(cases: list[Case]) -> None:
    for c in cases:
        shown = {o["color"] for o in (*c.extra["objects"], *c.extra["target_objects"])}
        other = next(colour for colour in COLORS if colour not in shown)
        mover_colour = c.extra["movers"][0].split()[0]
        caption = re.sub(rf"\b{mover_colour}\b", other, c.answer)
        checks = toy_truth(c.extra, c.answer, caption)
        assert not checks["names_movers"] and not checks["no_absent_objects"], caption
        assert not checks["caption_right"]


def test_a_caption_naming_an_absent_object_fails(cases: list[Case]) -> None:
    for c in cases:
        present = {o["name"] for o in (*c.extra["objects"], *c.extra["target_objects"])}
        absent = next(f"{k} {s}" for k in COLORS for s in SHAPES if f"{k} {s}" not in present)
        caption = f"{c.answer} Then the {absent} rolls away."
        checks = toy_truth(c.extra, c.answer, caption)
        assert checks["names_movers"] and not checks["no_absent_objects"], caption
        assert not checks["caption_right"]


def test_the_opposite_direction_fails(cases: list[Case]) -> None:
    swap = {"left": "right", "right": "left"}
    swapped = 0
    for c in cases:
        if not directions(c.answer):
            continue
        caption = re.sub(r"\b(left|right)\b", lambda m: swap[m.group(1)], c.answer)
        checks = toy_truth(c.extra, c.answer, caption)
        assert checks["names_movers"] and not checks["event_right"], caption
        swapped += 1
    assert swapped >= 8
    # Where the truth names no direction (a fall), a direction against the travel fails.
    fall = next(c for c in cases if c.extra["family"] == "fall" and not directions(c.answer))
    travel = "left" if fall.extra["facts"]["leftward"] else "right"
    assert toy_truth(fall.extra, fall.answer, f"{fall.answer} It moves {travel}.")["event_right"]
    wrong = f"{fall.answer} It moves {swap[travel]}."
    assert not toy_truth(fall.extra, fall.answer, wrong)["event_right"]


def test_the_hypothetical_answer_for_the_factual_question_fails(cases: list[Case]) -> None:
    by_scene: dict[str, list[Case]] = {}
    for c in cases:
        by_scene.setdefault(c.extra["scene"], []).append(c)
    pairs = [futures for futures in by_scene.values() if len(futures) == 2]
    assert len(pairs) == 6
    for factual, hypothetical in pairs:
        for asked, given in ((factual, hypothetical), (hypothetical, factual)):
            checks = toy_truth(asked.extra, asked.answer, given.answer)
            assert not checks["event_right"], (asked.answer, given.answer)


def test_every_multiple_choice_distractor_fails(cases: list[Case]) -> None:
    for c in cases:
        mcq = c.extra["mcq"][0]
        assert mcq["options"][mcq["answer"]] == c.answer
        for i, option in enumerate(mcq["options"]):
            if i != mcq["answer"]:
                assert not toy_truth(c.extra, c.answer, option)["caption_right"], option


# --- wrong videos fail ---------------------------------------------------------------------


def _start_and_end(extra: dict[str, Any], name: str) -> tuple[list[list[float]], list[float]]:
    """A mover's places at the input's end (those the target no longer has, if its name is
    not unique) and its place at the target's end."""
    before = [o["position"] for o in extra["objects"] if o["name"] == name]
    after = [o["position"] for o in extra["target_objects"] if o["name"] == name]
    starts = [p for p in before if p not in after] or before
    ends = [p for p in after if p not in before] or after
    return starts, ends[0]


def _travel(extra: dict[str, Any]) -> float:
    """The farthest any mover moves between the input's and the target's end (in x or y)."""
    far = 0.0
    for name in extra["movers"]:
        starts, end = _start_and_end(extra, name)
        moves = [max(abs(a - b) for a, b in zip(p, end, strict=True)) for p in starts]
        far = max(far, min(moves, default=math.inf))
    return far


def test_a_static_video_fails_wherever_the_truth_moves(cases: list[Case]) -> None:
    moving = 0
    for c in cases:
        static = c.disk_input[-1:].repeat(c.disk_target.shape[0], 1, 1, 1)
        checks = toy_truth(c.extra, c.answer, c.answer, static, c.disk_input[-1])
        if _travel(c.extra) >= 2 * MIN_TRAVEL:
            assert not checks["movers_placed"] and not checks["video_right"], c.id
            moving += 1
    assert moving >= 18  # of 20: a rebounding striker or a bounce can end near its start


def test_a_mover_painted_in_the_wrong_place_fails(cases: list[Case]) -> None:
    moved = 0
    for c in cases:
        video = c.target_frames.copy()
        last, before = video[-1], c.input_frames[-1]
        name = c.extra["movers"][0]
        rgb = np.array(COLORS[name.split()[0]], dtype=np.uint8)
        # The mover in the truth's last frame: the blob of its colour nearest its end.
        blobs, _ = ndimage.label((last == rgb).all(-1))
        rows, cols = np.nonzero(blobs)
        if not len(rows):  # it has rolled off the canvas
            continue
        x, y = _start_and_end(c.extra, name)[1]
        h, w = blobs.shape
        nearest = np.argmin(((cols + 0.5) / w - x) ** 2 + ((rows + 0.5) / h - y) ** 2)
        mover = blobs == blobs[rows[nearest], cols[nearest]]
        last[mover] = BACKGROUND
        # 0.35 of the canvas up or down, toward the middle (no wrapping round the edge).
        last[np.roll(mover, round((0.35 if y < 0.5 else -0.35) * h), axis=0)] = rgb
        visible, placed = mover_checks(video, before, c.extra)
        assert visible[0] and not placed[0], c.id
        assert not toy_truth(c.extra, c.answer, c.answer, video, before)["video_right"]
        moved += 1
    assert moved >= 18  # of 20: a rolling object can leave the canvas


def test_a_blank_video_fails(cases: list[Case]) -> None:
    for c in cases:
        blank = np.empty_like(c.target_frames)
        blank[:] = BACKGROUND
        checks = toy_truth(c.extra, c.answer, c.answer, blank, c.input_frames[-1])
        assert not checks["movers_visible"] and not checks["video_right"]


# --- by hand -------------------------------------------------------------------------------


def test_colour_cutoff_is_half_the_closest_pair_of_palette_colours() -> None:
    # Yellow (240, 210, 40) and orange (245, 140, 30) differ by (5, 70, 10).
    assert pytest.approx(math.sqrt(5**2 + 70**2 + 10**2) / 2) == COLOUR_CUTOFF


def test_classify_colours_by_hand() -> None:
    red, purple = COLORS["red"], COLORS["purple"]
    pixels = [
        red,  # exact: red
        (red[0] + 20, red[1] + 20, red[2] + 20),  # 34.6 from red: still red
        (red[0] + 21, red[1] + 21, red[2] + 21),  # 36.4 from red: nothing
        (135, 70, 140),  # a red/blue blur, 74 from its nearest colour (purple): nothing
        (purple[0] - 10, purple[1], purple[2]),  # purple
        BACKGROUND,
        FLOOR,
        SCENERY,
        (152, 148, 150),  # near the scenery grey: nothing, though no colour is nearer
        COLORS["orange"],
    ]
    frame = np.array(pixels, dtype=np.uint8).reshape(2, 5, 3)
    labels = classify_colours(torch.from_numpy(frame))
    r, p, o = (OBJECT_COLOURS.index(c) for c in ("red", "purple", "orange"))
    n = NOTHING
    assert labels.tolist() == [[r, r, n, n, p], [n, n, n, n, o]]
    assert classify_colours(np.stack([frame, frame])).shape == (2, 2, 5)
    with pytest.raises(ValueError, match="uint8"):
        classify_colours(frame.astype(np.float32))


def _canvas(h: int = 20, w: int = 40) -> np.ndarray:
    frame = np.empty((h, w, 3), dtype=np.uint8)
    frame[:] = BACKGROUND
    return frame


def test_colours_visible_by_hand() -> None:
    frame = _canvas()
    frame[8:11, 14:17] = COLORS["red"]  # 9 pixels centred at x = 15.5 / 40, y = 9.5 / 20
    red = {"color": "red", "position": [15.5 / 40, 9.5 / 20]}
    blue = {"color": "blue", "position": red["position"]}
    # 0.12 of a 40-pixel width is 4.8 pixels; the square's nearest pixel centre is 5.4
    # pixels from `far` and 4.6 from `near`.
    far = {"color": "red", "position": [(16.5 + 5.4) / 40, 9.5 / 20]}
    near = {"color": "red", "position": [(16.5 + 4.6) / 40, 9.5 / 20]}
    video = np.stack([_canvas(), frame])  # only the last frame counts
    assert colours_visible(video, [red, blue, far, near]) == [True, False, False, True]
    # At least min_area x H**2 pixels: the 9 are enough for 8.5 of 400, not for 9.5.
    assert colours_visible(video, [red], min_area=8.5 / 400) == [True]
    assert colours_visible(video, [red], min_area=9.5 / 400) == [False]
    assert colours_visible(video[:1], [red]) == [False]


def _square(frame: np.ndarray, x: float, colour: str = "red") -> np.ndarray:
    """A 4x4 square of `colour` centred at x (canvas units), y = 0.5, on a 20x40 canvas."""
    left = round(x * 40) - 2
    frame[8:12, left : left + 4] = COLORS[colour]
    return frame


def test_mover_placement_by_hand() -> None:
    start, end = 0.25, 0.75
    extra = {
        "movers": ["red circle"],
        "objects": [{"name": "red circle", "position": [start, 0.5]}],
        "target_objects": [{"name": "red circle", "position": [end, 0.5]}],
    }
    bin_x = 0.85  # a red bin 0.1 from the mover's end: not the mover, so never counted
    before = _square(_square(_canvas(), start), bin_x)

    def judge(*xs: float) -> tuple[bool, bool]:
        frame = _square(_canvas(), bin_x)
        for x in xs:
            _square(frame, x)
        visible, placed = mover_checks(np.stack([frame, frame]), before, extra)
        return visible[0], placed[0]

    assert judge(end) == (True, True)
    assert judge(end - 0.1) == (True, True)  # within 0.12 of the end
    assert judge(end - 0.2) == (True, False)  # 0.2 from the end
    assert judge(start) == (True, False)  # left where it was: its own place still counts
    assert judge(start, end) == (True, False)  # its centre is halfway
    assert judge() == (False, False)  # only the bin is red
    # 0.02 of travel is below MIN_TRAVEL: staying put is as good as the truth.
    small = {**extra, "target_objects": [{"name": "red circle", "position": [0.27, 0.5]}]}
    assert mover_checks(before[None], before, small) == ([True], [True])


def test_mentions_and_event_labels_by_hand() -> None:
    text = (
        "The Orange blocks hit a red circle, the circle and a reddish square near the green bins."
    )
    assert mentions(text) == ["orange square", "red circle", "green bin"]
    assert directions("It rolls leftwards, not to the right; leftmost is no direction.") == {
        "left",
        "right",
    }
    assert event_label("collision", "The a hits the b and rebounds to the left.") == "bounces back"
    assert event_label("collision", "The a strikes the b; the a stops and the b moves left.") == (
        "slides on"
    )
    assert event_label("fall", "The a slides on without falling.") == "keeps sliding"
    assert event_label("fall", "The a slides along the ledge and falls off.") == "falls"
    assert event_label("stack", "A green block goes on the tower.") == "placed green"
    assert event_label("sort", "The red square is put in the red bin.") == "red square into red bin"
    assert event_label("fill", "Next, a blue layer is poured on top.") == "poured blue"
    assert event_label("fill", "The top layer is poured out.") == "emptied"
    assert event_label("push", "Nothing happens.") is None
