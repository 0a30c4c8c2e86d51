"""The generic training loop: configs, LR schedule, data order and seeds, accumulation,
clipping, checkpoints and exact resume (in-process, after SIGKILL), two processes under
torchrun, metrics and curves. All on the tiny task of `train_toy_task.py`."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import types
from dataclasses import make_dataclass, replace
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from rich.console import Console
from safetensors.torch import load_file

from train_toy_task import ToyRunConfig, ToyTask, ToyTaskConfig
from vans.errors import ConfigError
from vans.models.errors import CheckpointError
from vans.seeding import sample_seed
from vans.training.checkpointing import check_checkpoint, checkpoint_dirs, latest_checkpoint
from vans.training.config import TrainConfig, config_to_dict, load_config
from vans.training.loop import (
    epoch_permutation,
    lr_factor,
    micro_batch_positions,
    nan_mean,
    train,
)

TOY_SCRIPT = Path(__file__).with_name("train_toy_task.py")


def toy_config(out: Path, **fields) -> TrainConfig:
    base = dict(
        out_dir=str(out), steps=8, batch_size=4, lr=1e-2, log_every=1, save_every=4,
        eval_every=4, eval_samples=4, seed=3,
    )  # fmt: skip
    return TrainConfig(**{**base, **fields})


def run_toy(config: TrainConfig, task_config: ToyTaskConfig | None = None, **kw) -> ToyTask:
    task = ToyTask(task_config or ToyTaskConfig(), seed=config.seed)
    task.result = train(task, config, **kw)
    return task


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# --- configs -------------------------------------------------------------------------------


def test_load_config_maps_nested_yaml_and_applies_overrides(tmp_path: Path) -> None:
    file = tmp_path / "run.yaml"
    file.write_text(
        "task:\n  num_train: 10\n  noise: 0\n"  # int for a float field
        "train:\n  lr: 1e-3\n  adam_betas: [0.8, 0.95]\n  max_grad_norm: null\n"
        "  lr_schedule: cosine\n  steps: 50\n"
    )
    config = load_config(ToyRunConfig, file, ["train.steps=7", "train.lr=2e-4", "task={hidden: 3}"])
    assert config.task == ToyTaskConfig(num_train=10, noise=0.0, hidden=3)
    assert isinstance(config.task.noise, float)
    train_config = config.train
    assert (train_config.steps, train_config.lr, train_config.lr_schedule) == (7, 2e-4, "cosine")
    assert train_config.adam_betas == (0.8, 0.95) and train_config.max_grad_norm is None
    assert train_config.batch_size == TrainConfig().batch_size  # untouched fields: defaults
    # the saved form reads back to the same config
    saved = tmp_path / "saved.yaml"
    saved.write_text(yaml.safe_dump(config_to_dict(config)))
    assert load_config(ToyRunConfig, saved, []) == config


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "message"),
    [
        ("train:\n  lrr: 1\n", [], "run.yaml: train.lrr: unknown field (did you mean 'lr'?)"),
        ("train:\n  steps: 1.5\n", [], "run.yaml: train.steps: expected an integer, got float"),
        ("train:\n  lr_schedule: cos\n", [], "train.lr_schedule: must be one of 'constant'"),
        ("train:\n  adam_betas: [0.9]\n", [], "train.adam_betas: expected 2 items, got 1"),
        ("train: 3\n", [], "run.yaml: train: expected a mapping, got int 3"),
        ("- 1\n", [], "run.yaml: expected a mapping of fields"),
        ("", ["trian.lr=1"], "override 'trian.lr=1': trian: unknown field (did you mean 'train'"),
        ("", ["train.lr=fast"], "override 'train.lr=fast': train.lr: expected a number"),
        ("", ["train.steps.x=1"], "override 'train.steps.x=1': train.steps is not a section"),
        ("", ["train.lr"], "override 'train.lr': expected KEY=VALUE"),
        ("", ["train={stepz: 1}"], "override 'train={stepz: 1}': train.stepz: unknown field"),
    ],
)
def test_load_config_errors_name_the_source_and_field(
    tmp_path: Path, yaml_text: str, overrides: list[str], message: str
) -> None:
    file = tmp_path / "run.yaml"
    file.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(ToyRunConfig, file, overrides)
    assert message in str(info.value)


def test_load_config_missing_file_and_required_fields(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read config"):
        load_config(ToyRunConfig, tmp_path / "nope.yaml", [])
    required = make_dataclass("Required", [("data", str)])  # a field without a default
    with pytest.raises(ConfigError, match="defaults: missing required field data"):
        load_config(required, None, [])
    assert load_config(required, None, ["data=x.jsonl"]).data == "x.jsonl"


# --- pure pieces ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [("constant", "constant_with_warmup"), ("linear", "linear"), ("cosine", "cosine")],
)
def test_lr_schedule_matches_transformers(ours: str, theirs: str) -> None:
    from transformers import get_scheduler

    total, warmup = 20, 4
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = get_scheduler(theirs, optimizer, num_warmup_steps=warmup, num_training_steps=total)
    expected = []
    for _ in range(total):
        expected.append(reference.get_last_lr()[0])
        optimizer.step()
        reference.step()
    ours_values = [lr_factor(s, ours, warmup, total) for s in range(total)]
    assert ours_values == pytest.approx(expected, abs=1e-12)
    # hand-computed points: warm-up 0, 1/4, then the half-way point of the decay
    assert ours_values[:2] == [0.0, 0.25]
    assert (
        lr_factor(12, ours, warmup, total) == {"constant": 1.0, "linear": 0.5, "cosine": 0.5}[ours]
    )


def test_data_order_and_process_split() -> None:
    # every epoch is a permutation, different across epochs, the same for the same seed
    first, second = epoch_permutation(0, 0, 10), epoch_permutation(0, 1, 10)
    assert sorted(first.tolist()) == list(range(10)) and first.tolist() != second.tolist()
    assert torch.equal(first, epoch_permutation(0, 0, 10))
    # a step of 8 samples, 2 micro-batches, 2 processes: each micro-batch of 4 is split in two
    assert micro_batch_positions(16, 8, 2, 2, 0) == [[16, 17], [20, 21]]
    assert micro_batch_positions(16, 8, 2, 2, 1) == [[18, 19], [22, 23]]
    assert micro_batch_positions(16, 8, 2, 1, 0) == [[16, 17, 18, 19], [20, 21, 22, 23]]
    seeds = {sample_seed(0, p) for p in range(1000)}
    assert len(seeds) == 1000 and sample_seed(0, 5) != sample_seed(0, 5, stream=1)


def test_the_loop_follows_the_data_order_across_epochs(tmp_path: Path) -> None:
    # 8 steps x 4 samples over 10 items: three epoch boundaries, two micro-batches per step
    config = toy_config(tmp_path, grad_accum=2, eval_every=0)
    task = run_toy(config, ToyTaskConfig(num_train=10))
    assert [len(indices) for indices, _ in task.collated] == [2] * 16
    indices = [i for chunk, _ in task.collated for i in chunk]
    seeds = [s for _, chunk in task.collated for s in chunk]
    orders = [epoch_permutation(config.seed, epoch, 10).tolist() for epoch in range(4)]
    assert indices == [orders[p // 10][p % 10] for p in range(32)]
    assert seeds == [sample_seed(config.seed, p) for p in range(32)]


# --- the loop ------------------------------------------------------------------------------


def manual_first_step(config: TrainConfig) -> tuple[ToyTask, torch.Tensor, list[torch.Tensor]]:
    """The first batch's loss and gradient, computed by hand from the documented data order."""
    task = ToyTask(ToyTaskConfig(), seed=config.seed)
    order = epoch_permutation(config.seed, 0, len(task.train_items))
    positions = range(config.batch_size)
    batch = task.collate(
        [task.train_items[int(order[p])] for p in positions],
        [sample_seed(config.seed, p) for p in positions],
    )
    loss = task.loss(task.model, batch)["loss"]
    params = [p for p in task.model.parameters() if p.requires_grad]
    return task, loss, torch.autograd.grad(loss, params)


