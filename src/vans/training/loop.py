"""The training loop every stage runs: one process, or several under `torchrun` (gloo on CPU).

Data order. Sample position p (0, 1, 2, ... over the whole run) is item
`permutation(seed, epoch)[p % len]` with epoch = p // len; optimizer step s consumes the next
`batch_size` positions, cut into `grad_accum` micro-batches, and process r takes its equal
share of each micro-batch. The seed of every random choice made for a sample comes from
(seed, p). So the samples, their noise and the mean loss of a step do not depend on how many
processes run, and a resumed run replays exactly what the interrupted one would have done.

Gradients. Each process backpropagates the mean loss of its shard divided by `grad_accum`;
after the last micro-batch the gradients are averaged over processes in one collective, which
makes them the gradient of the mean over the global batch. Averaging explicitly, rather than
through DDP's forward hooks, keeps this true however the task calls its model.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import gather_object, send_to_device, set_seed
from rich.console import Console

from vans.errors import ConfigError
from vans.io import atomic_dir, atomic_file, write_text
from vans.progress import progress_bar
from vans.seeding import EVAL_STREAM, ORDER_STREAM, sample_seed
from vans.training.checkpointing import (
    TrainState,
    latest_checkpoint,
    resume_checkpoint,
    rng_state,
    save_checkpoint,
    trainable_parameters,
)
from vans.training.config import TrainConfig, config_to_dict
from vans.training.task import TrainTask

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
FINAL_DIR = "final"
_BUCKET_NUMEL = 1 << 24  # gradient elements averaged per collective


@dataclass
class TrainResult:
    """What a call to `train` did."""

    step: int
    """Optimizer steps the run has taken in total (including those before a resume)."""
    losses: list[float]
    """Training loss (mean over the global batch) of each step this call ran."""
    samples_per_s: float
    """Training throughput of this call over all processes (setup and saving excluded)."""
    out_dir: Path
    final_dir: Path
    """The trained model, written by `task.save_pretrained`."""


def lr_factor(step: int, schedule: str, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the peak LR at optimizer step `step` (0-based): linear warm-up from 0,
    then constant, a linear decay to 0, or a half cosine to 0 at `total_steps` (the same
    curves as transformers' `get_scheduler` "constant_with_warmup", "linear", "cosine")."""
    if step < warmup_steps:
        return step / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    raise ValueError(f"unknown lr_schedule {schedule!r}")


def epoch_permutation(seed: int, epoch: int, size: int) -> torch.Tensor:
    """The data order of one epoch."""
    generator = torch.Generator().manual_seed(sample_seed(seed, epoch, stream=ORDER_STREAM))
    return torch.randperm(size, generator=generator)


def micro_batch_positions(
    start: int, batch_size: int, grad_accum: int, num_processes: int, process_index: int
) -> list[list[int]]:
    """The sample positions process `process_index` takes in each micro-batch of the
    optimizer step whose global batch starts at position `start`."""
    micro = batch_size // grad_accum
    share = micro // num_processes
    firsts = [start + k * micro + process_index * share for k in range(grad_accum)]
    return [list(range(first, first + share)) for first in firsts]


