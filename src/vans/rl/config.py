"""Every knob of Joint-GRPO (docs/paper_facts.md#joint-grpo), apart from the trainer logic.

`GRPOConfig` is the GRPO update both stages share (`grpo:` in a stage's YAML),
`FlowGRPOConfig` Stage 2's SDE sampling (`flow:`), `RewardVideoConfig` how Stage 1 renders
its reward videos (`reward_videos:`). Names follow trl's `GRPOConfig` where trl has the knob;
where ours differs (kept so that existing YAML files load), the field says trl's name:

| here | trl |
| --- | --- |
| `group_size` | `num_generations` |
| `clip_range`, `clip_range_high` | `epsilon`, `epsilon_high` |
| `beta`, `scale_rewards`, `num_iterations`, `reward_weights` | the same |
| Stage 1's `loss_type` (`JointGRPOVLMConfig`) | the same |
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from vans.errors import ConfigError

if TYPE_CHECKING:
    from vans.rewards.vans import RewardFunction


@dataclass
class GRPOConfig:
    """The GRPO update, shared by both stages (paper values as defaults).

    Parameters that control the rollouts:
        group_size, num_iterations
    Parameters that control the advantages:
        scale_rewards, eps, reward_weights
    Parameters that control the loss:
        beta, clip_range, clip_range_high
    """

    # ---------------------------------------------------------------- rollouts
    group_size: int = 8
    """G, trl's `num_generations`: rollouts per prompt (paper: 8)."""
    num_iterations: int = 1
    """mu, trl's `num_iterations`: optimizer steps taken on each batch of rollouts. With 1
    every update is the first on-policy one (ratio exactly 1, the clip never binds); with
    mu > 1 the later steps re-score the same rollouts under the updated weights, the ratio
    moves away from 1 and `clip_range` limits how far. `train.save_every` must be a multiple
    of it (a resumed run starts at a fresh rollout)."""

    # ---------------------------------------------------------------- advantages
    scale_rewards: Literal["group", "none"] = "group"
    """Divide each reward's group-centred value by the group std ("group", GRPO) or not
    ("none", Dr. GRPO)."""
    eps: float = 1e-4
    """Added to the group std (trl's value)."""
    reward_weights: dict[str, float] = field(default_factory=dict)
    """Weights by reward name (r_f, r_t1, r_v1, r_v2, r_c2); unnamed rewards weigh 1 (the
    paper's). A weight of 0 switches a reward off (e.g. r_c2: 0 for the paper's
    reward-hacking ablation); it is still computed and logged."""

    # ---------------------------------------------------------------- loss
    beta: float = 0.004
    """Weight of the KL to the starting (SFT) model (paper: 0.004)."""
    clip_range: float = 1e-3
    """PPO clip epsilon, low side, trl's `epsilon` (paper: 1e-3)."""
    clip_range_high: float | None = None
    """PPO clip epsilon, high side (DAPO's clip-higher), trl's `epsilon_high`; None:
    `clip_range`."""

    def __post_init__(self) -> None:
        problems = []
        if self.group_size < 2:
            problems.append(
                f"group_size must be >= 2 (advantages compare a group), got {self.group_size}"
            )
        if self.num_iterations < 1:
            problems.append(f"num_iterations must be >= 1, got {self.num_iterations}")
        for name in ("beta", "clip_range", "eps"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.clip_range_high is not None and self.clip_range_high < 0:
            problems.append(f"clip_range_high must be >= 0, got {self.clip_range_high}")
        if problems:
            raise ConfigError("invalid grpo config: " + "; ".join(problems))

    @property
    def eps_high(self) -> float:
        return self.clip_range if self.clip_range_high is None else self.clip_range_high

    def check_rewards(self, rewards: Sequence[RewardFunction]) -> None:
        """Fail naming a weight given for a reward the stage does not have."""
        known = [r.name for r in rewards]
        unknown = sorted(set(self.reward_weights) - set(known))
        if unknown:
            raise ConfigError(
                f"grpo.reward_weights: unknown rewards {unknown}; this stage has {known}"
            )

    def weight(self, reward: RewardFunction) -> float:
        return self.reward_weights.get(reward.name, reward.weight)


@dataclass
class FlowGRPOConfig:
    """Stage 2's sampling and step selection (Flow-GRPO on the renderer).

    Parameters that control the SDE sampler:
        num_steps, noise_level, guidance_scale, sde_window, shared_noise
    Parameters that control which steps train:
        timestep_fraction
    """

    num_steps: int = 10
    """Denoising steps of a training trajectory (Flow-GRPO trains with 10 and evaluates
    with more; VANS inference uses 50)."""
    noise_level: float = 0.7
    """`a` of the SDE step: std_dev = a * sqrt(sigma / (1 - sigma)) (Flow-GRPO: 0.7)."""
    guidance_scale: float = 5.0
    """Classifier-free guidance of sampling and re-scoring (VANS: 5.0; <= 1 turns it off
    and needs no negative prompt)."""
    sde_window: tuple[int, int] | None = None
    """Steps [start, end) that are stochastic (and have log-probs); the others are Euler
    ODE steps. None: every step is stochastic. A window near the start keeps the
    exploration where it matters and the rest of the video sharp (Flow-GRPO-Fast)."""
    shared_noise: bool = False
    """Whether the G videos of a group start from one initial noise (the SDE noise alone
    makes them differ) or each from its own."""
    timestep_fraction: float = 1.0
    """Fraction of the SDE steps trained per trajectory: ceil(fraction * n) steps drawn
    by `train_step_indices`; 1.0 trains every SDE step."""

    def __post_init__(self) -> None:
        problems = []
        if self.num_steps < 1:
            problems.append(f"num_steps must be >= 1, got {self.num_steps}")
        if not self.noise_level > 0:
            problems.append(f"noise_level must be > 0, got {self.noise_level}")
        if not 0 < self.timestep_fraction <= 1:
            problems.append(f"timestep_fraction must be in (0, 1], got {self.timestep_fraction}")
        if self.sde_window is not None:
            start, end = self.sde_window
            if not 0 <= start < end <= self.num_steps:
                problems.append(
                    f"sde_window must satisfy 0 <= start < end <= num_steps "
                    f"({self.num_steps}), got {list(self.sde_window)}"
                )
        if problems:
            raise ConfigError("invalid flow-grpo config: " + "; ".join(problems))

    def is_sde(self, index: int) -> bool:
        """Whether step `index` is stochastic (inside the SDE window)."""
        if self.sde_window is None:
            return True
        start, end = self.sde_window
        return start <= index < end


@dataclass(frozen=True)
class RewardVideoConfig:
    """How Stage 1 renders its reward videos; the size, reference frames, CFG and negative
    prompt are the checkpoint's `VANSSettings`."""

    steps: int = 10
    """Denoising steps per reward video (evaluation uses the settings' steps, 50 in the
    paper; Flow-GRPO trains with 10). Not stated for VANS's reward videos."""
    batch_size: int = 8
    """Unique captions rendered together (one transformer call per step holds this many
    videos; 8 = one group of the paper's G=8). Lower it when memory is short."""
    empty_caption: str | None = None
    """Text rendered for a caption that is empty after cleaning; None renders the empty
    prompt (reference frames only). The rewards already punish an empty answer through r_f
    and r_t1."""

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be >= 1, got {getattr(self, name)}"
            for name in ("steps", "batch_size")
            if getattr(self, name) < 1
        ]
        if problems:
            raise ConfigError("invalid reward-video config: " + "; ".join(problems))