@pytest.mark.parametrize("max_grad_norm", [None, 0.05])
def test_first_step_is_adamw_on_the_clipped_global_gradient(
    tmp_path: Path, max_grad_norm: float | None
) -> None:
    # adam_eps = 1 makes the update depend on the gradient's scale, so clipping shows
    config = toy_config(tmp_path, steps=1, adam_eps=1.0, max_grad_norm=max_grad_norm)
    reference, loss, grads = manual_first_step(config)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = min(1.0, max_grad_norm / (float(norm) + 1e-6)) if max_grad_norm else 1.0
    trained = run_toy(config)
    row = rows(tmp_path)[0]
    assert row["loss"] == pytest.approx(loss.item(), abs=1e-6)
    assert row["grad_norm"] == pytest.approx(float(norm), rel=1e-5)
    assert scale < 1.0 if max_grad_norm else scale == 1.0
    # first AdamW step: m_hat = g, v_hat = g^2, so p -= lr * g / (|g| + eps)
    start = [p.detach() for p in reference.model.parameters() if p.requires_grad]
    new = [p.detach() for p in trained.model.parameters() if p.requires_grad]
    for p0, p1, g in zip(start, new, grads, strict=True):
        g = g * scale
        expected = p0 - config.lr * g / (g.abs() + config.adam_eps)
        torch.testing.assert_close(p1, expected, atol=1e-6, rtol=0)
    # the frozen layer did not move and is not in the checkpoint
    assert torch.equal(trained.model.frozen.weight, reference.model.frozen.weight)
    saved = load_file(latest_checkpoint(tmp_path) / "trainable.safetensors")
    assert set(saved) == {"net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias"}


