"""Video-QA evaluation: scores of known outputs per benchmark (hand-computed), VSI-Bench's
MRA, resuming a killed run, and `vans qa eval` end to end on the toy benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vans.cli.main import run
from vans.videoqa.evaluate import (
    PREDICTIONS_FILE,
    EvalSettings,
    answer_rows,
    mean_relative_accuracy,
    score_rows,
)
from vans.videoqa.rows import QARow, load_rows


def qa(i, kind, answer, options=(), source="") -> QARow:
    return QARow(str(i), "q", kind, "video", Path("v.mp4"), answer, options, source)


def test_scores_per_type_and_source() -> None:
    rows = [
        qa(0, "multiple choice", "B", ("A. x", "B. y"), "task1"),
        qa(1, "multiple choice", "A", ("A. x", "B. y"), "task1"),
        qa(2, "numerical", "10", (), "task2"),
        qa(3, "numerical", "4", (), "task3"),
    ]
    outputs = {
        "0": "<observation>o</observation><think>t</think><answer>B</answer>",
        "1": "I think it is B.",  # no tags: the whole text; "I" is no option letter
        "2": "<answer>8</answer>",
        "3": "<answer>4</answer>",
    }
    result = score_rows(rows, outputs)
    assert result["by_type"] == {"multiple choice": 0.5, "numerical": pytest.approx(0.9)}
    assert result["accuracy"] == pytest.approx((1 + 0 + 0.8 + 1) / 4)
    assert result["well_formed"] == 0.25
    assert result["by_source"]["task1"] == 0.5
    # MRA: 8 vs 10 is 20% off, under the bounds 0.5..0.25 (thresholds .50-.75, 6 of 10)
    assert result["mra"]["row_mean"] == pytest.approx((0.6 + 1.0) / 2)
    assert result["mra"]["task_mean"] == pytest.approx((0.6 + 1.0) / 2)


@pytest.mark.parametrize(
    ("predicted", "truth", "mra"),
    [
        ("10", "10", 1.0),
        ("9.4", "10", 0.9),
        ("9.6", "10", 1.0),
        ("5", "10", 0.0),
        ("n/a", "3", 0.0),
        ("0", "0", 1.0),
    ],
)
def test_mean_relative_accuracy(predicted, truth, mra) -> None:
    assert mean_relative_accuracy(predicted, truth) == pytest.approx(mra)


def test_a_killed_run_resumes_without_answering_twice(toy_qa, tiny_checkpoint, tmp_path) -> None:
    from vans.models.vlm import Reasoner

    rows = load_rows([toy_qa / "test" / "rows.json"])
    reasoner = Reasoner.from_pretrained(tiny_checkpoint / "vlm")
    settings = EvalSettings(max_new_tokens=6)
    first = answer_rows(reasoner, rows, settings, tmp_path)
    lines = (tmp_path / PREDICTIONS_FILE).read_text().splitlines()
    assert len(lines) == len(rows)
    # Killed while writing the third answer: two whole lines and half of one remain.
    (tmp_path / PREDICTIONS_FILE).write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:9])
    answered = []
    again = answer_rows(reasoner, rows, settings, tmp_path, on_row=lambda: answered.append(1))
    assert again == first and len(answered) == len(rows)
    records = [json.loads(x) for x in (tmp_path / PREDICTIONS_FILE).read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(r.id for r in rows)


def test_cli_eval_writes_a_table_per_benchmark(toy_qa, tiny_checkpoint, tmp_path, capsys) -> None:
    args = ["qa", "eval", "--reasoner", str(tiny_checkpoint / "vlm"), "--out", str(tmp_path / "e")]
    files = [str(toy_qa / "test" / "rows.json")]
    assert run([*args, *files, "--max-new-tokens", "4"]) == 0
    results = json.loads((tmp_path / "e" / "results.json").read_text())
    assert list(results) == ["rows"] and results["rows"]["rows"] == len(load_rows(files))
    assert "| rows |" in (tmp_path / "e" / "results.md").read_text()
    capsys.readouterr()
    assert run([*args, *files, "--max-new-tokens", "5"]) == 2  # other settings: refused
    assert "max_new_tokens" in capsys.readouterr().err