def adamw(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.AdamW:
    """The optimizer every stage trains with, as `config` sets it."""
    return torch.optim.AdamW(
        params,
        lr=config.lr,
        betas=config.adam_betas,
        eps=config.adam_eps,
        weight_decay=config.weight_decay,
    )


def train(
    task: TrainTask,
    config: TrainConfig,
    *,
    resume: bool = False,
    console: Console | None = None,
    run_config: dict[str, Any] | None = None,
) -> TrainResult:
    """Train `task.model` for `config.steps` optimizer steps (see the module docstring).

    With `resume`, continue from the newest checkpoint in `config.out_dir` (or start afresh
    if there is none). `console` gets a progress bar (or, when it is not a terminal, one line
    per metrics row) on the main process. `run_config` is the whole run's resolved config,
    saved with every checkpoint (defaults to `config`).
    """
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    world, rank = accelerator.num_processes, accelerator.process_index
    main = accelerator.is_main_process
    iterations = getattr(task, "num_iterations", 1)
    _check(config, world, iterations)
    out_dir = Path(config.out_dir)
    try:  # before any work: a run that cannot write its checkpoints must not start
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"train.out_dir {out_dir}: cannot be made a folder ({exc.strerror or exc})"
        ) from None
    run_config = run_config if run_config is not None else config_to_dict(config)

    dataset = task.train_dataset()
    if len(dataset) == 0:
        raise ConfigError("the task's training set is empty")
    model = task.model.to(accelerator.device)
    params = list(trainable_parameters(model).values())
    if not params:
        raise ConfigError("the task's model has no parameter with requires_grad")
    optimizer = adamw(params, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        partial(
            lr_factor,
            schedule=config.lr_schedule,
            warmup_steps=config.warmup_steps,
            total_steps=config.steps,
        ),
    )

    set_seed(config.seed, device_specific=True)  # global RNGs (dropout): one stream per rank
    state = TrainState(step=0, samples_seen=0, num_processes=world)
    checkpoint = latest_checkpoint(out_dir)
    if checkpoint is not None and not resume:
        raise ConfigError(
            f"{out_dir}: holds checkpoints of an earlier run (newest {checkpoint.name}); "
            "pass --resume to continue it, or choose another out_dir"
        )
    if checkpoint is not None:
        checkpoint, state, passed = resume_checkpoint(
            out_dir, model=model, optimizer=optimizer, scheduler=scheduler, process_index=rank
        )
        for why in passed:
            _say(console, main, f"skipping a damaged checkpoint: {why}")
        _check_resumed_config(checkpoint, run_config)
        if state.step > config.steps:
            raise ConfigError(f"{checkpoint}: is at step {state.step}, beyond steps={config.steps}")
        _say(console, main, f"resuming from {checkpoint} (step {state.step})")
    elif resume:
        _say(console, main, f"no checkpoint in {out_dir}; starting from step 0")
    if world > 1:  # as DDP does: every process starts from rank 0's weights
        for tensor in [*model.parameters(), *model.buffers()]:
            torch.distributed.broadcast(tensor.data, src=0)

    if main:
        write_text(out_dir / CONFIG_FILE, yaml.safe_dump(run_config, sort_keys=False))
    logger = _MetricsLogger(out_dir, state.step, main)
    autocast = partial(
        torch.autocast,
        device_type=accelerator.device.type,
        dtype=torch.bfloat16,
        enabled=config.mixed_precision == "bf16",
    )
    backward = getattr(task, "backward", None)
    micro_batches = _micro_batches(task, dataset, config, state, world, rank, iterations)
    losses: list[float] = []
    seconds = 0.0  # in training steps only: eval and checkpoints are not throughput
    pending: list[dict[str, float]] = []  # steps since the last metrics row
    model.train()
    with _progress(console if main else None, config.steps, state.step) as advance:
        while state.step < config.steps:
            began = time.perf_counter()
            lr = scheduler.get_last_lr()[0]
            values: dict[str, list[float]] = {}
            for _ in range(config.grad_accum):
                batch = send_to_device(next(micro_batches), accelerator.device)
                with autocast():
                    if backward is not None:  # the task backpropagates piece by piece
                        out = backward(model, batch, 1 / config.grad_accum)
                    else:
                        out = task.loss(model, batch)
                        (out["loss"] / config.grad_accum).backward()
                for key, value in out.items():
                    value = float(torch.as_tensor(value).detach())
                    values.setdefault(key, []).append(value)
                del batch, out
            _average_gradients(params, accelerator)
            grad_norm = _clip(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            # A step that reuses the previous step's batch (num_iterations) sees no new sample.
            fresh = config.batch_size if state.step % iterations == 0 else 0
            state = TrainState(state.step + 1, state.samples_seen + fresh, world)
            scalars = _mean_over_processes(values, accelerator)
            took = time.perf_counter() - began
            seconds += took
            losses.append(scalars["loss"])
            pending.append({**scalars, "grad_norm": grad_norm, "seconds": took})

            step = state.step
            last = step == config.steps
            eval_due = config.eval_every > 0 and (step % config.eval_every == 0 or last)
            evaluated = _evaluate(task, model, config, accelerator, autocast) if eval_due else {}
            row = None
            if step % config.log_every == 0 or last or eval_due:
                row = _metrics_row(pending, step, lr, config.batch_size)
                row["epoch"] = state.samples_seen / len(dataset)
                row.update({f"eval_{key}": value for key, value in evaluated.items()})
                logger.write(row)
                pending = []
            advance(row)
            if step % config.save_every == 0 or last:
                rngs = gather_object([rng_state()])
                if main:
                    save_checkpoint(
                        out_dir,
                        state,
                        model=model,
                        optimizer=optimizer,
                        scheduler=scheduler,
                        rng_states=rngs,
                        config=run_config,
                        keep_last=config.keep_last,
                    )
                accelerator.wait_for_everyone()

    final_dir = out_dir / FINAL_DIR
    logger.close()
    check_trained = getattr(task, "check_trained", None)
    if check_trained is not None:  # every process, so all of them raise together
        check_trained(_read_rows(out_dir / METRICS_FILE))
    if main:
        with atomic_dir(final_dir) as tmp:
            task.save_pretrained(model, tmp)
        plot_curves(out_dir / METRICS_FILE, out_dir / CURVES_FILE)
        _say(console, main, f"saved {final_dir}")
    accelerator.wait_for_everyone()
    samples_per_s = len(losses) * config.batch_size / seconds if seconds else 0.0
    return TrainResult(state.step, losses, samples_per_s, out_dir, final_dir)


RESUMABLE_CHANGES = frozenset(
    {"steps", "save_every", "keep_last", "eval_every", "eval_samples", "log_every", "num_workers"}
)
"""`TrainConfig` fields a resumed run may change: how long it runs and how it reports. Any
other change (a learning rate, the data, the model) would be overridden by the checkpoint's
state while config.yaml recorded the new value."""


def _check_resumed_config(checkpoint: Path, run_config: dict[str, Any]) -> None:
    """Refuse to resume a run with settings other than the checkpoint's, naming them."""
    saved = yaml.safe_load((checkpoint / CONFIG_FILE).read_text(encoding="utf-8")) or {}
    old, new = _flatten(saved), _flatten(json.loads(json.dumps(run_config, default=str)))
    changed = sorted(
        key
        for key in {*old, *new}
        if key.removeprefix("train.") not in RESUMABLE_CHANGES and old.get(key) != new.get(key)
    )
    if changed:
        shown = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in changed[:4])
        raise ConfigError(
            f"{checkpoint}: --resume with other settings than the run's: {shown}; resume "
            "with the run's config, or start the new settings in another train.out_dir"
        )


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def _check(config: TrainConfig, world: int, iterations: int) -> None:
    """Field values that cannot run, named."""
    for name in ("steps", "batch_size", "grad_accum", "save_every", "keep_last", "log_every"):
        if getattr(config, name) < 1:
            raise ConfigError(f"train.{name} must be at least 1, got {getattr(config, name)}")
    for name in ("eval_every", "eval_samples", "warmup_steps", "num_workers", "seed"):
        if getattr(config, name) < 0:
            raise ConfigError(f"train.{name} must be >= 0, got {getattr(config, name)}")
    if config.save_every % iterations:
        raise ConfigError(
            f"train.save_every={config.save_every} must be a multiple of grpo.num_iterations "
            f"({iterations}): a resumed run must start at a fresh batch of rollouts"
        )
    if config.batch_size % (world * config.grad_accum):
        raise ConfigError(
            f"train.batch_size={config.batch_size} must be a multiple of the number of "
            f"processes ({world}) times train.grad_accum ({config.grad_accum})"
        )