def test_gradient_accumulation_and_workers_match_one_big_batch(tmp_path: Path) -> None:
    config = toy_config(tmp_path / "a", lr_schedule="cosine", warmup_steps=2)
    whole = run_toy(config)
    accumulated = run_toy(replace(config, out_dir=str(tmp_path / "b"), grad_accum=2))
    assert whole.result.losses == pytest.approx(accumulated.result.losses, abs=1e-6)
    assert max_diff(whole.model.state_dict(), accumulated.model.state_dict()) < 1e-6
    # DataLoader workers collate the same batches
    workers = run_toy(replace(config, out_dir=str(tmp_path / "c"), num_workers=2))
    assert workers.result.losses == whole.result.losses
    # the LR rows follow the schedule (warm-up 0, 0.5, then cosine)
    lrs = [r["lr"] for r in rows(tmp_path / "a")]
    assert lrs == pytest.approx([config.lr * lr_factor(s, "cosine", 2, 8) for s in range(8)])


def test_checkpoints_pruning_metrics_curves_and_final(tmp_path: Path) -> None:
    config = toy_config(tmp_path, steps=7, save_every=2, keep_last=2, eval_every=3, log_every=2)
    task = run_toy(config)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-00000006", "step-00000007"]
    state = json.loads((tmp_path / "checkpoints/step-00000007/state.json").read_text())
    assert state == {"step": 7, "samples_seen": 28, "num_processes": 1}
    saved = yaml.safe_load((tmp_path / "checkpoints/step-00000007/config.yaml").read_text())
    assert saved == config_to_dict(config)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == config_to_dict(config)
    # rows every 2 steps, plus eval steps (3, 6) and the last; loss averaged since the last row
    logged = rows(tmp_path)
    assert [r["step"] for r in logged] == [2, 3, 4, 6, 7]
    assert [("eval_loss" in r) for r in logged] == [False, True, False, True, True]
    losses = task.result.losses
    assert logged[0]["loss"] == pytest.approx((losses[0] + losses[1]) / 2)
    assert logged[1]["loss"] == pytest.approx(losses[2])
    for row in logged:
        assert {"loss", "mae", "lr", "grad_norm", "samples_per_s", "epoch"} <= set(row)
        assert row["samples_per_s"] > 0 and math.isfinite(row["grad_norm"])
    # eval loss of the final model, recomputed by hand: first 4 eval items, fixed seeds
    final = ToyTask(ToyTaskConfig(), seed=config.seed)
    final.model.load_state_dict(load_file(tmp_path / "final" / "model.safetensors"))
    final.model.eval()
    items = final.eval_items[:4]
    seeds = [sample_seed(config.seed, j, stream=1) for j in range(4)]
    with torch.no_grad():
        expected = final.loss(final.model, final.collate(items, seeds))["loss"]
    assert logged[-1]["eval_loss"] == pytest.approx(float(expected), abs=1e-6)
    with Image.open(tmp_path / "curves.png") as image:
        assert image.format == "PNG" and image.size == (800, 320)  # loss and lr panels
        image.load()


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    # dropout draws from the global RNG: equal weights need its state restored too
    task_config = ToyTaskConfig(dropout=0.2)
    config = toy_config(tmp_path / "a", steps=10, save_every=3, lr_schedule="cosine")
    reference = run_toy(config, task_config)

    crashed = replace(config, out_dir=str(tmp_path / "b"))
    with pytest.raises(RuntimeError, match="crash at training batch 8"):
        run_toy(crashed, replace(task_config, crash_at_batch=8))
    assert latest_checkpoint(tmp_path / "b").name == "step-00000006"
    with pytest.raises(ConfigError, match="pass --resume"):
        run_toy(crashed, task_config)
    # a half-written checkpoint (killed before its rename) is ignored
    (tmp_path / "b/checkpoints/.step-00000009.abc.tmp").mkdir()
    resumed = run_toy(crashed, task_config, resume=True)
    assert resumed.result.step == 10 and len(resumed.result.losses) == 4
    assert resumed.result.losses == reference.result.losses[6:]
    assert max_diff(reference.model.state_dict(), resumed.model.state_dict()) < 1e-6
    # metrics: rows 7 (logged before the crash, after the checkpoint) are not duplicated
    assert [r["step"] for r in rows(tmp_path / "b")] == list(range(1, 11))
    assert [r["loss"] for r in rows(tmp_path / "b")] == [r["loss"] for r in rows(tmp_path / "a")]


