"""`vans data build` end to end through the offline backend: toy long videos with COIN,
YouCook2 and ActivityNet annotations (the answers are the ground truth of the next step),
the five real clips with their pairs table, skipped steps, the report, a rerun that calls
nothing, and a run SIGKILLed mid-way that resumes to the very manifest an uninterrupted run
writes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest

from conftest import REAL_CLIPS
from vans.cli.main import run
from vans.data.manifest import validate_manifest
from vans.data.probe import video_duration
from vans.data.schema import TaskType
from vans.data.toyworld.long import TASK, LongVideos, write_long_videos
from vans.data.video import read_video


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> LongVideos:
    return write_long_videos(tmp_path_factory.mktemp("long"), num_videos=2, steps=4)


def build(toy: LongVideos, out: Path, *args: str, annotations: Path | None = None) -> dict:
    command = ["data", "build", "--annotations", str(annotations or toy.annotations)]
    command += ["--videos", str(toy.videos), "--out", str(out), "--truth", str(toy.truth)]
    assert run([*command, *(args or ("--format", "coin"))]) == 0
    return json.loads((out / "report.json").read_text())


def truth_of(colour: str) -> str:
    return f"The {colour} square is placed on top of the tower."


def test_coin_toy_videos_give_the_ground_truth_next_step(toy, tmp_path) -> None:
    report = build(toy, tmp_path / "out")
    manifest = validate_manifest(tmp_path / "out" / "manifest.jsonl")
    assert manifest.problems == []
    assert len(manifest.samples) == 6  # 2 videos x 3 adjacent pairs of 4 steps
    for sample in manifest.samples:
        colours = toy.colours[sample.extra["videos"][0]]
        i, j = sample.extra["steps"]
        assert j == i + 1 and sample.task is TaskType.PROCEDURAL and sample.source == "coin"
        assert sample.answer == truth_of(colours[j])
        assert sample.extra["completed"] == [f"put {c} square on tower" for c in colours[: i + 1]]
        assert sample.question == f"My task: {TASK}. What should I do next?"
        assert truth_of(colours[i]) in sample.reasoning
        assert set(sample.extra["provenance"]) == {"caption_input", "caption_target", "write"}
        # step k of the toy video is [0.5 + 2k, 2 + 2k) s: 12 frames at 8 fps
        assert read_video(sample.target.path).frames.shape[0] == 12
        assert sample.extra["windows"][1] == [0.5 + 2 * j, 2.0 + 2 * j]
    assert report["counts"] == {"videos": 2, "steps": 8, "clips": 8, "captioned": 8,
                                "usable": 8, "pairs": 6, "written": 6, "samples": 6}  # fmt: skip
    assert report["rejections"] == []
    assert report["durations"]["input"]["mean"] == 1.5
    assert report["durations"]["target"]["paper_mean"] == 3.76
    assert report["calls"]["captioner"] == {"cache_hits": 0, "calls": 8, "failed": 0}

    # A rerun cuts nothing and calls nothing: every reply comes from the cache.
    clip = tmp_path / "out" / "clips" / "coin-toytower0-000-000.mp4"
    before = clip.stat().st_mtime_ns
    manifest_bytes = (tmp_path / "out" / "manifest.jsonl").read_bytes()
    again = build(toy, tmp_path / "out")
    assert again["calls"]["captioner"] == {"cache_hits": 8, "calls": 0, "failed": 0}
    assert again["calls"]["writer"] == {"cache_hits": 6, "calls": 0, "failed": 0}
    assert clip.stat().st_mtime_ns == before
    assert (tmp_path / "out" / "manifest.jsonl").read_bytes() == manifest_bytes


def test_steps_too_short_are_skipped_and_recorded(toy, tmp_path) -> None:
    coin = json.loads(toy.annotations.read_text())
    video = coin["database"]["toytower0-000"]
    start = video["annotation"][1]["segment"][0]
    video["annotation"][1]["segment"] = [start, start + 0.5]  # under --min-seconds 1
    del coin["database"]["toytower0-001"]
    path = tmp_path / "coin.json"
    path.write_text(json.dumps(coin))
    report = build(toy, tmp_path / "out", annotations=path)
    colours = toy.colours["toytower0-000"]
    assert report["rejections"] == [{"step": "cut", "item": "video toytower0-000 step 1",
                                     "reason": "0.50 s long, shorter than 1 s"}]  # fmt: skip
    samples = validate_manifest(tmp_path / "out" / "manifest.jsonl").samples
    assert [s.extra["steps"] for s in samples] == [[0, 2], [2, 3]]
    assert samples[0].extra["skipped"] == [f"put {colours[1]} square on tower"]
    assert samples[0].answer == truth_of(colours[2])

    # Two steps in a row missing break the chain at --max-skipped 1.
    video["annotation"][2]["segment"] = [video["annotation"][2]["segment"][0]] * 2
    path.write_text(json.dumps(coin))
    with pytest.raises(Exception, match="segment: needs 0 <= start < end"):
        run(["--debug", "data", "build", "--annotations", str(path), "--format", "coin",
             "--videos", str(toy.videos), "--out", str(tmp_path / "o2")])  # fmt: skip


@pytest.mark.parametrize("fmt", ["youcook2", "activitynet"])
def test_youcook2_and_activitynet_annotations(toy, tmp_path, fmt: str) -> None:
    path = toy.youcook2 if fmt == "youcook2" else toy.activitynet
    report = build(toy, tmp_path / "out", "--format", fmt, annotations=path)
    samples = validate_manifest(tmp_path / "out" / "manifest.jsonl").samples
    assert len(samples) == 6 and report["rejections"] == []
    for sample in samples:
        j = sample.extra["steps"][1]
        assert sample.answer == truth_of(toy.colours[sample.extra["videos"][0]][j])
        assert sample.source == fmt
    if fmt == "activitynet":  # predictive: the question and reasoning come from the input
        assert {s.task for s in samples} == {TaskType.PREDICTIVE}
        assert all(s.question == "What happens next?" for s in samples)
        assert all("leak" in s.extra["provenance"] for s in samples)
        assert report["calls"]["writer"]["calls"] == 12  # 6 written, 6 leak checks


def test_the_real_clips_and_their_pairs_table(tmp_path) -> None:
    out = tmp_path / "out"
    command = ["data", "build", "--annotations", str(REAL_CLIPS / "predictive_pairs.tsv")]
    assert run([*command, "--format", "pairs", "--videos", str(REAL_CLIPS), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    samples = validate_manifest(out / "manifest.jsonl").samples
    names = ["93_172", "173_399", "400_442", "443_475", "476_634"]
    assert [(s.input.path.name, s.target.path.name) for s in samples] == [
        (f"{a}.mp4", f"{b}.mp4") for a, b in pairwise(names)
    ]
    captions = {
        c["clip"]: c["caption"] for c in json.loads((out / "steps/captions.json").read_text())
    }
    for sample in samples:
        assert sample.task is TaskType.PREDICTIVE and sample.input.path.parent == REAL_CLIPS
        stem = sample.target.path.stem
        assert sample.answer == captions[f"pairs-video_split_scene__hZxA1clljA_segments_{stem}"]
        seconds = video_duration(sample.target.path)
        assert sample.answer.startswith(f"A {seconds:.1f}-second ")
    inputs = [video_duration(REAL_CLIPS / f"{n}.mp4") for n in names[:-1]]
    assert report["durations"]["input"]["mean"] == round(sum(inputs) / 4, 3)
    assert report["counts"] == {"rows": 4, "clips": 5, "captioned": 5, "usable": 5,
                                "pairs": 4, "written": 4, "samples": 4}  # fmt: skip


def _build_process(toy: LongVideos, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    command = ["data", "build", "--annotations", str(toy.annotations), "--format", "coin"]
    command += ["--videos", str(toy.videos), "--out", str(out), "--truth", str(toy.truth)]
    return subprocess.Popen(
        [sys.executable, "-c", "from vans.cli.main import main; main()", *command],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.parametrize("killed_when", ["clips", "captions"])
def test_a_sigkilled_run_resumes_to_the_same_manifest(toy, tmp_path, killed_when: str) -> None:
    whole = tmp_path / "whole"
    build(toy, whole)
    out = tmp_path / "killed"
    job = _build_process(toy, out)
    clips = out / "clips"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and job.poll() is None:
        if killed_when == "clips" and len(list(clips.glob("*.mp4"))) >= 2:
            break
        if killed_when == "captions" and (out / "cache.sqlite").exists():
            break
        time.sleep(0.005)
    os.kill(job.pid, signal.SIGKILL)
    assert job.wait() == -signal.SIGKILL
    assert not (out / "manifest.jsonl").exists()  # killed before the end
    build(toy, out)
    assert (out / "manifest.jsonl").read_bytes() == (whole / "manifest.jsonl").read_bytes()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no half-written files


def test_a_still_step_is_judged_unusable_and_skipped(tmp_path) -> None:
    """Without ground truth the offline captioner measures the pixels: a step annotated over
    a pause (nothing moves) is unusable, and the pair jumps over it."""
    toy = write_long_videos(tmp_path / "toy", num_videos=1, steps=2, gap_seconds=1.2)
    coin = json.loads(toy.annotations.read_text())
    steps = coin["database"]["toytower0-000"]["annotation"]
    pause = [steps[0]["segment"][1] + 0.05, steps[1]["segment"][0] - 0.05]  # 1.1 s, still
    steps.insert(1, {"segment": pause, "label": "wait"})
    (tmp_path / "coin.json").write_text(json.dumps(coin))
    out = tmp_path / "out"
    command = ["data", "build", "--annotations", str(tmp_path / "coin.json"), "--format", "coin"]
    assert run([*command, "--videos", str(toy.videos), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["rejections"] == [{"step": "usable", "item": "clip coin-toytower0-000-001",
                                     "reason": "nearly nothing moves (a still)"}]  # fmt: skip
    (sample,) = validate_manifest(out / "manifest.jsonl").samples
    assert sample.extra["steps"] == [0, 2] and sample.extra["skipped"] == ["wait"]
    assert sample.answer.startswith("A 1.5-second ") and "motion" in sample.answer


def test_missing_videos_and_prompt_overrides(toy, tmp_path, capsys) -> None:
    coin = json.loads(toy.annotations.read_text())
    coin["database"]["not-downloaded"] = {"annotation": [{"segment": [0, 2], "label": "x"}]}
    (tmp_path / "coin.json").write_text(json.dumps(coin))
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    custom = "Describe clips.\n===\nDescribe this $duration s clip."
    (prompts / "caption.txt").write_text(custom)
    report = build(toy, tmp_path / "out", "--format", "coin", "--prompts", str(prompts),
                   annotations=tmp_path / "coin.json")  # fmt: skip
    assert report["rejections"] == [{"step": "cut", "item": "video not-downloaded",
                                     "reason": "video file not found under --videos"}]  # fmt: skip
    sample = validate_manifest(tmp_path / "out" / "manifest.jsonl").samples[0]
    digest = sample.extra["provenance"]["caption_input"]["prompt"]
    assert digest == "caption.txt@" + hashlib.sha256(custom.encode()).hexdigest()[:12]
    default = build(toy, tmp_path / "default")
    default_sample = validate_manifest(tmp_path / "default" / "manifest.jsonl").samples[0]
    assert default_sample.extra["provenance"]["caption_input"]["prompt"] != digest
    assert default["calls"]["captioner"]["calls"] == 8  # a changed prompt asks anew

    (prompts / "caption.txt").write_text("no separator line")
    command = ["data", "build", "--annotations", str(toy.annotations), "--format", "coin"]
    command += ["--videos", str(toy.videos), "--out", str(tmp_path / "bad")]
    assert run([*command, "--prompts", str(prompts)]) == 2  # a one-line error, no traceback
    error = capsys.readouterr().err
    assert f"{prompts / 'caption.txt'}: needs a system part, a line '===', then the user" in error
