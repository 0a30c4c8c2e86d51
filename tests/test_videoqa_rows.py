"""Video-QA rows in the published Video-R1 and VideoP2R formats: loading, parts, the RL
file's all-string values, and validation that names every bad row and field."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from vans.videoqa.rows import QADataError, expand_parts, load_rows, validate_rows

VIDEO_R1_ROW = {
    "problem_id": 7,
    "problem": "How many cups are on the table?",
    "data_type": "video",
    "problem_type": "multiple choice",
    "options": ["A. 2", "B. 3", "C. 4"],
    "process": "",
    "solution": "<answer>B</answer>",
    "path": "./LLaVA-Video-178K/clip.mp4",
    "data_source": "LLaVA-Video-178K/2_3_m_nextqa",
}
TRACE = {
    "observation": "Three white cups stand on a wooden table.",
    "process": "I count the cups: one, two, three.",
    "output": "<observation>...</observation><think>...</think><answer>B</answer>",
    "select": "True",
    "clean_version": "1",
}


def write_json(path: Path, rows: list, gz: bool = False) -> Path:
    data = json.dumps(rows).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_video_r1_rows_load_with_their_answer_and_options(tmp_path) -> None:
    free = {**VIDEO_R1_ROW, "problem_id": 8, "problem_type": "free-form", "options": []}
    free["solution"] = "<answer> A man opens the door. </answer>"
    path = write_json(tmp_path / "train.json", [VIDEO_R1_ROW, free])
    rows = load_rows([path], video_root="/data/Video-R1-data")
    assert [r.id for r in rows] == ["7", "8"]
    assert rows[0].answer == "B" and rows[0].options == ("A. 2", "B. 3", "C. 4")
    assert rows[0].path == Path("/data/Video-R1-data/LLaVA-Video-178K/clip.mp4")
    assert rows[1].answer == "A man opens the door." and rows[1].options == ()
    assert rows[0].data_source == "LLaVA-Video-178K/2_3_m_nextqa"
    assert rows[0].observation is None


def test_videop2r_parts_concatenate_in_order(tmp_path) -> None:
    """Naming any part stands for all of them, read in part order, each once."""
    rows = [{**VIDEO_R1_ROW, **TRACE, "problem_id": i} for i in range(5)]
    for i, chunk in enumerate((rows[:3], rows[3:]), start=1):
        write_json(tmp_path / f"VideoP2R-162k_sft.part{i}of2.json.gz", chunk, gz=True)
    second = tmp_path / "VideoP2R-162k_sft.part2of2.json.gz"
    assert expand_parts([second]) == [
        tmp_path / f"VideoP2R-162k_sft.part{i}of2.json.gz" for i in (1, 2)
    ]
    loaded = load_rows(
        [second, tmp_path / "VideoP2R-162k_sft.part1of2.json.gz"], require_trace=True
    )
    assert [r.id for r in loaded] == ["0", "1", "2", "3", "4"]
    assert loaded[0].observation == TRACE["observation"] and loaded[0].process == TRACE["process"]
    assert loaded[0].extra["select"] == "True" and loaded[0].output == TRACE["output"]


def test_rl_file_values_are_all_strings(tmp_path) -> None:
    row = {k: str(v) for k, v in {**VIDEO_R1_ROW, **TRACE}.items()}
    assert row["options"] == "['A. 2', 'B. 3', 'C. 4']"  # a Python list literal, as published
    path = write_json(tmp_path / "VideoP2R-263k_rl.part1of1.json.gz", [row], gz=True)
    (loaded,) = load_rows([path])
    assert loaded.options == ("A. 2", "B. 3", "C. 4") and loaded.id == "7"


def test_a_missing_part_is_named(tmp_path) -> None:
    path = write_json(tmp_path / "x.part1of3.json.gz", [VIDEO_R1_ROW], gz=True)
    write_json(tmp_path / "x.part3of3.json.gz", [VIDEO_R1_ROW], gz=True)
    with pytest.raises(QADataError, match=r"x.part2of3.json.gz missing"):
        load_rows([path])


def test_every_bad_row_is_reported_by_index_and_field(tmp_path) -> None:
    bad = [
        VIDEO_R1_ROW,
        {k: v for k, v in VIDEO_R1_ROW.items() if k != "problem"} | {"problem_id": 1},
        {**VIDEO_R1_ROW, "problem_id": 2, "problem_type": "essay"},
        {**VIDEO_R1_ROW, "problem_id": 3, "options": "not a list ["},
        {**VIDEO_R1_ROW, "problem_id": 4, "solution": "B"},
        {**VIDEO_R1_ROW, "problem_id": 5, "options": []},
        {**VIDEO_R1_ROW, "problem_id": 6, "data_type": "audio"},
        VIDEO_R1_ROW,
        ["not", "an", "object"],
    ]
    path = write_json(tmp_path / "eval_mvbench.json", bad)
    rows, (error,) = validate_rows([path])
    assert [r.id for r in rows] == ["7"]  # the first row; its duplicate is refused
    message = str(error)
    assert message.splitlines()[0] == f"8 problems in 9 rows of {path}:"
    for expected in (
        f"{path}: row 1: problem: missing",
        "row 2: problem_type: 'essay' is not one of 'multiple choice'",
        "row 3: options: not a list of options: 'not a list ['",
        "row 4: solution: has no <answer>...</answer>: 'B'",
        "row 5: options: a multiple-choice row needs its options",
        "row 6: data_type: 'audio' is not 'video' or 'image'",
        "row 7: problem_id: duplicate id '7' (row 0)",
        "row 8: must be a JSON object, got list",
    ):
        assert expected in message, expected
    with pytest.raises(QADataError):
        load_rows([path])


def test_traces_are_required_for_sft_and_files_when_asked(tmp_path) -> None:
    path = write_json(tmp_path / "train.json", [VIDEO_R1_ROW])
    with pytest.raises(QADataError, match="row 0: observation: missing"):
        load_rows([path], require_trace=True)
    with pytest.raises(QADataError, match=r"row 0: path: .*clip.mp4: file not found"):
        load_rows([path], check_files=True)
    (tmp_path / "LLaVA-Video-178K").mkdir()
    (tmp_path / "LLaVA-Video-178K" / "clip.mp4").write_bytes(b"")
    assert load_rows([path], check_files=True)[0].path == tmp_path / "LLaVA-Video-178K" / "clip.mp4"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.json", None, "file not found"),
        ("broken.json.gz", b"\x1f\x8b\x08\x00trunc", "not a complete gzip file"),
        ("latin1.json", '[{"problem": "caf\xe9"}]'.encode("latin-1"), "not UTF-8 text"),
        ("object.json", b'{"rows": []}', "must hold a JSON list of rows, got dict"),
        ("bad.json", b"[{", "invalid JSON"),
        ("bad.jsonl", b'{"a": 1}\n{', "line 2: invalid JSON"),
        ("empty.json", b"[]", "has no rows"),
    ],
)
def test_unreadable_files_are_named(tmp_path, name, content, message) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(QADataError, match=message) as caught:
        load_rows([path])
    assert str(path) in str(caught.value)


def test_cli_validate_lists_every_problem_and_exits_1(tmp_path, capsys) -> None:
    from vans.cli.main import run

    good = write_json(tmp_path / "good.json", [VIDEO_R1_ROW])
    assert run(["qa", "validate", str(good)]) == 0
    assert "1 valid row (1 multiple choice)" in capsys.readouterr().out
    bad = write_json(tmp_path / "bad.json", [{**VIDEO_R1_ROW, "problem_id": 9, "solution": "B"}])
    assert run(["qa", "validate", str(good), str(bad)]) == 1
    out, err = capsys.readouterr()
    assert f"{bad}: row 0: solution: has no <answer>" in err and "Traceback" not in err
    assert "1 valid row" in out
    assert run(["qa", "validate", str(tmp_path / "nope.json")]) == 2
    assert "nope.json: file not found" in capsys.readouterr().err