def test_bad_checkpoints_and_batch_sizes_are_named(tmp_path: Path) -> None:
    config = toy_config(tmp_path, steps=2, save_every=1)
    run_toy(config)
    for checkpoint in checkpoint_dirs(tmp_path):
        (checkpoint / "optimizer.pt").unlink()
    with pytest.raises(CheckpointError, match=r"no checkpoint of the run reads back: .*missing"):
        run_toy(config, resume=True)
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        check_checkpoint(tmp_path / "nothing")
    bad = toy_config(tmp_path / "c", batch_size=6, grad_accum=4)
    with pytest.raises(ConfigError, match=r"train.batch_size=6 must be a multiple"):
        run_toy(bad)
    with pytest.raises(ConfigError, match=r"train.steps must be at least 1"):
        run_toy(replace(bad, steps=0))


def test_resume_passes_over_a_damaged_newest_checkpoint(tmp_path: Path, capsys) -> None:
    """A truncated newest checkpoint (a full disk, a copy cut short): the run resumes from the
    previous intact one, says so, and still ends where an uninterrupted run does."""
    config = toy_config(tmp_path / "a", steps=8, save_every=2, lr_schedule="cosine")
    reference = run_toy(config)
    crashed = replace(config, out_dir=str(tmp_path / "b"))
    with pytest.raises(RuntimeError, match="crash at training batch 7"):
        run_toy(crashed, ToyTaskConfig(crash_at_batch=7))
    newest = latest_checkpoint(tmp_path / "b")
    weights = newest / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    resumed = run_toy(crashed, resume=True, console=Console(width=400))
    assert f"skipping a damaged checkpoint: {newest}: damaged" in capsys.readouterr().out
    assert resumed.result.losses == reference.result.losses[4:]
    assert max_diff(reference.model.state_dict(), resumed.model.state_dict()) < 1e-6