class _Positions(torch.utils.data.Dataset):
    """Sample position -> (item, per-sample seed), following the run's data order."""

    def __init__(self, dataset: Sequence[Any], seed: int) -> None:
        self.dataset, self.seed = dataset, seed
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int) -> tuple[Any, int]:
        epoch, index = divmod(position, len(self.dataset))
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_permutation(self.seed, epoch, len(self))
        return self.dataset[int(self._order[index])], sample_seed(self.seed, position)


class _Collate:
    """`task.collate` on (item, seed) pairs; a class so DataLoader workers can pickle it."""

    def __init__(self, task: TrainTask) -> None:
        self.task = task

    def __call__(self, pairs: list[tuple[Any, int]]) -> dict[str, Any]:
        return self.task.collate([item for item, _ in pairs], [seed for _, seed in pairs])


class _StepSampler:
    """This process's micro-batches of positions, from `start` to the end of the run; with
    `iterations` > 1 every step's positions are given that many steps in a row (trl's
    `RepeatSampler`: an RL task reuses its rollouts of a batch for that many updates)."""

    def __init__(
        self, config: TrainConfig, state: TrainState, world: int, rank: int, iterations: int
    ) -> None:
        self.config, self.state, self.world, self.rank = config, state, world, rank
        self.iterations = iterations

    def __iter__(self) -> Iterator[list[int]]:
        cfg = self.config
        for s in range(self.config.steps - self.state.step):
            first = self.state.samples_seen + s // self.iterations * cfg.batch_size
            yield from micro_batch_positions(
                first, cfg.batch_size, cfg.grad_accum, self.world, self.rank
            )

    def __len__(self) -> int:
        return (self.config.steps - self.state.step) * self.config.grad_accum


