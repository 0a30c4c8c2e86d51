"""The toy world: determinism, captions that agree with the pixels, multi-future,
held-out compositions, config errors and the CLI."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest

from conftest import differing_files, run_in_two_processes
from vans.cli.main import run
from vans.data.manifest import load_manifest
from vans.data.toyworld import FAMILIES, ToyWorldConfig, ToyWorldError, iter_samples
from vans.data.toyworld.render import COLORS
from vans.data.video import read_video

SMALL = ToyWorldConfig(num=42, seed=3, multi_future=1.0)


def _color_mask(frames: np.ndarray, color: str) -> np.ndarray:
    return np.all(frames == np.array(COLORS[color], dtype=np.uint8), axis=-1)


def _changed_colors(target: np.ndarray) -> set[str]:
    """Object colours of pixels that differ anywhere within the target clip."""
    changed = np.any(target != target[:1], axis=(0, -1))
    colors = set()
    for name in COLORS:
        if np.any(_color_mask(target, name).any(axis=0) & changed):
            colors.add(name)
    return colors


def _centroid_x(frame: np.ndarray, color: str) -> tuple[float, int]:
    _, xs = np.nonzero(_color_mask(frame, color))
    return (float(xs.mean()) if len(xs) else float("nan")), len(xs)


def test_same_seed_same_samples_and_prefix_independent() -> None:
    a = list(iter_samples(SMALL))
    b = list(iter_samples(SMALL))
    shorter = list(iter_samples(replace(SMALL, num=10)))
    for x, y in zip(a, b, strict=True):
        assert (x.id, x.question, x.answer, x.reasoning, x.extra) == (
            y.id,
            y.question,
            y.answer,
            y.reasoning,
            y.extra,
        )
        np.testing.assert_array_equal(x.input_frames, y.input_frames)
        np.testing.assert_array_equal(x.target_frames, y.target_frames)
    # Sample i does not depend on how many samples are asked for.
    for x, y in zip(shorter, a[:10], strict=True):
        assert x.answer == y.answer
        np.testing.assert_array_equal(x.target_frames, y.target_frames)
    other = list(iter_samples(replace(SMALL, seed=4, num=10)))
    assert [s.answer for s in other] != [s.answer for s in a[:10]]


def test_every_family_and_both_tasks_appear_with_requested_shapes() -> None:
    samples = list(iter_samples(SMALL))
    assert len(samples) == SMALL.num
    assert {s.extra["family"] for s in samples} == set(FAMILIES)
    assert {s.task for s in samples} == {"procedural", "predictive"}
    for s in samples:
        assert s.input_frames.shape == (33, 64, 64, 3) and s.input_frames.dtype == np.uint8
        assert s.target_frames.shape == (17, 64, 64, 3)
        assert s.question.strip() and s.answer.strip() and s.reasoning.strip()


def test_captions_agree_with_the_rendered_motion() -> None:
    """The objects the answer names are the ones whose pixels change in the target clip."""
    for s in iter_samples(replace(SMALL, num=70)):
        named_colors = {m.split()[0] for m in s.extra["movers"]}
        for mover in s.extra["movers"]:
            assert mover in s.answer, (s.id, mover, s.answer)
        assert _changed_colors(s.target_frames) == named_colors, (s.id, s.answer)


@pytest.mark.parametrize("family", ["collision", "bounce"])
def test_direction_words_match_the_final_motion(family: str) -> None:
    """ "... to the left/right" is the direction the last-named mover travels at the end."""
    config = replace(SMALL, num=24, families=(family,))
    checked = 0
    for s in iter_samples(config):
        match = re.search(r"to the (left|right)", s.answer)
        if match is None:
            continue
        color = s.extra["movers"][-1].split()[0]
        full = _centroid_x(s.input_frames[-1], color)[1]
        # Frames where the object is whole (not leaving the canvas): rasterising at sub-pixel
        # positions changes its pixel count by a few.
        centroids = [_centroid_x(f, color) for f in s.target_frames]
        visible = [x for x, count in centroids if count >= 0.85 * full]
        assert len(visible) >= 3, s.id
        step = visible[-1] - visible[-3]
        assert (step > 0) == (match.group(1) == "right"), (s.id, s.answer, step)
        checked += 1
    assert checked >= 10


def test_multi_future_shares_the_input_and_differs_in_the_answer() -> None:
    samples = list(iter_samples(SMALL))
    by_scene: dict[str, list] = {}
    for s in samples:
        by_scene.setdefault(s.scene_id, []).append(s)
    groups = [g for g in by_scene.values() if len(g) > 1]
    assert len(groups) >= 5
    for factual, hypothetical in groups:
        np.testing.assert_array_equal(factual.input_frames, hypothetical.input_frames)
        assert not np.array_equal(factual.target_frames, hypothetical.target_frames)
        assert factual.answer != hypothetical.answer
        assert factual.extra["hypothesis"] is None and hypothetical.extra["hypothesis"]
        assert hypothetical.question.startswith(("What if", "Suppose"))


def test_no_multi_future_when_disabled() -> None:
    samples = list(iter_samples(replace(SMALL, multi_future=0.0)))
    assert len({s.scene_id for s in samples}) == len(samples)


def test_held_out_pairs_are_excluded_or_required() -> None:
    held = ("red circle", "blue square")
    train = list(iter_samples(replace(SMALL, num=60, held_out=held)))
    for s in train:
        assert not {o["name"] for o in s.extra["objects"]} & set(held), s.id
    test = list(iter_samples(replace(SMALL, num=30, held_out=held, held_out_mode="only")))
    assert {s.extra["family"] for s in test} == set(FAMILIES) - {"fill"}
    for s in test:
        assert set(s.extra["movers"]) & set(held), (s.id, s.extra["movers"])


def test_multiple_choice_questions_point_at_the_truth() -> None:
    for s in iter_samples(replace(SMALL, num=21)):
        nxt, seen = s.extra["mcq"]
        assert nxt["options"][nxt["answer"]] == s.answer
        assert len(set(nxt["options"])) == len(nxt["options"]) >= 3
        names = {o["name"] for o in s.extra["objects"]}
        assert seen["options"][seen["answer"]] in names
        assert not set(seen["options"]) - {seen["options"][seen["answer"]]} & names


def test_large_canvas_keeps_shapes_round() -> None:
    (s,) = iter_samples(ToyWorldConfig(num=1, size=(352, 640), families=("bounce",)))
    assert s.target_frames.shape == (17, 352, 640, 3)
    color = s.extra["movers"][0].split()[0]
    ys, xs = np.nonzero(_color_mask(s.input_frames[0], color))
    # Object extents scale with the canvas height: 2 * 0.085 * 352 ~ 60 px on both axes.
    assert 50 <= np.ptp(xs) + 1 <= 62 and 50 <= np.ptp(ys) + 1 <= 62


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"size": (64, 32)}, "size"),
        ({"size": (400, 700)}, "size"),
        ({"families": ("collision", "explode")}, "families"),
        ({"held_out": ("pink circle",)}, "held_out"),
        ({"held_out_mode": "only"}, "held_out_mode"),
        ({"input_frames": 8}, "input_frames"),
        ({"num": 0}, "num"),
    ],
)
def test_bad_config_names_the_field(changes: dict, field: str) -> None:
    with pytest.raises(ToyWorldError, match=field):
        ToyWorldConfig(**changes)


def test_cli_writes_a_valid_decodable_data_set(tmp_path, capsys) -> None:
    out = tmp_path / "toy"
    args = ["data", "toyworld", "--out", str(out), "--num", "5", "--seed", "1", "--size", "48x80"]
    assert run(args) == 0
    manifest = out / "manifest.jsonl"
    assert run(["data", "validate", str(manifest)]) == 0
    assert "5 samples OK" in capsys.readouterr().out
    samples = load_manifest(manifest)
    expected = {s.id: s for s in iter_samples(ToyWorldConfig(num=5, seed=1, size=(48, 80)))}
    for s in samples:
        target = read_video(s.target.path)
        assert target.frames.shape == (17, 48, 80, 3) and target.fps == pytest.approx(8.0)
        # H.264 is lossy; flat toy colours survive it closely.
        err = np.abs(target.frames.numpy().astype(int) - expected[s.id].target_frames).mean()
        assert err < 4.0, (s.id, err)
        assert s.answer == expected[s.id].answer and s.source == "toyworld"
    # Same command, same bytes.
    again = tmp_path / "again"
    assert run([*args[:3], str(again), *args[4:]]) == 0
    assert (again / "manifest.jsonl").read_text() == manifest.read_text()


def test_cli_bad_option_is_one_clear_error(tmp_path, capsys) -> None:
    code = run(["data", "toyworld", "--out", str(tmp_path), "--size", "64by64"])
    err = capsys.readouterr().err
    assert code == 2 and "--size" in err and "Traceback" not in err
    code = run(["data", "toyworld", "--out", str(tmp_path), "--families", "nope"])
    err = capsys.readouterr().err
    assert code == 2 and "families" in err and "Traceback" not in err


def test_two_processes_write_the_same_bytes(tmp_path) -> None:
    """Same seed, same bytes, across processes running at once (the MP4 encoder included)."""
    a, b = run_in_two_processes(["data", "toyworld", "--num", "6", "--seed", "5"], tmp_path)
    assert len(list(a.rglob("*.mp4"))) >= 12
    assert differing_files(a, b) == []