def test_resume_refuses_other_settings_than_the_runs(tmp_path: Path) -> None:
    """The learning rate lives in the checkpoint's scheduler: a new train.lr would be ignored
    while config.yaml recorded it."""
    config = toy_config(tmp_path, steps=4, save_every=2)
    with pytest.raises(RuntimeError, match="crash"):
        run_toy(config, ToyTaskConfig(crash_at_batch=3))
    with pytest.raises(ConfigError, match=r"than the run's: lr \(0.01 -> 0.1\)"):
        run_toy(replace(config, lr=0.1), resume=True)
    longer = run_toy(replace(config, steps=6, eval_every=2), resume=True)  # these may change
    assert longer.result.step == 6


def test_resume_checks_a_stage_configs_train_section(tmp_path: Path) -> None:
    """A stage's run config nests the loop's fields under train (sft_vlm.yaml's layout)."""
    config = toy_config(tmp_path, steps=4, save_every=2)

    def stage(c: TrainConfig, dropout: float = 0.0) -> dict:
        return {"checkpoint": "start", "dropout": dropout, "train": config_to_dict(c)}

    with pytest.raises(RuntimeError, match="crash"):
        run_toy(config, ToyTaskConfig(crash_at_batch=3), run_config=stage(config))
    with pytest.raises(ConfigError, match=r"than the run's: dropout \(0.0 -> 0.5\)"):
        run_toy(config, resume=True, run_config=stage(config, dropout=0.5))
    longer = replace(config, steps=6)
    assert run_toy(longer, resume=True, run_config=stage(longer)).result.step == 6


def test_bf16_autocast_trains_close_to_fp32(tmp_path: Path) -> None:
    fp32 = run_toy(toy_config(tmp_path / "a", steps=3))
    bf16 = run_toy(toy_config(tmp_path / "b", steps=3, mixed_precision="bf16"))
    assert bf16.result.losses != fp32.result.losses  # the forward really ran in bf16
    assert bf16.result.losses == pytest.approx(fp32.result.losses, abs=2e-2)
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())


# --- processes -----------------------------------------------------------------------------


