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
- `euler_step`: the plain ODE Euler step `x + (sigma_next - sigma) * v`.
- Flow-GRPO's SDE step (SPEC §2; noise level `a`, its Gaussian log-probability) has the
  same signature and is added next to these for the RL stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

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
