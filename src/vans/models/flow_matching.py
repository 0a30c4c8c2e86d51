"""Flow-matching schedule helpers and sampler steps (pure functions, no model calls).

Wan2.1 is a rectified-flow model: a latent at noise level sigma is
`x_sigma = (1 - sigma) * x_0 + sigma * noise`, and the transformer predicts the velocity
`v = noise - x_0`. Sampling walks the sigmas of a schedule from 1 down to 0; one step
from `sigma` to `sigma_next` turns the current latents and the velocity predicted there
into the next latents.

A step is any callable with the `FlowStep` signature. The renderer's denoising loop
(`vans.models.vdm.Renderer.denoise`) takes one, so samplers plug in here without
touching the loop:

- `scheduler_step(scheduler)`: the diffusers scheduler's own `step` (flow-matching Euler,
  UniPC, ...). The default; it is what diffusers' `WanPipeline` does.
- `euler_step`: the plain ODE Euler step `x + (sigma_next - sigma) * v`, on any
  `Schedule`, e.g. `diffsynth_schedule`: the grid of DiffSynth-Studio's Wan pipeline, which
  the VANS authors' inference samples on (docs/official.md).
- `sde_step(noise_level, generator)`: Flow-GRPO's SDE step (arXiv 2505.05470,
  docs/paper_facts.md#flow-grpo-sde-step),
  the stochastic sampler whose every step has a Gaussian log-probability, which is what
  GRPO needs from a flow model. `sde_step_with_logprob` is the pure step; `sde_kl` the KL
  between two policies' steps. `vans.rl.flow_grpo` records trajectories with it.

The SDE step. With sigma the current noise level, dt = sigma_next - sigma < 0, v the
velocity and `a` the noise level:

    std_dev = a * sqrt(sigma / (1 - sigma))   (at sigma = 1: a * sqrt(1 / (1 - sigmas[1])))
    mean    = x * (1 + std_dev^2 / (2 sigma) * dt)
              + v * (1 + std_dev^2 (1 - sigma) / (2 sigma)) * dt
    x_next  = mean + std_dev * sqrt(-dt) * eps,   eps ~ N(0, I)

It has the ODE's marginals (the reverse SDE of the same flow, Euler-Maruyama discretised);
as a -> 0 it becomes the Euler step. The step's standard deviation is
`std_dev * sqrt(-dt)`; its log-probability is averaged over the non-batch dimensions.

Pitfall (docs/paper_facts.md#flow-grpo-sde-step): d log_prob / d v scales like
sqrt(-dt (1 - sigma) / sigma) (times (1 + a^2/2) / a). A large timestep shift puts most
steps near sigma = 1, where that factor is small, so the policy gradient of those steps
nearly vanishes. With 10 steps it is 0.024 at the first step with shift 5 (0.11 without
shift), and below 0.1 for the first five steps (sigma > 0.86). Flow-GRPO's Wan script
rescales each step's policy loss by std_dev / sqrt(-dt) against this; fewer or lower-shift
training steps also help.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch


@dataclass(frozen=True)
class Schedule:
    """The timesteps a sampler visits and their noise levels.

    `timesteps[i]` is what the transformer is given at step i; `sigmas[i]` is the noise
    level of the latents at that step and `sigmas[i + 1]` the level after it, so `sigmas`
    has one entry more than `timesteps` (the last is the terminal level, 0 for Wan).
    """

    timesteps: torch.Tensor
    sigmas: torch.Tensor

    def __len__(self) -> int:
        return len(self.timesteps)


def set_schedule(scheduler: Any, steps: int, device: torch.device | str | None = None) -> Schedule:
    """Prepare a diffusers flow scheduler for `steps` steps and return its schedule.

    Works with any scheduler exposing `set_timesteps`, `timesteps` and `sigmas` with flow
    sigmas (`FlowMatchEulerDiscreteScheduler`, `UniPCMultistepScheduler` with
    `use_flow_sigmas=True`). It also resets the scheduler's step counter, as WanPipeline
    does, so the scheduler can be reused for the next video.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    scheduler.set_timesteps(steps, device=device)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(0)
    timesteps = scheduler.timesteps
    sigmas = torch.as_tensor(scheduler.sigmas, dtype=torch.float32)
    if len(sigmas) != len(timesteps) + 1:
        raise ValueError(
            f"{type(scheduler).__name__}: expected {len(timesteps) + 1} sigmas for "
            f"{len(timesteps)} timesteps, got {len(sigmas)}; is it a flow-matching scheduler?"
        )
    return Schedule(timesteps=timesteps, sigmas=sigmas)