def script_env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def overrides(config: TrainConfig, task: ToyTaskConfig) -> list[str]:
    fields = {"train": config_to_dict(config), "task": config_to_dict(task)}
    return [
        f"{section}.{key}={json.dumps(value)}"
        for section, values in fields.items()
        for key, value in values.items()
    ]


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    task_config = ToyTaskConfig(dropout=0.2, seconds_per_step=0.03)
    config = toy_config(tmp_path / "killed", steps=60, save_every=5, lr_schedule="linear")
    process = subprocess.Popen(
        [sys.executable, str(TOY_SCRIPT), *overrides(config, task_config)], env=script_env()
    )
    try:
        deadline = time.monotonic() + 60
        while latest_checkpoint(tmp_path / "killed") is None:
            assert process.poll() is None, "the run ended before writing a checkpoint"
            assert time.monotonic() < deadline, "no checkpoint after 60 s"
            time.sleep(0.02)
        time.sleep(0.1)  # a few steps more, maybe mid-write of the next checkpoint
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    interrupted_at = int(latest_checkpoint(tmp_path / "killed").name.split("-")[1])
    assert 5 <= interrupted_at < 60 and not (tmp_path / "killed" / "final").exists()

    fast = replace(task_config, seconds_per_step=0.0)
    resumed = run_toy(config, fast, resume=True)
    run_toy(replace(config, out_dir=str(tmp_path / "reference")), fast)
    assert len(resumed.result.losses) == 60 - interrupted_at
    final = load_file(tmp_path / "killed" / "final" / "model.safetensors")
    expected = load_file(tmp_path / "reference" / "final" / "model.safetensors")
    assert max_diff(final, expected) < 1e-6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_match_one_process(tmp_path: Path) -> None:
    task_config = ToyTaskConfig()
    config = toy_config(tmp_path / "two", steps=6, grad_accum=2, lr_schedule="cosine")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        str(TOY_SCRIPT), *overrides(config, task_config), "--dump-ranks",
    ]  # fmt: skip
    done = subprocess.run(command, env=script_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = load_file(tmp_path / "two" / "rank0.safetensors")
    rank1 = load_file(tmp_path / "two" / "rank1.safetensors")
    assert max_diff(rank0, rank1) == 0.0

    one = run_toy(replace(config, out_dir=str(tmp_path / "one")), task_config)
    two_rows = rows(tmp_path / "two")
    assert [r["step"] for r in two_rows] == list(range(1, 7))
    assert [r["loss"] for r in two_rows] == pytest.approx(one.result.losses, abs=1e-6)
    assert [r["eval_loss"] for r in two_rows if "eval_loss" in r] == pytest.approx(
        [r["eval_loss"] for r in rows(tmp_path / "one") if "eval_loss" in r], abs=1e-6
    )
    assert max_diff(rank0, one.model.state_dict()) < 1e-6
    state = json.loads((latest_checkpoint(tmp_path / "two") / "state.json").read_text())
    assert state["num_processes"] == 2
    assert len(torch.load(latest_checkpoint(tmp_path / "two") / "rng.pt", weights_only=True)) == 2


# --- command line --------------------------------------------------------------------------


def test_cli_stage_reads_config_and_overrides(tmp_path: Path, monkeypatch) -> None:
    import typer
    from typer.testing import CliRunner

    from vans.cli.train import train_app

    # the toy task stands in for the SFT stage module the command imports
    stage = types.ModuleType("vans.training.sft_vdm")
    stage.SFTVDMConfig = ToyRunConfig
    stage.build_sft_vdm_task = lambda config: ToyTask(config.task, seed=config.train.seed)
    monkeypatch.setitem(sys.modules, "vans.training.sft_vdm", stage)
    app = typer.Typer()
    app.add_typer(train_app, name="train")
    file = tmp_path / "toy.yaml"
    file.write_text(f"train:\n  out_dir: {tmp_path / 'run'}\n  steps: 50\n  batch_size: 2\n")

    args = ["train", "sft-vdm", "--config", str(file), "train.steps=3", "task.hidden=5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "saved" in result.output and (tmp_path / "run" / "final").is_dir()
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["train"]["steps"] == 3 and saved["task"]["hidden"] == 5
    assert saved["train"]["batch_size"] == 2
    # resuming a finished run changes nothing; a typo is a one-line error, not a traceback
    result = CliRunner().invoke(app, [*args, "--resume"])
    assert result.exit_code == 0 and "resuming from" in result.output
    result = CliRunner().invoke(app, ["train", "sft-vdm", "train.step=3"])
    assert isinstance(result.exception, ConfigError)
    assert "train.step: unknown field (did you mean 'steps'?)" in str(result.exception)


def test_nan_mean_leaves_out_what_a_batch_could_not_compute():
    assert nan_mean([1.0, math.nan, 3.0]) == 2.0
    assert nan_mean([1.0, math.nan, 4.0], [1.0, 5.0, 2.0]) == pytest.approx((1 + 8) / 3)
    assert math.isnan(nan_mean([math.nan, math.nan]))


def test_curves_of_an_rl_run_get_a_panel_per_reward(tmp_path):
    from vans.training.loop import plot_curves

    rows = [
        {"step": i, "loss": 1 / i, "lr": 1e-3, "reward/r_v2": i / 10, "reward/r_v2_std": 0.1,
         "reward/r_c2": 0.2, "kl": i / 100, "eval_reward/r_v2": 0.3}
        for i in range(1, 4)
    ]  # fmt: skip
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plain = [{k: r[k] for k in ("step", "loss", "lr")} for r in rows]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in plain))
    # loss, lr, r_c2, r_v2 (not its _std), kl: 5 panels in 4 columns and 2 rows; 2 panels plain.
    with Image.open(plot_curves(tmp_path / "m.jsonl", tmp_path / "m.png")) as image:
        assert image.size == (1600, 640)
    with Image.open(plot_curves(tmp_path / "p.jsonl", tmp_path / "p.png")) as image:
        assert image.size == (800, 320)
