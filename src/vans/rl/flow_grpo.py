"""Flow-GRPO for the renderer: SDE trajectories with log-probs, and their re-scoring.

The pieces a Joint-GRPO Stage 2 trainer (docs/paper_facts.md#joint-grpo-stage-2) needs from
the Wan VDM, with the VANS reference conditioning and classifier-free guidance:

1. `Renderer.initial_noise`: the initial noise of a group of G videos (shared or not).
2. `sample_trajectory`: run the renderer's sampler (the inference loop itself) with a
   recording `FlowStep` that takes Flow-GRPO's SDE step (`vans.models.flow_matching`) on
   the steps of the SDE window and the Euler step elsewhere. Every step is kept: latents
   before and after, timestep, and for SDE steps the log-prob of the drawn sample.
3. `train_step_indices`: which recorded steps a gradient step trains on.
4. `step_log_prob`: the log-prob of a recorded step under the current transformer, with
   gradients, through the same `Renderer.predict_velocity` as sampling, so the first
   on-policy ratio exp(log_prob - old_log_prob) is exactly 1.
   `reference_step_log_prob` does the same without gradients under a reference model
   (a frozen transformer, or a context manager such as a LoRA-disabling one) for the KL
   `sde_kl(out.mean, ref.mean, out.std)`.

Per step j of a trajectory the trainer then forms, as Flow-GRPO does,
`ratio = exp(out.log_prob - trajectory.steps[j].log_prob)`, the PPO-clip loss with the
group advantages, plus beta * KL. The timestep-shift pitfall is described in
`vans.models.flow_matching`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import torch

from vans.models.flow_matching import (
    Schedule,
    SDEStepOutput,
    euler_step,
    sde_step_with_logprob,
)
from vans.models.vdm import Conditioning, Renderer
from vans.rl.config import FlowGRPOConfig


@dataclass(frozen=True)
class StepRecord:
    """One recorded denoising step (all latents float32, (B, C, T', h, w))."""

    index: int
    """Position of the step in the schedule."""
    timestep: torch.Tensor
    """The timestep given to the transformer (scalar)."""
    latents: torch.Tensor
    """Latents before the step, at noise level `sigmas[index]`."""
    next_latents: torch.Tensor
    """Latents after the step, at `sigmas[index + 1]`."""
    log_prob: torch.Tensor | None
    """log-prob of `next_latents` under the sampling policy (B,), float32; None for an
    Euler (ODE) step outside the SDE window."""


@dataclass(frozen=True)
class Trajectory:
    """A batch of SDE sampling trajectories."""

    steps: list[StepRecord]
    """Every step, in sampling order."""
    schedule: Schedule
    """The timesteps and sigmas the steps walked."""
    videos: torch.Tensor | None = None
    """The decoded videos, uint8 (B, T, H, W, 3) on the renderer's device, when sampled with
    `decode`."""

    @property
    def final_latents(self) -> torch.Tensor:
        """The clean latents at the end, (B, C, T', h, w), to decode and reward."""
        return self.steps[-1].next_latents

    @property
    def sde_indices(self) -> list[int]:
        """Indices of the steps that have a log-prob (the trainable ones)."""
        return [s.index for s in self.steps if s.log_prob is not None]

    def log_probs(self) -> torch.Tensor:
        """The sampling log-probs of the SDE steps, (B, len(sde_indices)), float32."""
        return torch.stack([s.log_prob for s in self.steps if s.log_prob is not None], dim=1)


class _Recorder:
    """A `FlowStep` that takes the SDE step inside the window, the Euler step elsewhere,
    and keeps every step."""

    def __init__(self, config: FlowGRPOConfig, generator: torch.Generator | None) -> None:
        self.config = config
        self.generator = generator
        self.steps: list[StepRecord] = []
        self.schedule: Schedule | None = None

    def __call__(
        self, latents: torch.Tensor, velocity: torch.Tensor, index: int, schedule: Schedule
    ) -> torch.Tensor:
        self.schedule = schedule
        latents = latents.float()
        log_prob = None
        if self.config.is_sde(index):
            out = sde_step_with_logprob(
                latents,
                velocity,
                index,
                schedule,
                self.config.noise_level,
                generator=self.generator,
            )
            next_latents, log_prob = out.sample, out.log_prob
        else:
            next_latents = euler_step(latents, velocity, index, schedule)
        self.steps.append(
            StepRecord(index, schedule.timesteps[index], latents, next_latents, log_prob)
        )
        return next_latents


@torch.no_grad()
def sample_trajectory(
    renderer: Renderer,
    noise: torch.Tensor,
    conditioning: Conditioning,
    config: FlowGRPOConfig,
    generator: torch.Generator | None = None,
    *,
    decode: bool = False,
) -> Trajectory:
    """Denoise `noise` (B, C, T', h, w) with the SDE sampler and record every step.

    The loop is the renderer's sampler (`Renderer.__call__`: its scheduler and shift,
    `config.num_steps` steps, `predict_velocity` with CFG and reference latents) with the
    recording step; the SDE noise comes from `generator` (the global RNG if None). With
    `decode` the videos are decoded too (`Trajectory.videos`). Runs without gradients.
    """
    recorder = _Recorder(config, generator)
    videos = renderer(
        conditioning=conditioning,
        latents=noise.float(),
        steps=config.num_steps,
        guidance_scale=config.guidance_scale,
        step=recorder,
        output_type="uint8" if decode else "latent",
    )
    assert recorder.schedule is not None  # the sampler runs at least one step
    return Trajectory(
        steps=recorder.steps, schedule=recorder.schedule, videos=videos if decode else None
    )


def train_step_indices(
    trajectory: Trajectory, fraction: float, generator: torch.Generator
) -> list[int]:
    """The SDE steps to train on, in increasing order.

    With n SDE steps: all of them when `fraction` is 1, else the first ceil(fraction * n)
    of a random permutation drawn from `generator` (seed it from the training step so
    every process picks the same steps).
    """
    candidates = trajectory.sde_indices
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return candidates
    count = math.ceil(fraction * len(candidates))
    order = torch.randperm(len(candidates), generator=generator)[:count]
    return sorted(candidates[i] for i in order.tolist())


def step_log_prob(
    renderer: Renderer,
    trajectory: Trajectory,
    index: int,
    conditioning: Conditioning,
    config: FlowGRPOConfig,
) -> SDEStepOutput:
    """Re-score recorded step `index` under the renderer's current transformer.

    The velocity is `Renderer.predict_velocity` on the recorded latents and timestep, the
    step is `sde_step_with_logprob` with the recorded next latents as `prev_sample`, so
    the output's `log_prob` (B,) equals the recorded one when the weights are unchanged.
    Gradients flow into the transformer through `mean` and `log_prob`; `std` is constant.
    To use a wrapped transformer (e.g. DDP), swap it in with `use_transformer`.
    """
    record = _record(trajectory, index)
    velocity = renderer.predict_velocity(
        record.latents,
        record.timestep,
        conditioning.prompt_embeds,
        conditioning.negative_embeds,
        config.guidance_scale,
        conditioning.reference,
    )
    return sde_step_with_logprob(
        record.latents,
        velocity,
        index,
        trajectory.schedule,
        config.noise_level,
        prev_sample=record.next_latents,
    )


def reference_step_log_prob(
    renderer: Renderer,
    trajectory: Trajectory,
    index: int,
    conditioning: Conditioning,
    config: FlowGRPOConfig,
    reference_model: torch.nn.Module | AbstractContextManager[object] | None = None,
) -> SDEStepOutput:
    """`step_log_prob` without gradients under the reference policy of the KL term.

    `reference_model` is a frozen transformer (swapped in for the call), or a context
    manager under which the renderer's own transformer is the reference (e.g. a PEFT
    model's `disable_adapter()`), or None for the current weights.
    """
    if isinstance(reference_model, torch.nn.Module):
        context: AbstractContextManager[object] = use_transformer(renderer, reference_model)
    else:
        context = reference_model or nullcontext()
    with torch.no_grad(), context:
        return step_log_prob(renderer, trajectory, index, conditioning, config)


@contextmanager
def use_transformer(renderer: Renderer, transformer: torch.nn.Module) -> Iterator[Renderer]:
    """Temporarily make `transformer` the renderer's DiT (a reference copy, or the
    training loop's wrapped model); the original is restored on exit."""
    original = renderer.transformer
    renderer.transformer = transformer
    try:
        yield renderer
    finally:
        renderer.transformer = original


def _record(trajectory: Trajectory, index: int) -> StepRecord:
    steps: Sequence[StepRecord] = trajectory.steps
    if not 0 <= index < len(steps):
        raise IndexError(f"step {index} is outside the trajectory's {len(steps)} steps")
    record = steps[index]
    if record.log_prob is None:
        raise ValueError(
            f"step {index} is an Euler (ODE) step outside the SDE window; it has no "
            f"log-prob to train on (SDE steps: {trajectory.sde_indices})"
        )
    return record
