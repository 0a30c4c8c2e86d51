"""`vans data build` end to end through the offline backend: toy long videos with COIN,
YouCook2 and ActivityNet annotations (the answers are the ground truth of the next step),
the five real clips with their pairs table, skipped steps, the report, a rerun that calls
nothing, and a run SIGKILLed mid-way that resumes to the very manifest an uninterrupted run
writes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest

from chat_server import Behaviour, chat_server
from conftest import REAL_CLIPS, needs_real_clips
from vans.cli.main import run
from vans.data.manifest import validate_manifest
from vans.data.probe import video_duration
from vans.data.schema import TaskType
from vans.data.toyworld.long import RECIPE_TYPE, TASK, LongVideos, write_long_videos
from vans.data.video import read_video
from vans.vansdata.records import safe_name


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
    # --out has what a file:// URL percent-encodes (a space, '%', '#', non-ASCII): the clips'
    # cache keys must still read the clips
    out = tmp_path / "my out %20 #1 é"
    report = build(toy, out)
    manifest = validate_manifest(out / "manifest.jsonl")
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
    assert report["rejections"] == [] and report["complete"] is True
    assert report["durations"]["input"]["mean"] == 1.5
    assert report["durations"]["target"]["paper_mean"] == 3.76
    assert report["calls"]["captioner"] == {"cache_hits": 0, "calls": 8, "failed": 0}

    # A rerun cuts nothing and calls nothing: every reply comes from the cache.
    (clip,) = (out / "clips").glob("coin-toytower0-000-000-*.mp4")
    before = clip.stat().st_mtime_ns
    manifest_bytes = (out / "manifest.jsonl").read_bytes()
    again = build(toy, out)
    assert again["calls"]["captioner"] == {"cache_hits": 8, "calls": 0, "failed": 0}
    assert again["calls"]["writer"] == {"cache_hits": 6, "calls": 0, "failed": 0}
    assert clip.stat().st_mtime_ns == before
    assert (out / "manifest.jsonl").read_bytes() == manifest_bytes


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


def test_more_skipped_steps_than_max_skipped_break_the_chain(toy, tmp_path) -> None:
    coin = json.loads(toy.annotations.read_text())
    steps = coin["database"]["toytower0-000"]["annotation"]
    for k in (1, 2):  # two steps in a row too short to cut
        steps[k]["segment"] = [steps[k]["segment"][0], steps[k]["segment"][0] + 0.5]
    path = tmp_path / "coin.json"
    path.write_text(json.dumps(coin))
    report = build(toy, tmp_path / "one", annotations=path)  # --max-skipped 1
    assert report["rejections"][-1] == {"step": "pair", "item": "video toytower0-000 steps 0->3",
                                        "reason": "2 steps between, over 1"}  # fmt: skip
    samples = validate_manifest(tmp_path / "one" / "manifest.jsonl").samples
    assert {s.extra["videos"][0] for s in samples} == {"toytower0-001"}
    report = build(toy, tmp_path / "two", "--format", "coin", "--max-skipped", "2",
                   annotations=path)  # fmt: skip
    samples = validate_manifest(tmp_path / "two" / "manifest.jsonl").samples
    (jump,) = [s for s in samples if s.extra["videos"][0] == "toytower0-000"]
    assert jump.extra["steps"] == [0, 3] and len(jump.extra["skipped"]) == 2


def test_overlapping_events_pass_over_to_the_next_that_does_not(toy, tmp_path) -> None:
    """ActivityNet's events overlap: a target starting over --max-overlap (1 s) before its
    input ends is passed over (not skipped) for the next event that starts late enough."""
    events = {"toytower0-000": {"duration": 8.5, "timestamps": [[0.5, 4], [2.5, 6], [4.5, 8]],
              "sentences": ["one", "two", "three"]}}  # fmt: skip
    path = tmp_path / "anet.json"
    path.write_text(json.dumps(events))
    report = build(toy, tmp_path / "out", "--format", "activitynet", annotations=path)
    (sample,) = validate_manifest(tmp_path / "out" / "manifest.jsonl").samples
    assert sample.extra["steps"] == [0, 2] and sample.extra["skipped"] == []
    (rejection,) = report["rejections"]
    assert rejection["item"] == "video toytower0-000 step 1"
    assert rejection["reason"] == "every later step overlaps it by over 1 s"
    # --max-overlap 2: event 1 (starting 1.5 s before event 0 ends) is a target again
    build(toy, tmp_path / "wide", "--format", "activitynet", "--max-overlap", "2",
          annotations=path)  # fmt: skip
    samples = validate_manifest(tmp_path / "wide" / "manifest.jsonl").samples
    assert [s.extra["steps"] for s in samples] == [[0, 1], [1, 2]]


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
    if fmt == "youcook2":  # the task is the recipe type's number
        assert {s.extra["task_name"] for s in samples} == {RECIPE_TYPE}
    if fmt == "activitynet":  # predictive: the question and reasoning come from the input
        assert {s.task for s in samples} == {TaskType.PREDICTIVE}
        assert all(s.question == "What happens next?" for s in samples)
        assert all("leak" in s.extra["provenance"] for s in samples)
        assert report["calls"]["writer"]["calls"] == 12  # 6 written, 6 leak checks


def test_youcook2_task_names_name_the_recipe_for_the_writer(toy, tmp_path) -> None:
    build(toy, tmp_path / "out", "--format", "youcook2", "--task-names", str(toy.task_names),
          annotations=toy.youcook2)  # fmt: skip
    samples = validate_manifest(tmp_path / "out" / "manifest.jsonl").samples
    assert {s.extra["task_name"] for s in samples} == {TASK}
    # the writer is given the name (the offline writer puts the task it is given in the question)
    assert {s.question for s in samples} == {f"My task: {TASK}. What should I do next?"}


@needs_real_clips
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
        written = f"video_split_scene/_hZxA1clljA/segments/{stem}"
        assert sample.answer == captions[f"pairs-{safe_name(written)}"]
        seconds = video_duration(sample.target.path)
        assert sample.answer.startswith(f"A {seconds:.1f}-second ")
    inputs = [video_duration(REAL_CLIPS / f"{n}.mp4") for n in names[:-1]]
    assert report["durations"]["input"]["mean"] == round(sum(inputs) / 4, 3)
    assert report["counts"] == {"rows": 4, "clips": 5, "captioned": 5, "usable": 5,
                                "pairs": 4, "written": 4, "samples": 4}  # fmt: skip


def _build_process(command: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return subprocess.Popen(
        [sys.executable, "-c", "from vans.cli.main import main; main()", *command],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _cached_replies(out: Path) -> int:
    try:
        with sqlite3.connect(out / "cache.sqlite", timeout=30) as db:
            return db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet, or its table not yet
        return 0


# (format, the phase killed in, the role served over HTTP, (replies cached when the kill is
# sent, replies in a whole run)): the role behind the phase answers through a local server
# taking 50 ms per request, one request per chunk, so the kill lands inside the phase. The
# toy has 8 clips and 6 pairs; the other role is offline.
KILLS = [
    ("coin", "cut", None, None),
    ("coin", "caption", "captioner", (3, 8 + 6)),
    ("coin", "write", "writer", (8 + 2, 8 + 6)),
    ("activitynet", "leak check", "writer", (8 + 6 + 3, 8 + 6 + 6)),
]


@pytest.mark.parametrize(("fmt", "phase", "served", "replies"), KILLS)
def test_a_sigkilled_run_resumes_to_the_same_manifest(
    toy, tmp_path, fmt, phase, served, replies
) -> None:
    annotations = toy.activitynet if fmt == "activitynet" else toy.annotations
    with chat_server(Behaviour(delay_s=0.05)) as (url, _):
        roles = {"captioner": "offline", "writer": "offline"}
        if served:
            roles[served] = f"{url}#m"
        command = ["data", "build", "--annotations", str(annotations), "--format", fmt]
        command += ["--videos", str(toy.videos), "--truth", str(toy.truth), "--chunk", "1"]
        command += ["--captioner", roles["captioner"], "--writer", roles["writer"]]
        whole, out = tmp_path / "whole", tmp_path / "killed"
        assert run([*command, "--out", str(whole)]) == 0
        job = _build_process([*command, "--out", str(out)])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job.poll() is None:
            if phase == "cut" and len(list((out / "clips").glob("*.mp4"))) >= 2:
                break
            if replies and _cached_replies(out) >= replies[0]:
                break
            time.sleep(0.005)
        os.kill(job.pid, signal.SIGKILL)
        assert job.wait() == -signal.SIGKILL
        assert not (out / "manifest.jsonl").exists()  # killed before the end
        if replies:  # ... and in the phase meant
            assert replies[0] <= _cached_replies(out) < replies[1]
        # what a kill during write_mp4 leaves (`vans.io.atomic_file`): removed on resuming
        stale = out / "clips" / ".coin-toytower0-000-003-0a1b2c3d.mp4.0123abcd.tmp"
        stale.parent.mkdir(exist_ok=True)
        stale.write_bytes(b"half a clip")
        assert run([*command, "--out", str(out)]) == 0
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


@needs_real_clips
def test_ids_that_read_alike_keep_their_own_clips(toy, tmp_path) -> None:
    """ "x y" and "x_y" (a pairs table's a/b.mp4 and a_b.mp4) make different clip names:
    neither's samples use the other's clips."""
    videos = tmp_path / "videos"
    videos.mkdir()
    coin = json.loads(toy.annotations.read_text())
    database = {}
    for name, (vid, entry) in zip(["x y", "x_y"], coin["database"].items(), strict=True):
        shutil.copy(toy.videos / f"{vid}.mp4", videos / f"{name}.mp4")
        database[name] = entry
    (tmp_path / "coin.json").write_text(json.dumps({"database": database}))
    command = ["data", "build", "--annotations", str(tmp_path / "coin.json"), "--format", "coin"]
    assert run([*command, "--videos", str(videos), "--out", str(tmp_path / "out")]) == 0
    samples = validate_manifest(tmp_path / "out" / "manifest.jsonl").samples  # ids distinct
    assert len(samples) == 6 and len(list((tmp_path / "out" / "clips").glob("*.mp4"))) == 8
    for sample in samples:  # each input clip shows its own video (up to the re-encoding)
        video = videos / f"{sample.extra['videos'][0]}.mp4"
        start, end = sample.extra["windows"][0]
        clip = read_video(sample.input.path).frames.float()
        assert (clip - read_video(video, start=start, end=end).frames).abs().mean() < 2

    (videos / "a").mkdir()
    shutil.copy(REAL_CLIPS / "93_172.mp4", videos / "a" / "b.mp4")
    shutil.copy(REAL_CLIPS / "173_399.mp4", videos / "a_b.mp4")
    shutil.copy(REAL_CLIPS / "400_442.mp4", videos / "c.mp4")
    table = tmp_path / "pairs.tsv"
    table.write_text("video1_path\tvideo2_path\na/b.mp4\tc.mp4\na_b.mp4\tc.mp4\n")
    command = ["data", "build", "--annotations", str(table), "--format", "pairs"]
    assert run([*command, "--videos", str(videos), "--out", str(tmp_path / "pairs")]) == 0
    first, second = validate_manifest(tmp_path / "pairs" / "manifest.jsonl").samples
    assert (first.input.path, second.input.path) == (videos / "a" / "b.mp4", videos / "a_b.mp4")
    assert first.extra["input_caption"] != second.extra["input_caption"]  # 1.3 s and 3.8 s

    # what safe_name cannot tell apart (the same name but the suffix) is refused up front
    table.write_text("video1_path\tvideo2_path\nc.mp4\tc.mkv\n")
    assert run([*command, "--videos", str(videos), "--out", str(tmp_path / "same")]) == 2
    assert not (tmp_path / "same").exists()


def test_an_annotation_changed_in_place_is_cut_again(toy, tmp_path) -> None:
    """A rerun after a segment is edited (same file, same path) cuts that step anew: its
    samples are those of a fresh run, never the stale clip's."""
    path = tmp_path / "coin.json"
    shutil.copy(toy.annotations, path)
    build(toy, tmp_path / "out", annotations=path)
    coin = json.loads(path.read_text())
    coin["database"]["toytower0-000"]["annotation"][1]["segment"] = [2.5, 3.5]  # was 1.5 s
    path.write_text(json.dumps(coin))
    build(toy, tmp_path / "out", annotations=path)
    build(toy, tmp_path / "fresh", annotations=path)
    manifest = (tmp_path / "out" / "manifest.jsonl").read_bytes()
    assert manifest == (tmp_path / "fresh" / "manifest.jsonl").read_bytes()
    (sample,) = [
        s
        for s in validate_manifest(tmp_path / "out" / "manifest.jsonl").samples
        if s.extra["videos"][0] == "toytower0-000" and s.extra["steps"] == [1, 2]
    ]
    assert read_video(sample.input.path).frames.shape[0] == 8  # 1 s at 8 fps, not 12


def test_bad_options_and_inputs_fail_before_the_folder_is_claimed(toy, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    command = ["data", "build", "--format", "coin", "--out", str(out), "--truth", str(toy.truth)]
    good = ["--annotations", str(toy.annotations), "--videos", str(toy.videos)]
    bad = {
        "--clip-fps must be a positive number, got 0": [*good, "--clip-fps", "0"],
        "--clip-fps must be a positive number, got -2": [*good, "--clip-fps", "-2"],
        "Invalid value for '--max-skipped'": [*good, "--max-skipped", "-1"],
        "Invalid value for '--chunk'": [*good, "--chunk", "0"],
        "--source must be 1-200 letters": [*good, "--source", "../../esc"],
        f"--videos {tmp_path / 'nowhere'}: does not exist; pass the folder": [
            *good[:2], "--videos", str(tmp_path / "nowhere")],
        f"--videos {toy.annotations}: is not a folder": [
            *good[:2], "--videos", str(toy.annotations)],
        f"{tmp_path / 'typo.json'}: annotation file not found": [
            "--annotations", str(tmp_path / "typo.json"), "--videos", str(toy.videos)],
        "got 'http://127.0.0.1:99999/v1': port must be a number 1-65535": [
            *good, "--captioner", "http://127.0.0.1:99999/v1#m"],
        "--captioner local:/nonexistent: the model directory /nonexistent does not exist": [
            *good, "--captioner", "local:/nonexistent"],
        "--task-names names the recipe types of coin or youcook2 videos; --format activitynet": [
            *good, "--format", "activitynet", "--task-names", str(toy.task_names)],
        f"{toy.annotations}: video toytower0-000: recipe_type: 0 is not in --task-names": [
            *good, "--task-names", str(toy.task_names)],
    }  # fmt: skip
    for message, args in bad.items():
        assert run([*command, *args]) == 2, message
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert not out.exists()  # not claimed: the corrected command may use it
    assert not (tmp_path / "esc").exists() and not (tmp_path.parent / "esc").exists()
    assert run([*command, *good]) == 0


def test_a_run_without_samples_exits_1_and_says_why(toy, tmp_path, capsys) -> None:
    coin = json.loads(toy.annotations.read_text())
    coin["database"] = {"elsewhere": coin["database"]["toytower0-000"]}  # no such video file
    (tmp_path / "coin.json").write_text(json.dumps(coin))
    command = ["data", "build", "--annotations", str(tmp_path / "coin.json"), "--format", "coin"]
    assert run([*command, "--videos", str(toy.videos), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "no samples: every item was rejected (1 at cut)" in err
    assert f"{tmp_path / 'out' / 'report.json'} gives each reason" in err
