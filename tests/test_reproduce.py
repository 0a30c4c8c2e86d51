"""`vans reproduce toyworld`: the whole recipe in miniature (a few steps per stage), its
table, figures, strips and release; the pieces it is built from."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from conftest import differing_files
from vans.cli.main import run
from vans.data.manifest import load_manifest
from vans.data.preview import answer_strip
from vans.data.toyworld.config import HELD_OUT
from vans.data.video import read_video
from vans.evaluation.bases import base_figures
from vans.evaluation.report import results_markdown
from vans.evaluation.runner import EvalResult
from vans.models.checkpoint import load_checkpoint, load_settings
from vans.recipes.toybases import (
    BASE_FILE,
    CHECK_SAMPLES,
    EMBEDDER_DIR,
    BasesError,
    ToyBasesConfig,
    base_info,
    run_toybases,
)
from vans.recipes.toyworld import RELEASE_FILE, _Inline, _Jobs, release_caption_figures
from vans.training.stages import STAGES, train_command

RUNS = ("sft_vlm", "sft_vdm", "sft_vdm_text_only", "joint_grpo_stage1", "joint_grpo_stage2")
QUICK = [
    *[
        a
        for r in RUNS
        for k in ("steps=2", "warmup_steps=0", "eval_every=0")
        for a in ("--set", f"{r}:train.{k}")
    ],
    # The tiny random reasoner's captions reach no anchor threshold: accept its first, or
    # Stage 2 would train nothing and (rightly) fail.
    *("--set", "joint_grpo_stage2:anchor_min_rouge=0.0"),
]
BASE_RUNS = (
    "reasoner",
    "reasoner_more",
    "reasoner_more2",
    "reasoner_shape",
    "renderer_vae",
    "renderer_vae_long",
    "renderer_t2v",
)


def quick_bases(out: Path, **options) -> ToyBasesConfig:
    """Toy bases from tiny random models, 2 steps per stage: the pieces, not the figures."""
    quick = ("steps=2", "warmup_steps=0", "eval_every=0")
    return ToyBasesConfig(
        out=str(out),
        train_num=12,
        val_num=4,
        judge_num=40,
        preset="tiny",
        overrides={
            "embedder": ["steps=10", "batch_size=8"],
            **{run: [f"train.{k}" for k in quick] for run in BASE_RUNS},
            **{
                run: [f"train.{k}" for k in quick] + ["stats_clips=8"]
                for run in BASE_RUNS
                if run.startswith("renderer_vae")
            },
        },
        **options,
    )


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    return run_toybases(quick_bases(tmp_path_factory.mktemp("toybases")))


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, bases):
    out = tmp_path_factory.mktemp("reproduce")
    args = ["reproduce", "toyworld", "--out", str(out), "--seed", "0", "--seed", "5"]
    args += ["--train-num", "16", "--val-num", "4", "--test-num", "4", "--bases", str(bases)]
    args += ["--jobs", "2"]  # the stages as subprocesses (the bases ran theirs in-process)
    assert run([*args, *QUICK]) == 0
    return out, [*args, *QUICK]


def test_bases_assemble_one_checkpoint_with_its_judge_and_configs(bases) -> None:
    reasoner, _, _ = load_checkpoint(bases)
    assert reasoner.peft_model is None
    assert (bases / EMBEDDER_DIR).is_dir()
    assert sorted(p.stem for p in (bases / "training").glob("*.yaml")) == sorted(BASE_RUNS)
    info = base_info(bases)
    assert set(info["figures"]) == set(BASE_RUNS) and "reasoner" in info["timings_s"]
    # The acceptance figures, recomputed from the assembled weights: the same numbers.
    held_out = load_manifest(Path(info["recipe"]["out"]) / "data" / "val" / "manifest.jsonl")
    again = base_figures(bases, held_out[:CHECK_SAMPLES], t2v_samples=2)
    assert again == pytest.approx(info["check"], nan_ok=True)
    assert info["accepted"].keys() == again.keys()


def test_a_renderer_rebuild_keeps_the_reasoner_it_is_given(bases, tmp_path) -> None:
    rebuilt = run_toybases(quick_bases(tmp_path / "renderer", reasoner_from=str(bases)))
    assert not (tmp_path / "renderer" / "reasoner").exists()  # no reasoner run trained
    assert not (tmp_path / "renderer" / "data" / "judge").exists()
    assert differing_files(bases / "vlm", rebuilt / "vlm") == []
    assert differing_files(bases / EMBEDDER_DIR, rebuilt / EMBEDDER_DIR) == []
    old, new = base_info(bases), base_info(rebuilt)
    for name in ("reasoner", "reasoner_more", "reasoner_more2", "reasoner_shape"):
        assert new["figures"][name] == old["figures"][name]
        assert new["timings_s"][name] == old["timings_s"][name]
        kept = bases / "training" / f"{name}.yaml"
        assert (rebuilt / "training" / f"{name}.yaml").read_bytes() == kept.read_bytes()
    assert "renderer_vae_long" in new["timings_s"]
    assert new["recipe"]["reasoner_from"] == str(bases)


def test_a_continued_base_trains_only_the_runs_it_lacks(bases, tmp_path) -> None:
    # A base made before the last reasoner run existed: its base.json has no figures for it.
    older = tmp_path / "older"
    shutil.copytree(bases, older)
    info = base_info(older)
    del info["figures"]["reasoner_shape"], info["timings_s"]["reasoner_shape"]
    (older / BASE_FILE).write_text(json.dumps(info))
    continued = run_toybases(quick_bases(tmp_path / "continued", continue_from=str(older)))
    trained = sorted(p.name for p in (tmp_path / "continued").iterdir() if p.name in BASE_RUNS)
    assert trained == ["reasoner_shape"]
    assert not (tmp_path / "continued" / "data" / "judge").exists()
    # The run continued from the older base's reasoner; the renderer and judge are its own.
    start = yaml.safe_load((tmp_path / "continued" / "reasoner_shape" / "config.yaml").read_text())
    assert start["checkpoint"] == str(older)
    assert differing_files(older / "vdm", continued / "vdm") == []
    assert differing_files(older / EMBEDDER_DIR, continued / EMBEDDER_DIR) == []
    assert differing_files(older / "vlm", continued / "vlm") != []
    new = base_info(continued)
    for name in set(BASE_RUNS) - {"reasoner_shape"}:
        assert new["figures"][name] == info["figures"][name]
        assert new["timings_s"][name] == info["timings_s"][name]
    assert "reasoner_shape" in new["timings_s"]
    # A base that has every run: nothing trains, the weights are the same.
    again = run_toybases(quick_bases(tmp_path / "again", continue_from=str(bases)))
    assert not any(p.name in BASE_RUNS for p in (tmp_path / "again").iterdir())
    assert differing_files(bases / "vlm", again / "vlm") == []


def test_a_base_whose_runs_do_not_begin_a_chain_is_refused(bases, tmp_path) -> None:
    holed = tmp_path / "holed"
    shutil.copytree(bases, holed)
    info = base_info(holed)
    del info["figures"]["reasoner_more"]
    (holed / BASE_FILE).write_text(json.dumps(info))
    with pytest.raises(BasesError, match=r"reasoner runs .* are not the start of"):
        run_toybases(quick_bases(tmp_path / "out", continue_from=str(holed)))
    with pytest.raises(BasesError, match="not both"):
        run_toybases(
            quick_bases(tmp_path / "out", continue_from=str(bases), reasoner_from=str(bases))
        )


def test_a_renderer_rebuild_refuses_what_is_not_a_base(tmp_path) -> None:
    with pytest.raises(BasesError, match="not a toy base"):
        run_toybases(quick_bases(tmp_path / "out", reasoner_from=str(tmp_path)))


def test_splits_hold_out_compositions(recipe) -> None:
    out, _ = recipe
    train = load_manifest(out / "data" / "train" / "manifest.jsonl")
    test = load_manifest(out / "data" / "test" / "manifest.jsonl")
    heldout = load_manifest(out / "data" / "test_heldout" / "manifest.jsonl")
    mentions = lambda s: [p for p in HELD_OUT if p in f"{s.question} {s.answer}"]  # noqa: E731
    assert all(not mentions(s) for s in train) and all(not mentions(s) for s in test)
    assert all(any(p in s.answer for p in HELD_OUT) for s in heldout)
    assert {s.id for s in test}.isdisjoint(s.id for s in train)


def test_table_has_every_variant_with_seed_statistics(recipe) -> None:
    out, _ = recipe
    tables = json.loads((out / "results.json").read_text())
    assert sorted(tables) == ["test", "test_heldout"]
    table = tables["test"]
    names = [rows[0]["name"] for rows in table]
    assert names == [
        "Cascade (SFT VLM + text-only VDM)",
        "VANS (SFT)",
        "VANS (Stage 1 only)",
        "VANS (Joint-GRPO)",
        "VANS (Joint-GRPO, Stage 2 without r_c2)",
    ]
    assert [len(rows) for rows in table] == [1, 1, 2, 2, 1]
    assert [r["protocol"]["source"] for r in table[3]] == [
        str(out / f"seed{s}" / "joint_grpo_stage2" / "final") for s in (0, 5)
    ]
    text = (out / "results.md").read_text()
    rouge = [r["metrics"]["rouge_l"] for r in table[2]]
    cell = f"{statistics.fmean(rouge):.4f} ± {statistics.stdev(rouge):.4f}"
    assert "| VANS (Stage 1 only) (2 seeds) | " in text and cell in text
    assert "## test_heldout: held-out compositions" in text
    for rows in table:
        assert all(r["num_samples"] == 4 and r["num_failed"] == 0 for r in rows)
        assert all(r["metrics"][m] is not None for r in rows for m in ("clip_v", "fvd"))


def test_cascade_renders_without_reference_frames(recipe) -> None:
    out, _ = recipe
    assert load_settings(out / "sft_vdm_text_only" / "final").num_reference_frames == 0
    assert load_settings(out / "sft_vdm" / "final").num_reference_frames == 6


def test_the_r_c2_ablation_is_stage_2_without_r_c2_from_the_first_seed(recipe) -> None:
    out, _ = recipe
    config = yaml.safe_load(
        (out / "seed0" / "joint_grpo_stage2_no_rc2" / "config.yaml").read_text()
    )
    assert config["grpo"]["reward_weights"] == {"r_c2": 0.0}
    assert config["checkpoint"] == str(out / "seed0" / "joint_grpo_stage1" / "final")
    assert not (out / "seed5" / "joint_grpo_stage2_no_rc2").exists()


def test_release_is_the_first_seed_and_its_figures_reproduce(recipe) -> None:
    out, _ = recipe
    release = out / "release"
    info = json.loads((release / RELEASE_FILE).read_text())
    tables = json.loads((out / "results.json").read_text())
    joint = tables["test"][3][0]  # the Joint-GRPO row, seed 0
    assert info["rouge_l"] == joint["metrics"]["rouge_l"]
    for split in ("test", "test_heldout"):
        assert info["metrics"][split] == tables[split][3][0]["metrics"]
        assert info["truth"][split] == tables[split][3][0]["truth"]
    assert info["test_split"]["held_out_mode"] == "exclude"
    assert info["test_splits"]["test_heldout"]["held_out_mode"] == "only"
    configs = sorted(p.name for p in (release / "training").glob("*.yaml"))
    assert "base-reasoner.yaml" in configs and "seed0-joint_grpo_stage1.yaml" in configs
    _, _, settings = load_checkpoint(release)
    assert settings.sampling.do_sample is False and settings.sampling.max_new_tokens == 128
    samples = load_manifest(out / "data" / "test" / "manifest.jsonl")
    figures = release_caption_figures(release, samples)
    assert figures["rouge_l"] == pytest.approx(info["rouge_l"], abs=1e-12)
    for check in ("names_movers", "no_absent_objects", "event_right", "caption_right"):
        assert figures[check] == pytest.approx(joint["truth"][check], abs=1e-12), check
    assert (release / "results.md").read_text() == (out / "results.md").read_text()


def test_figures_and_strips(recipe) -> None:
    out, _ = recipe
    for stage in ("joint_grpo_stage1", "joint_grpo_stage2", "joint_grpo_stage2_no_rc2"):
        with Image.open(out / "figures" / f"{stage}.png") as png:
            assert png.size[0] > 400
    strips = sorted((out / "strips").glob("toy*.gif"))
    assert len(strips) == 4
    # input, truth and 5 variants: seven 64-px panels, 4-px gaps.
    assert read_video(strips[0]).frames.shape[2] == 7 * 64 + 6 * 4


def test_rerun_resumes_without_retraining(recipe) -> None:
    out, args = recipe
    timings = json.loads((out / "timings.json").read_text())
    before = {k: v for k, v in timings.items() if not k.startswith("eval/")}
    assert run(args) == 0
    after = json.loads((out / "timings.json").read_text())
    assert {k: after[k] for k in before} == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "nonsense"], "expected RUN:KEY=VALUE"),
        (["--set", "sft_vml:train.steps=2"], "unknown runs ['sft_vml']"),
        (["--configs", "/nonexistent"], "/nonexistent: missing stage configs"),
        (["--bases", "/nonexistent"], "/nonexistent: not a toy base directory"),
    ],
)
def test_bad_recipe_arguments_are_named(tmp_path, capsys, extra, message) -> None:
    assert run(["reproduce", "toyworld", "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_answer_strip_layout() -> None:
    inp = torch.full((3, 4, 5, 3), 90, dtype=torch.uint8)
    futures = [torch.full((2, 4, 5, 3), 30 * (k + 1), dtype=torch.uint8) for k in range(2)]
    strip = answer_strip(inp, futures)
    assert strip.shape == (5, 4 + 3, 3 * 5 + 2 * 4, 3)
    # While the input plays, the futures are dimmed first frames; then they play.
    assert strip[0, 3:, 9:14].eq(30 // 3).all() and strip[4, 3:, 18:23].eq(60).all()
    assert strip[4, 3:, :5].eq(90).all()  # the input holds its last frame
    assert strip[0, :3, :5, 2].eq(255).all() and strip[4, :3, 9:14, 1].eq(200).all()
    labelled = answer_strip(inp, futures, ["in", "a", "b"])
    assert labelled.shape[1] == strip.shape[1] + 12
    assert labelled[:, :12].float().mean() > 0  # the labels are drawn


def test_seeded_rows_show_mean_and_sample_std() -> None:
    def result(rouge: float) -> EvalResult:
        protocol = {
            "video": [],
            "rouge_l_variant": "coco",
            "source": "x",
            "seed": 0,
            "embedder": None,
            "i3d": None,
        }
        metrics = {"bleu4": 0.1, "rouge_l": rouge, "fvd": None, "clip_v": None, "clip_t": None}
        return EvalResult("M", metrics, "FVD-toy", protocol, 4, 0, {"rouge-score": 0.2})

    text = results_markdown([[result(0.2), result(0.4), result(0.3)]])
    # mean 0.3, sample std sqrt(((0.1)^2 + (0.1)^2) / 2) = 0.1
    assert "| M (3 seeds) | 0.1000 ± 0.0000 | 0.3000 ± 0.1000 | – | – | – |" in text
    assert "| M | 0.1000 | 0.2000 |" in results_markdown([result(0.2)])


@pytest.mark.parametrize("pool", ["threads", "inline"])
def test_jobs_start_when_what_they_need_is_done_and_stop_at_a_failure(pool) -> None:
    """The recipe's schedule: a job runs once the job it needs is done (no worker held
    waiting: one worker suffices for a chain), and after a failure no new job starts."""
    ran: list[str] = []

    def job(name: str, fail: bool = False):
        def run_job(value: str) -> str:
            ran.append(name)
            if fail:
                raise RuntimeError(f"{name} failed")
            return f"{value}>{name}"

        return run_job

    with ThreadPoolExecutor(1) if pool == "threads" else _Inline() as executor:
        jobs = _Jobs(executor)
        a = jobs.start(job("a"), "start")
        b = jobs.after(a, job("b"))
        c = jobs.after(b, job("c"))
        assert c.result(5) == "start>a>b>c" and ran == ["a", "b", "c"]

        bad = jobs.after(c, job("bad", fail=True))
        late = jobs.after(bad, job("after bad"))
        with pytest.raises(RuntimeError, match="bad failed"):
            late.result(5)
        independent = jobs.after(
            a, job("independent")
        )  # needs only a, but starts after the failure
        with pytest.raises(RuntimeError, match="bad failed"):
            independent.result(5)
    assert ran == ["a", "b", "c", "bad"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_has_the_train_command_the_recipe_runs(stage, capsys) -> None:
    assert run(["train", *train_command(stage), "--help"]) == 0
    assert "--resume" in capsys.readouterr().out


CLOCK_FILES = ("timings.json", "train.log")
"""Files that record wall-clock time (and progress bars) only."""


def recorded(root: Path, name: Path) -> object:
    """What a file of a recipe output records, less wall-clock time and the output folder's
    own path."""
    data = (root / name).read_bytes().replace(str(root).encode(), b"OUT")
    if name.name == "metrics.jsonl":
        rows = [json.loads(line) for line in data.splitlines()]
        clock = ("samples_per_s",)
        return [
            {k: v for k, v in r.items() if not k.startswith("time/") and k not in clock}
            for r in rows
        ]
    if name.name == "results.md":
        return re.sub(rb"Total compute of the recipe's steps: [0-9.]+ min", b"", data)
    return data


@pytest.mark.slow
def test_recipe_in_another_process_writes_the_same_bytes(recipe, tmp_path) -> None:
    """Same seed, same bytes: the whole recipe rerun from scratch in a new process writes
    every weight, MP4, table, figure and strip byte for byte; only wall-clock records and
    the output folder's path differ."""
    out, args = recipe
    again = tmp_path / "again"
    rerun = [*args]
    rerun[rerun.index("--out") + 1] = str(again)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run([sys.executable, "-m", "vans.cli.main", *rerun], env=env)
    assert done.returncode == 0
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert any(f.suffix == ".safetensors" for f in files) and any(f.suffix == ".mp4" for f in files)
    differing = [
        str(f)
        for f in files
        if f.name not in CLOCK_FILES
        and (not (again / f).is_file() or recorded(out, f) != recorded(again, f))
    ]
    assert differing == []
