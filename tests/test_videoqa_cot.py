"""The 3-step CoT pipeline: the toy teacher's traces all pass the sufficiency check and come
out in VideoP2R's format; a teacher whose observations say nothing useful (the tiny random
Qwen2.5-VL) is rejected at verification, each rejection with its reason; a rerun decides
nothing twice."""

from __future__ import annotations

import json

from vans.cli.main import run
from vans.videoqa.cot import KEPT_FILE, REJECTED_FILE, ModelTeacher, ToyTeacher, run_cot
from vans.videoqa.judge import PerceptionJudge
from vans.videoqa.rows import load_rows
from vans.videoqa.toy import ToyJudge


def test_the_toy_teacher_passes_and_writes_videop2r_rows(toy_qa, tmp_path, capsys) -> None:
    rows_file = toy_qa / "train" / "rows.json"
    assert run(["qa", "cot", str(rows_file), "--out", str(tmp_path / "cot")]) == 0
    rows = load_rows([rows_file])
    assert f"kept {len(rows)} of {len(rows)} rows" in capsys.readouterr().out
    traced = load_rows([tmp_path / "cot" / "rows.json"], require_trace=True, check_files=True)
    assert [r.id for r in traced] == [r.id for r in rows]
    assert [r.output for r in traced] == [r.output for r in rows]  # the truth, step by step


def test_a_useless_teacher_is_rejected_with_reasons(toy_qa, tiny_checkpoint, tmp_path) -> None:
    rows = load_rows([toy_qa / "test" / "rows.json"])
    teacher = ModelTeacher(tiny_checkpoint / "vlm", max_new_tokens=8)
    seen = []
    decisions = run_cot(rows, teacher, PerceptionJudge(ToyJudge()), tmp_path, on_row=seen.append)
    assert len(seen) == len(rows) and not any(d.kept for d in decisions)
    rejected = [json.loads(x) for x in (tmp_path / REJECTED_FILE).read_text().splitlines()]
    assert {r["id"] for r in rejected} == {r.id for r in rows}
    assert {(r["step"], r["reason"]) for r in rejected} <= {
        ("verification", "the observation alone is not enough"),
        ("observation", "the teacher wrote no observation"),
        ("reasoning", "the teacher wrote no reasoning"),
    }
    assert json.loads((tmp_path / "rows.json").read_text()) == []
    # A rerun decides nothing again.
    again = []
    assert run_cot(rows, teacher, PerceptionJudge(ToyJudge()), tmp_path, on_row=again.append)
    assert again == []


def test_a_killed_run_redecides_only_the_cut_row(toy_qa, tmp_path) -> None:
    rows = load_rows([toy_qa / "train" / "rows.json"])
    judge = PerceptionJudge(ToyJudge())
    run_cot(rows, ToyTeacher(), judge, tmp_path)
    kept = (tmp_path / KEPT_FILE).read_text().splitlines()
    (tmp_path / KEPT_FILE).write_text("\n".join(kept[:2]) + "\n" + kept[2][:20])
    redone = []
    decisions = run_cot(rows, ToyTeacher(), judge, tmp_path, on_row=redone.append)
    assert len(redone) == len(rows) - 2 and all(d.kept for d in decisions)
    assert len(json.loads((tmp_path / "rows.json").read_text())) == len(rows)
