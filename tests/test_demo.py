"""End to end: the README's main job, and toy-world data through the training Dataset."""

from __future__ import annotations

import html
from collections import Counter

import numpy as np
import pytest

from conftest import differing_files, run_in_two_processes
from vans.cli.main import run
from vans.data.dataset import VideoViews, VNEPDataset, collate_vnep
from vans.data.manifest import load_manifest
from vans.data.toyworld import ToyWorldConfig, write_toyworld
from vans.data.video import PROTOCOL_SIZE, read_video


def check_demo_output(out_dir, stdout: str) -> None:
    """Every answer: printed (question, reasoning, caption, ground truth), a strip GIF and
    MP4 of input | truth | answer that decode, a row on the page; one scene is multi-future."""
    samples = {s.id: s for s in load_manifest(out_dir / "toyworld" / "manifest.jsonl")}
    answered = sorted(p.stem for p in (out_dir / "answers").glob("*.gif"))
    assert answered and {p.stem for p in (out_dir / "answers").glob("*.mp4")} == set(answered)
    scenes = Counter(samples[i].input for i in answered)
    assert max(scenes.values()) >= 2  # one video, two hypothetical questions
    assert len(scenes) == 3
    flat = stdout.replace("\n", " ")
    assert flat.count("[Think]") == len(answered) and flat.count("[Ans]") == len(answered)
    # Every answer's truth checks, and the summary counts the answers that pass the three
    # the demo calls right.
    checks = [line for line in stdout.splitlines() if line.strip().startswith("check:")]
    assert len(checks) == len(answered)
    right = sum(
        all(
            f"{label} yes" in line
            for label in ("names the movers", "nothing absent", "movers visible")
        )
        for line in checks
    )
    assert f"{right} of {len(answered)} answers name the objects that move" in flat
    page = (out_dir / "index.html").read_text()
    for sample_id in answered:
        sample = samples[sample_id]
        assert sample.question in flat and sample.answer in flat
        assert html.escape(sample.question) in page and html.escape(sample.answer) in page
        gif = read_video(out_dir / "answers" / f"{sample_id}.gif")
        mp4 = read_video(out_dir / "answers" / f"{sample_id}.mp4")
        # 33 input frames, then the 17-frame futures; three 64-px panels with 4-px gaps (a
        # GIF merges repeated frames, an MP4 keeps them all).
        assert mp4.frames.shape[0] == 33 + 17 and gif.frames.shape[0] > 17
        assert gif.frames.shape[2] == mp4.frames.shape[2] == 3 * 64 + 2 * 4


def test_demo_answers_with_a_checkpoint(tmp_path, tiny_checkpoint, capsys) -> None:
    args = ["demo", "--out", str(tmp_path), "--checkpoint", str(tiny_checkpoint)]
    assert run([*args, "--scenes", "3"]) == 0
    check_demo_output(tmp_path, capsys.readouterr().out)


def test_demo_names_a_checkpoint_that_is_not_one(tmp_path, capsys) -> None:
    assert run(["demo", "--out", str(tmp_path / "o"), "--checkpoint", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err


def test_toy_world_feeds_the_dataset(tmp_path) -> None:
    manifest = write_toyworld(ToyWorldConfig(num=4, seed=2), tmp_path)
    views = VideoViews(
        vdm_num_frames=33, vdm_size=(64, 64), target_num_frames=17, target_size=(64, 64)
    )
    batch = collate_vnep([VNEPDataset(manifest, views)[i] for i in range(2)])
    assert batch["vdm_frames"].shape == (2, 33, 64, 64, 3)
    assert batch["target_frames"].shape == (2, 17, 64, 64, 3)
    # 33 frames at 8 fps = 4.125 s: the VLM sees 5 frames at 1 fps.
    assert [v.shape[0] for v in batch["vlm_frames"]] == [5, 5]


@pytest.mark.slow
def test_protocol_size_toy_world_through_the_dataset(tmp_path) -> None:
    """Toy world at the paper's 352x640 with the protocol's views (33 frames each)."""
    config = ToyWorldConfig(num=8, size=PROTOCOL_SIZE, target_frames=33)
    dataset = VNEPDataset(write_toyworld(config, tmp_path), VideoViews())
    for item in dataset:
        assert item["vdm_frames"].shape == (33, *PROTOCOL_SIZE, 3)
        assert item["target_frames"].shape == (33, *PROTOCOL_SIZE, 3)
        assert np.ptp(item["target_frames"].numpy()) > 100  # objects, not a blank clip


def test_demo_in_two_processes_writes_the_same_bytes(tmp_path, tiny_checkpoint) -> None:
    """Same seed, same bytes: every file of the demo (answers, page, its toy scenes)."""
    command = ["demo", "--checkpoint", str(tiny_checkpoint), "--scenes", "2"]
    outs = run_in_two_processes(command, tmp_path)
    assert len(list(outs[0].glob("answers/*.mp4"))) >= 3
    assert differing_files(*outs) == []
