"""Manifest rows, validation (every problem, with its line) and `vans data validate`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from vans.cli.main import run
from vans.data.manifest import (
    ManifestError,
    Problem,
    load_manifest,
    validate_manifest,
    write_manifest,
)
from vans.data.schema import (
    SchemaError,
    TaskType,
    VideoRef,
    VNEPSample,
    sample_from_row,
    sample_to_row,
)
from vans.data.toyworld import ToyWorldConfig, write_toyworld
from vans.data.video import write_mp4


@pytest.fixture
def videos(tmp_path: Path) -> Path:
    """Three 5-second videos (validation checks that they open and cover the windows)."""
    folder = tmp_path / "videos"
    frames = torch.zeros(40, 16, 16, 3, dtype=torch.uint8)
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        write_mp4(folder / name, frames, 8.0)
    return folder


def make_sample(videos: Path, sample_id: str = "s1", **changes: object) -> VNEPSample:
    fields: dict[str, object] = {
        "id": sample_id,
        "input": VideoRef(videos / "a.mp4", start=0.5, end=4.0),
        "question": "What does she do next?",
        "answer": "She cracks an egg into the bowl.",
        "target": VideoRef(videos / "b.mp4"),
        "reasoning": "The bowl is ready and she holds an egg.",
        "task": TaskType.PROCEDURAL,
        "source": "youcook2",
        "extra": {"choices": ["a", "b"], "facts": {"objects": 3}},
    }
    fields.update(changes)
    return VNEPSample(**fields)  # type: ignore[arg-type]


def good_row(sample_id: str, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": sample_id,
        "input": {"path": "videos/a.mp4", "start": 0.0, "end": 4.0},
        "question": "What happens next?",
        "answer": "The ball bounces.",
        "target": "videos/b.mp4",
        "task": "predictive",
        "source": "toyworld",
    }
    row.update(changes)
    return row


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_write_then_load_round_trip_with_relative_paths_on_disk(
    tmp_path: Path, videos: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("elsewhere") / "c.mp4"
    shutil.copy(videos / "c.mp4", outside)
    samples = [
        make_sample(videos, "s1"),
        make_sample(videos, "s2", reasoning=None, extra={}, task=TaskType.PREDICTIVE),
        make_sample(videos, "s3", target=VideoRef(outside, end=2.0)),
    ]
    path = write_manifest(tmp_path / "train.jsonl", samples)

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows[0]["input"] == {"path": "videos/a.mp4", "start": 0.5, "end": 4.0}
    assert rows[0]["target"] == {"path": "videos/b.mp4"}
    assert rows[1]["reasoning"] is None
    # Outside the manifest's directory a relative path would need "..": keep it absolute.
    assert rows[2]["target"] == {"path": outside.as_posix(), "end": 2.0}

    loaded = load_manifest(path)
    assert loaded == samples
    assert all(s.input.path.is_absolute() and s.target.path.is_absolute() for s in loaded)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl", "videos"]  # no temp


def test_row_round_trip_is_exact(tmp_path: Path) -> None:
    row = {
        "id": "r1",
        "input": {"path": "videos/a.mp4", "start": 1.5, "end": 4.0},
        "question": "Q?",
        "answer": "A.",
        "target": {"path": "videos/b.mp4"},
        "reasoning": "Because.",
        "task": "procedural",
        "source": "coin",
        "extra": {"step": 3, "skipped": ["x"]},
    }
    sample = sample_from_row(row, tmp_path)
    assert sample.input == VideoRef(tmp_path / "videos" / "a.mp4", 1.5, 4.0)
    assert sample.task is TaskType.PROCEDURAL
    assert sample_to_row(sample, tmp_path) == row
    assert sample_from_row(sample_to_row(sample, tmp_path), tmp_path) == sample


def test_string_shorthand_and_optional_fields(tmp_path: Path, videos: Path) -> None:
    row = good_row("x", input="videos/a.mp4")
    path = write_lines(tmp_path / "m.jsonl", [json.dumps(row)])
    (sample,) = load_manifest(path)
    assert sample.input == VideoRef(videos / "a.mp4")
    assert sample.target == VideoRef(videos / "b.mp4")
    assert sample.reasoning is None
    assert sample.extra == {}


def test_sample_from_row_lists_every_problem(tmp_path: Path) -> None:
    with pytest.raises(SchemaError) as info:
        sample_from_row({"id": 7, "question": " ", "input": "a.mp4", "task": None}, tmp_path)
    assert {p.field for p in info.value.problems} == {
        "id",
        "question",
        "answer",
        "target",
        "task",
        "source",
    }
    assert "id: must be a string, got number" in str(info.value)


def test_bad_manifest_reports_every_problem_with_its_line(tmp_path: Path, videos: Path) -> None:
    lines = [
        json.dumps(good_row("ok-1")),  # 1
        json.dumps({k: v for k, v in good_row("no-answer").items() if k != "answer"}),  # 2
        "",  # 3: blank lines are skipped but still counted
        json.dumps(good_row("empty-q", question="   ")),  # 4
        json.dumps(good_row("bad-task", task="forecast")),  # 5
        json.dumps({**good_row("typo"), "quesiton": "oops"}),  # 6
        json.dumps(good_row("window", input={"path": "videos/a.mp4", "start": 5, "end": 2})),  # 7
        json.dumps(good_row("ok-1", answer="again")),  # 8: duplicate of line 1
        '{"id": "broken", "question": ',  # 9
        json.dumps(good_row("no-file", target="videos/missing.mp4")),  # 10
        json.dumps(good_row("neg", target={"path": "videos/c.mp4", "start": -1})),  # 11
        json.dumps(good_row("str-time", input={"path": "videos/a.mp4", "end": "4s"})),  # 12
        json.dumps(["not", "an", "object"]),  # 13
        json.dumps(good_row("extra-list", extra=[1], reasoning="")),  # 14
        json.dumps(good_row("ok-2", input={"path": "videos/c.mp4", "fps": 2})),  # 15
    ]
    path = write_lines(tmp_path / "bad.jsonl", lines)

    report = validate_manifest(path)
    found = [(p.line, p.field) for p in report.problems]
    assert found == [
        (2, "answer"),
        (4, "question"),
        (5, "task"),
        (6, "quesiton"),
        (7, "input.start"),
        (8, "id"),
        (9, "json"),
        (10, "target.path"),
        (11, "target.start"),
        (12, "input.end"),
        (13, "row"),
        (14, "reasoning"),
        (14, "extra"),
        (15, "input.fps"),
    ]
    messages = {(p.line, p.field): p.message for p in report.problems}
    assert messages[(2, "answer")] == "required field is missing"
    assert messages[(4, "question")] == "must not be empty"
    assert "'procedural', 'predictive'" in messages[(5, "task")]
    assert messages[(6, "quesiton")] == "unknown field; free-form fields go in `extra`"
    assert "first used on line 1" in messages[(8, "id")]
    assert str(tmp_path / "videos" / "missing.mp4") in messages[(10, "target.path")]
    assert report.rows == 14
    assert [s.id for s in report.samples] == ["ok-1"]

    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    text = str(info.value)
    assert text.splitlines()[0] == f"14 problems in 14 rows of {path}:"
    for line, field in found:
        assert f"{path}:{line}: {field}: " in text
    assert info.value.problems == report.problems


def test_no_check_files_skips_only_the_file_check(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "m.jsonl", [json.dumps(good_row("x"))])
    assert [p.field for p in validate_manifest(path).problems] == ["input.path", "target.path"]
    assert [s.id for s in load_manifest(path, check_files=False)] == ["x"]


def test_empty_manifest_is_an_error(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "empty.jsonl", ["", "  "])
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.problems == [Problem(None, None, "manifest has no rows")]
    assert f"{path}: manifest has no rows" in str(info.value)


def test_missing_manifest_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(ManifestError, match="manifest file not found") as info:
        load_manifest(path)
    assert str(info.value) == f"{path}: manifest file not found"


def test_cli_validate_clean_manifest(
    tmp_path: Path, videos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [good_row("p1", task="procedural"), good_row("q1"), good_row("q2")]
    path = write_lines(tmp_path / "m.jsonl", [json.dumps(r) for r in rows])
    assert run(["data", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: 3 samples OK (1 procedural, 2 predictive)" in out


def test_cli_validate_bad_manifest_lists_every_problem(
    tmp_path: Path, videos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        json.dumps(good_row("a", question="")),
        "not json",
        json.dumps(good_row("b", task="[bold]x[/bold]", target="videos/gone.mp4")),
    ]
    path = write_lines(tmp_path / "m.jsonl", lines)
    assert run(["data", "validate", str(path)]) == 1
    captured = capsys.readouterr()
    output = captured.out + captured.err
    for location in ("1: question:", "2: json:", "3: target.path:", "3: task:"):
        assert f"{path}:{location}" in output
    assert "'[bold]x[/bold]'" in output  # user text is printed verbatim, not as markup
    assert "Traceback" not in output
    assert run(["data", "validate", "--no-check-files", str(path)]) == 1


def test_cli_validate_missing_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "missing.jsonl"
    assert run(["data", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: manifest file not found" in err
    assert "Traceback" not in err


def test_validate_checks_the_files_a_row_refers_to(tmp_path: Path) -> None:
    """An empty video file and a window past a video's end are problems of their row."""
    samples = load_manifest(write_toyworld(ToyWorldConfig(num=1, size=(32, 32)), tmp_path / "t"))
    manifest = write_manifest(tmp_path / "m.jsonl", samples)
    row = json.loads(manifest.read_text())
    (tmp_path / "empty.mp4").write_bytes(b"")
    bad = {**row, "target": str(tmp_path / "empty.mp4")}
    bad["input"] = {"path": row["input"] if isinstance(row["input"], str) else row["input"]["path"]}
    bad["input"] |= {"start": 100.0, "end": 101.0}
    manifest.write_text(json.dumps(bad) + "\n")
    problems = {(p.field, p.message.split(":")[0]) for p in validate_manifest(manifest).problems}
    assert ("target.path", "video file is empty (0 bytes)") in problems
    assert any(f == "input.start" and "past the end of the video" in m for f, m in problems)
    assert any(f == "input.end" and "past the end of the video" in m for f, m in problems)