def diffsynth_schedule(
    steps: int, shift: float, *, timestep_dtype: torch.dtype | None = None
) -> Schedule:
    """DiffSynth-Studio's Wan schedule (`FlowMatchScheduler(shift, sigma_min=0,
    extra_one_step=True)`), on which the VANS authors sample with Euler steps:
    s = linspace(1, 0, steps + 1)[:-1], sigma = shift * s / (1 + (shift - 1) * s), then a
    terminal 0; timesteps 1000 * sigma. With 50 steps and shift 5 the last non-zero sigma is
    0.093, so the final Euler step jumps from there to clean latents.

    `timestep_dtype` rounds the timesteps the transformer is given (their bf16 pipeline
    casts each one to bfloat16 before the embedding; near t = 1000 neighbouring timesteps
    are ~4 apart, bfloat16's spacing there); the sigmas of the steps stay float32, as theirs.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    s = torch.linspace(1, 0, steps + 1, dtype=torch.float32)[:-1]
    sigmas = shift * s / (1 + (shift - 1) * s)
    timesteps = sigmas * 1000
    if timestep_dtype is not None:
        timesteps = timesteps.to(timestep_dtype).float()
    return Schedule(timesteps=timesteps, sigmas=torch.cat([sigmas, sigmas.new_zeros(1)]))


class FlowStep(Protocol):
    """One sampler step: latents at `schedule.sigmas[index]` -> latents at the next level."""

    def __call__(
        self, latents: torch.Tensor, velocity: torch.Tensor, index: int, schedule: Schedule
    ) -> torch.Tensor: ...


def euler_step(
    latents: torch.Tensor, velocity: torch.Tensor, index: int, schedule: Schedule
) -> torch.Tensor:
    """The flow-matching ODE Euler step `x_next = x + (sigma_next - sigma) * v`, in float32."""
    dt = schedule.sigmas[index + 1] - schedule.sigmas[index]  # negative: noise goes down
    x_next = latents.float() + dt * velocity.float()
    return x_next.to(latents.dtype)


def scheduler_step(scheduler: Any) -> FlowStep:
    """A `FlowStep` that defers to `scheduler.step` (call `set_schedule` on it first)."""

    def step(
        latents: torch.Tensor, velocity: torch.Tensor, index: int, schedule: Schedule
    ) -> torch.Tensor:
        return scheduler.step(velocity, schedule.timesteps[index], latents, return_dict=False)[0]

    return step


class SDEStepOutput(NamedTuple):
    """What `sde_step_with_logprob` returns, all float32."""

    sample: torch.Tensor
    """x_next (B, ...): drawn, or the given `prev_sample`."""
    mean: torch.Tensor
    """The step's mean (B, ...); differentiable in the velocity."""
    std: torch.Tensor
    """The step's standard deviation `std_dev * sqrt(-dt)`, a scalar tensor."""
    log_prob: torch.Tensor
    """log N(sample; mean, std^2) averaged over the non-batch dimensions, (B,)."""


def sde_std_dev(schedule: Schedule, index: int, noise_level: float) -> torch.Tensor:
    """`a * sqrt(sigma / (1 - sigma))` at step `index` (float32 scalar tensor); at sigma = 1
    the denominator uses `sigmas[1]` instead, as Flow-GRPO does, to stay finite."""
    sigma = schedule.sigmas[index].float()
    denominator = schedule.sigmas[1].float() if sigma == 1 else sigma
    return noise_level * torch.sqrt(sigma / (1 - denominator))


def sde_step_with_logprob(
    latents: torch.Tensor,
    velocity: torch.Tensor,
    index: int,
    schedule: Schedule,
    noise_level: float = 0.7,
    *,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> SDEStepOutput:
    """Flow-GRPO's SDE step from `schedule.sigmas[index]` (see the module docstring).

    Without `prev_sample`, x_next = mean + std * eps with eps = `noise` if given, else drawn
    from `generator` (on the generator's device, then moved to the latents'). With
    `prev_sample`, nothing is drawn: the output is the log-probability of that existing
    sample under this step (how training re-scores a recorded step; gradients flow through
    the mean only). Everything is computed in float32 (bf16 overflows in the mean).
    """
    if not noise_level > 0:
        raise ValueError(
            f"noise_level must be > 0 (the step's log-prob needs noise), got {noise_level}"
        )
    if prev_sample is not None and noise is not None:
        raise ValueError("give prev_sample (score a sample) or noise (draw one), not both")
    x, v = latents.float(), velocity.float()
    sigma = schedule.sigmas[index].float().to(x.device)
    dt = schedule.sigmas[index + 1].float().to(x.device) - sigma
    std_dev = sde_std_dev(schedule, index, noise_level).to(x.device)
    mean = (
        x * (1 + std_dev**2 / (2 * sigma) * dt)
        + v * (1 + std_dev**2 * (1 - sigma) / (2 * sigma)) * dt
    )
    std = std_dev * torch.sqrt(-dt)
    if prev_sample is None:
        if noise is None:
            device = generator.device if generator is not None else x.device
            noise = torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32)
        sample = mean + std * noise.to(x.device, torch.float32)
    else:
        sample = prev_sample.float()
    log_prob = gaussian_log_prob(sample.detach(), mean, std)
    return SDEStepOutput(sample=sample, mean=mean, std=std, log_prob=log_prob)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, std^2) per element, averaged over the non-batch dimensions: (B,)."""
    log_density = -((x - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return log_density.mean(dim=tuple(range(1, log_density.ndim)))


def sde_kl(mean: torch.Tensor, reference_mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL between two SDE steps with the same std: `||mean - mean_ref||^2 / (2 std^2)`,
    averaged over the non-batch dimensions (B,), float32.

    `std` is the step's std (`SDEStepOutput.std`, i.e. `std_dev * sqrt(-dt)`), which makes
    this the exact KL of the two Gaussians per element, as Flow-GRPO's Wan script computes it.
    """
    diff = mean.float() - reference_mean.float()
    return (diff**2).mean(dim=tuple(range(1, diff.ndim))) / (2 * std.float() ** 2)


def sde_step(noise_level: float = 0.7, generator: torch.Generator | None = None) -> FlowStep:
    """A `FlowStep` running `sde_step_with_logprob` with noise drawn from `generator`
    (e.g. `Renderer.denoise(..., step=sde_step(0.7, g))` samples with the SDE)."""

    def step(
        latents: torch.Tensor, velocity: torch.Tensor, index: int, schedule: Schedule
    ) -> torch.Tensor:
        out = sde_step_with_logprob(
            latents, velocity, index, schedule, noise_level, generator=generator
        )
        return out.sample

    return step