def _micro_batches(
    task: TrainTask,
    dataset: Sequence[Any],
    config: TrainConfig,
    state: TrainState,
    world: int,
    rank: int,
    iterations: int,
) -> Iterator[dict[str, Any]]:
    loader = torch.utils.data.DataLoader(
        _Positions(dataset, config.seed),
        batch_sampler=_StepSampler(config, state, world, rank, iterations),
        collate_fn=_Collate(task),
        num_workers=config.num_workers,
        # A private generator: a fresh loader must not draw from the global RNG, or a
        # resumed run's dropout stream would be one draw off the uninterrupted run's.
        generator=torch.Generator().manual_seed(config.seed),
    )
    return iter(loader)


def _average_gradients(params: list[torch.nn.Parameter], accelerator: Accelerator) -> None:
    """Average gradients over processes, a few large flat buffers at a time. A parameter the
    loss did not reach gets a zero gradient, as under DDP, on every process count alike."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if accelerator.num_processes == 1:
        return
    bucket: list[torch.Tensor] = []
    for p in [*params, None]:
        grad = None if p is None else p.grad
        size = sum(g.numel() for g in bucket)
        if bucket and (
            grad is None or grad.dtype != bucket[0].dtype or size + grad.numel() > _BUCKET_NUMEL
        ):
            flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in bucket]), "mean")
            for g, part in zip(bucket, flat.split([g.numel() for g in bucket]), strict=True):
                g.copy_(part.view_as(g))
            bucket = []
        if grad is not None:
            bucket.append(grad)


def _clip(params: list[torch.nn.Parameter], max_norm: float | None) -> float:
    """Clip the global gradient norm to `max_norm` (if set); returns the norm before."""
    grads = [p.grad for p in params]
    norm = torch.nn.utils.get_total_norm(grads)
    if max_norm is not None:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return float(norm)


def _metrics_row(
    pending: list[dict[str, float]], step: int, lr: float, batch_size: int
) -> dict[str, float]:
    """One metrics row: scalars averaged over the steps since the last row, the LR of the
    last step, and the throughput of those steps."""
    keys = [k for k in pending[0] if k != "seconds"]
    row: dict[str, float] = {"step": step}
    row.update({k: nan_mean([p[k] for p in pending]) for k in keys})
    row["lr"] = lr
    row["samples_per_s"] = len(pending) * batch_size / sum(p["seconds"] for p in pending)
    return row


def nan_mean(values: list[float], weights: list[float] | None = None) -> float:
    """The (weighted) mean of the values that are not NaN; NaN if there are none. A scalar a
    task cannot compute for some batch (e.g. a reward of an RL step whose prompts were all
    skipped) is NaN there and must not erase the other batches' values."""
    weights = weights or [1.0] * len(values)
    kept = [(v, w) for v, w in zip(values, weights, strict=True) if not math.isnan(v)]
    total = sum(w for _, w in kept)
    return sum(v * w for v, w in kept) / total if total else math.nan


def _mean_over_processes(
    values: dict[str, list[float]],
    accelerator: Accelerator,
    weights: list[float] | None = None,
) -> dict[str, float]:
    """Each key's `nan_mean` over its values on every process (all processes hold the same
    keys and equally many values)."""
    keys = sorted(values)
    rows = []
    for key in keys:
        w = weights or [1.0] * len(values[key])
        kept = sum(x for v, x in zip(values[key], w, strict=True) if not math.isnan(v))
        rows.append([nan_mean(values[key], w) * kept if kept else 0.0, kept])
    sums = torch.tensor(rows, dtype=torch.float64).reshape(len(keys), 2)
    if accelerator.num_processes > 1:
        sums = accelerator.reduce(sums.to(accelerator.device), "sum").cpu()
    return {
        key: (total / kept if kept else math.nan)
        for key, (total, kept) in zip(keys, sums.tolist(), strict=True)
    }


@torch.no_grad()
def _evaluate(
    task: TrainTask,
    model: torch.nn.Module,
    config: TrainConfig,
    accelerator: Accelerator,
    autocast: Any,
) -> dict[str, float]:
    """Every scalar of `task.evaluate` (if the task has one, else `task.loss`: the loss and
    what it reports beside it), averaged over the first `eval_samples` held-out items, each
    with a fixed seed, split over processes; empty without an eval set."""
    items = task.eval_dataset()
    count = min(len(items), config.eval_samples) if items is not None else 0
    if count == 0:
        return {}
    world, rank = accelerator.num_processes, accelerator.process_index
    mine = list(range(rank, count, world))
    size = config.batch_size // (config.grad_accum * world)
    score = getattr(task, "evaluate", task.loss)
    values: dict[str, list[float]] = {}
    weights: list[float] = []
    model.eval()
    for i in range(0, len(mine), size):
        chunk = mine[i : i + size]
        batch = task.collate(
            [items[j] for j in chunk], [sample_seed(config.seed, j, EVAL_STREAM) for j in chunk]
        )
        with autocast():
            out = score(model, send_to_device(batch, accelerator.device))
        for key, value in out.items():
            values.setdefault(key, []).append(float(torch.as_tensor(value)))
        weights.append(float(len(chunk)))
    model.train()
    return _mean_over_processes(values, accelerator, weights)


