"""The output-folder rule (`vans.outputs`) and the commands that follow it: nothing a user
owns is deleted, a resumed run never mixes two set-ups, and results that lie exit non-zero."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vans.cli.main import run
from vans.data.manifest import load_manifest, validate_manifest, write_manifest
from vans.data.schema import check_sample_id
from vans.data.toyworld import ToyWorldConfig, write_toyworld
from vans.outputs import OUTPUT_RECORD, OutputError, claim_output
from vans.recipes.toyworld import ToyRecipeConfig, run_toyworld

# --------------------------------------------------------------------------- the rule


def test_a_new_or_empty_folder_is_claimed(tmp_path: Path) -> None:
    assert claim_output(tmp_path / "new" / "deep", "x", {"a": 1}, resumable=True) is False
    record = json.loads((tmp_path / "new" / "deep" / OUTPUT_RECORD).read_text())
    assert record == {"command": "x", "settings": {"a": 1}}
    (tmp_path / "empty").mkdir()
    assert claim_output(tmp_path / "empty", "x", {}, resumable=False) is False


def test_foreign_files_are_refused_and_kept(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(OutputError, match=r"holds files that no vans x wrote.*--overwrite"):
        claim_output(tmp_path, "x", {}, resumable=False)
    assert (tmp_path / "mine.txt").read_text() == "precious"
    claim_output(tmp_path, "x", {}, resumable=False, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [OUTPUT_RECORD]


def test_another_commands_output_is_refused(tmp_path: Path) -> None:
    claim_output(tmp_path, "eval", {}, resumable=True)
    with pytest.raises(OutputError, match="holds the output of vans eval, not of vans demo"):
        claim_output(tmp_path, "demo", {}, resumable=False)


def test_resume_needs_the_same_settings_and_names_the_changed_ones(tmp_path: Path) -> None:
    claim_output(tmp_path, "eval", {"seed": 0, "metrics": ["a"]}, resumable=True)
    (tmp_path / "scores.json").write_text("{}")
    assert claim_output(tmp_path, "eval", {"seed": 0, "metrics": ["a"]}, resumable=True)
    with pytest.raises(OutputError, match=r"other settings \(changed: seed\)"):
        claim_output(tmp_path, "eval", {"seed": 1, "metrics": ["a"]}, resumable=True)
    assert (tmp_path / "scores.json").is_file()


def test_a_non_resumable_command_replaces_its_own_output(tmp_path: Path) -> None:
    claim_output(tmp_path, "demo", {"seed": 0}, resumable=False)
    (tmp_path / "old.gif").write_text("old")
    assert claim_output(tmp_path, "demo", {"seed": 1}, resumable=False) is False
    assert not (tmp_path / "old.gif").exists()


def test_a_file_is_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputError, match=r"--out .*f: is a file"):
        claim_output(tmp_path / "f", "x", {}, resumable=False)


# --------------------------------------------------------------------------- sample ids


@pytest.mark.parametrize("bad", ["../../x", "a/b/c", "/abs/x", ".", "..", "", "-x", "a b"])
def test_sample_ids_that_are_paths_are_refused(bad: str) -> None:
    assert check_sample_id(bad) is not None


@pytest.mark.parametrize("good", ["toy0-000001", "cook_0001", "v.Ab-9"])
def test_ordinary_sample_ids_pass(good: str) -> None:
    assert check_sample_id(good) is None


def test_validate_reports_a_path_id_by_row_and_field(tmp_path: Path) -> None:
    samples = load_manifest(write_toyworld(ToyWorldConfig(num=1, size=(32, 32)), tmp_path / "toy"))
    manifest = write_manifest(tmp_path / "m.jsonl", samples)
    row = json.loads(manifest.read_text().splitlines()[0])
    row["id"] = "../../x"
    manifest.write_text(json.dumps(row) + "\n")
    report = validate_manifest(manifest)
    (problem,) = report.problems
    assert (problem.line, problem.field) == (1, "id") and "'../../x'" in problem.message


# --------------------------------------------------------------------------- commands


def test_init_tiny_keeps_a_users_files_unless_told(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert run(["init-tiny", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds files that no vans init-tiny wrote" in err and "Traceback" not in err
    assert (out / "notes.txt").read_text() == "mine"
    assert run(["init-tiny", "--out", str(out), "--overwrite"]) == 0
    assert (out / "vans.yaml").is_file() and not (out / "notes.txt").exists()
    assert run(["init-tiny", "--out", str(out), "--seed", "1"]) == 0  # its own: replaced
    record = json.loads((out / OUTPUT_RECORD).read_text())
    assert record == {"command": "init-tiny", "settings": {"seed": 1, "preset": "tiny"}}


def test_data_preview_runs_with_its_defaults(tmp_path: Path) -> None:
    manifest = write_toyworld(ToyWorldConfig(num=2, size=(32, 32)), tmp_path / "toy")
    assert run(["data", "preview", str(manifest), "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "index.html").is_file()
    assert run(["data", "preview", str(manifest), "--out", str(tmp_path / "toy")]) == 2


def test_data_toyworld_reruns_into_its_own_output(tmp_path: Path) -> None:
    args = ["data", "toyworld", "--out", str(tmp_path / "t"), "--num", "1", "--size", "32x32"]
    assert run(args) == 0
    assert run([*args, "--seed", "4"]) == 0
    assert len(load_manifest(tmp_path / "t" / "manifest.jsonl")) == 1


def test_a_recipe_refuses_an_out_that_holds_another_run(tmp_path: Path) -> None:
    """A rerun with other settings would print the old table as current."""
    config = ToyRecipeConfig(out=str(tmp_path / "r"), train_num=12)
    claim_output(tmp_path / "r", "reproduce toyworld", {"train_num": 10}, resumable=True)
    with pytest.raises(OutputError, match=r"changed: .*train_num"):
        run_toyworld(config)


def test_eval_that_scores_nothing_fails(tmp_path: Path, capsys) -> None:
    manifest = write_toyworld(ToyWorldConfig(num=2, size=(32, 32)), tmp_path / "toy")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "predictions.jsonl").write_text('{"id": "other", "caption": "x"}\n')
    args = ["eval", "--manifest", str(manifest), "--predictions", str(tmp_path / "p")]
    assert run([*args, "--out", str(tmp_path / "e")]) == 2
    assert "no sample could be scored" in capsys.readouterr().err


def test_predictions_with_one_id_twice_are_refused(tmp_path: Path, capsys) -> None:
    manifest = write_toyworld(ToyWorldConfig(num=1, size=(32, 32)), tmp_path / "toy")
    sample = load_manifest(manifest)[0]
    (tmp_path / "p").mkdir()
    row = json.dumps({"id": sample.id, "caption": "x"})
    (tmp_path / "p" / "predictions.jsonl").write_text(f"{row}\n{row}\n")
    args = ["eval", "--manifest", str(manifest), "--predictions", str(tmp_path / "p")]
    assert run([*args, "--out", str(tmp_path / "e")]) == 2
    assert f"predictions.jsonl:2: id '{sample.id}' is also on line 1" in capsys.readouterr().err


def test_predict_prints_questions_with_markup_verbatim(
    tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    manifest = write_toyworld(ToyWorldConfig(num=1, size=(32, 32)), tmp_path / "toy")
    video = load_manifest(manifest)[0].input.path
    question = "What if [/b] the wall [bold]fell?"
    args = ["predict", "--checkpoint", str(tiny_checkpoint), "--video", str(video)]
    assert run([*args, "--question", question, "--out", str(tmp_path / "o")]) == 0
    report = json.loads((tmp_path / "o" / "prediction.json").read_text())
    assert report["answers"][0]["question"] == question
    assert question in capsys.readouterr().out


def test_written_checkpoints_are_readable_by_others(tmp_path: Path) -> None:
    """Weights saved through the model libraries' temporary files came out 0600."""
    old = os.umask(0o022)
    try:
        assert run(["init-tiny", "--out", str(tmp_path / "c")]) == 0
    finally:
        os.umask(old)
    modes = {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "c").rglob("*") if p.is_file()}
    assert modes == {"0o644"}