class _MetricsLogger:
    """metrics.jsonl (and TensorBoard when installed) on the main process. On resume, rows
    after the checkpoint's step (written by the interrupted run) are dropped first."""

    def __init__(self, out_dir: Path, step: int, main: bool) -> None:
        self.file = None
        self.board = None
        if not main:
            return
        path = out_dir / METRICS_FILE
        out_dir.mkdir(parents=True, exist_ok=True)
        kept = [r for r in _read_rows(path) if r["step"] <= step] if step > 0 else []
        with atomic_file(path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self.file = path.open("a", encoding="utf-8")
        with contextlib.suppress(ImportError):
            from torch.utils.tensorboard import SummaryWriter

            self.board = SummaryWriter(str(out_dir / "tensorboard"))

    def write(self, row: dict[str, float]) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.board is not None:
            for key, value in row.items():
                if key != "step":
                    self.board.add_scalar(key, value, row["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.board is not None:
            self.board.close()


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(metrics: Path, out: Path) -> Path:
    """Curves from a metrics.jsonl, as PNG: loss (train and eval) and learning rate, then
    for RL stages the panels of the paper's training figure: each reward ("reward/<name>",
    train solid, eval dashed) and the KL and frame-difference diagnostics when logged."""
    from matplotlib.figure import Figure  # Agg, without touching pyplot's global backend

    rows = _read_rows(metrics)
    keys = {k for r in rows for k in r}
    rewards = sorted(k for k in keys if k.startswith("reward/") and not k.endswith("_std"))
    diagnostics = [k for k in ("kl", "video/frame_diff", "length/think_tokens") if k in keys]
    panels = [("loss", ["loss"]), ("learning rate", ["lr"])]
    panels += [(k.removeprefix("reward/"), [k]) for k in rewards]
    panels += [(k, [k]) for k in diagnostics]
    columns = min(len(panels), 4)
    lines = -(-len(panels) // columns)
    fig = Figure(figsize=(4 * columns, 3.2 * lines), dpi=100)
    axes = fig.subplots(lines, columns, squeeze=False).ravel()
    for ax, (title, names) in zip(axes, panels, strict=False):
        for name in names:
            train_rows = [r for r in rows if name in r]
            ax.plot([r["step"] for r in train_rows], [r[name] for r in train_rows], label="train")
            evals = [r for r in rows if f"eval_{name}" in r]
            if evals:
                steps = [r["step"] for r in evals]
                ax.plot(steps, [r[f"eval_{name}"] for r in evals], "o--", label="eval")
                ax.legend()
        ax.set(xlabel="step", title=title)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    with atomic_file(out) as tmp:
        fig.savefig(tmp, format="png")
    return out


@contextlib.contextmanager
def _progress(console: Console | None, total: int, done: int) -> Iterator[Any]:
    """Yields `advance(row)`: a rich bar showing loss, lr and samples/s on a
    terminal, one printed line per metrics row otherwise, nothing without a console."""
    if console is None:
        yield lambda row: None
        return
    if not console.is_terminal:

        def line(row: dict[str, float] | None) -> None:
            if row is not None:
                console.print(f"step {row['step']}/{total} {_describe(row)}", highlight=False)

        yield line
        return
    with progress_bar(console) as bar:
        task = bar.add_task("training", total=total, completed=done)

        def advance(row: dict[str, float] | None) -> None:
            if row is None:
                bar.advance(task)
            else:
                bar.update(task, advance=1, description=_describe(row))

        yield advance


def _describe(row: dict[str, float]) -> str:
    text = f"loss {row['loss']:.4f} lr {row['lr']:.2e} {row['samples_per_s']:.1f} samples/s"
    if "eval_loss" in row:
        text += f" eval {row['eval_loss']:.4f}"
    return text


def _say(console: Console | None, main: bool, text: str) -> None:
    if console is not None and main:
        console.print(text, highlight=False, markup=False)
