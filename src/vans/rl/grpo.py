"""GRPO math as pure torch functions (no model calls, no trainer).

How the pieces fit, from rewards to a scalar loss:

1. `group_advantages`: one reward per completion, completions of one prompt form a group of
   G; advantage = `(r - group mean) / (std + eps)`. `combine_rewards` does the same for
   several rewards per completion (normalise each then sum, or sum then normalise).
2. `segment_token_advantages`: per-sample advantages of several segments (VideoP2R's
   perception / reasoning, docs/paper_facts.md#videop2r-process-aware-grpo) spread onto the
   completion tokens of each segment, giving per-token advantages `(B, L)`.
3. Per token: `clipped_surrogate` (PPO-clip with DAPO's separate low/high epsilon) plus
   `beta * k3_kl` (Schulman's k3 estimator of KL(policy || reference)).
4. `aggregate_loss` reduces the `(B, L)` token losses under the completion mask.
5. `grpo_loss` composes 3 and 4 and returns the loss and the statistics to log.

Names follow trl 1.16 (`trl/trainer/grpo_trainer.py`, `GRPOConfig`): `scale_rewards` ->
`scale`, `multi_objective_aggregation` -> `aggregation`, `epsilon` / `epsilon_high` ->
`eps_low` / `eps_high`, `beta`, `loss_type`, and the logged `clip_ratio/*` and `kl` keys.
Standard deviations are unbiased (Bessel-corrected, as `torch.std` and trl's `nanstd`), and
NaN rewards mean "not applicable to this sample", as in trl.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Literal

import torch

from vans.errors import VansError

Scale = Literal["group", "batch", "none"]
Aggregation = Literal["normalize_then_sum", "sum_then_normalize"]
LossType = Literal["grpo", "bnpo", "dapo", "dr_grpo"]

SCALES = ("group", "batch", "none")
AGGREGATIONS = ("normalize_then_sum", "sum_then_normalize")
LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")


class GRPOError(VansError, ValueError):
    """Inputs to the GRPO math that do not fit together (shapes, options, segments)."""


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise GRPOError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _nanstd(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Unbiased std over the non-NaN entries; 0 where fewer than two entries exist."""
    dims = tuple(range(x.dim())) if dim is None else (dim,)
    valid = ~torch.isnan(x)
    count = valid.sum(dims, keepdim=True)
    centred = torch.where(valid, x - torch.nanmean(x, dims, keepdim=True), 0.0)
    var = centred.square().sum(dims, keepdim=True) / (count - 1).clamp(min=1)
    return torch.where(count > 1, var.sqrt(), 0.0)


def group_advantages(
    rewards: torch.Tensor,
    group_size: int | None = None,
    *,
    scale: Scale = "group",
    eps: float = 1e-4,
) -> torch.Tensor:
    """Group-relative advantages `(r - mean_group) / (std + eps)`.

    `rewards` is `(num_groups, G)` or flat `(num_groups * G,)` with each group's G
    completions adjacent (then `group_size` is required); the result has the same shape.
    The mean is always the group's own. `scale` picks the std: "group" (GRPO) the group's,
    "batch" (trl `scale_rewards="batch"`, PPO Lite) the std of all rewards in the batch,
    "none" (Dr. GRPO) no division. Stds are unbiased (Bessel), as `torch.std` and trl.

    A group whose rewards are all equal (including G=1) gets exactly 0, never NaN. NaN
    rewards ("not applicable") are left out of the mean and std and get advantage 0.
    """
    _check_choice("scale", scale, SCALES)
    if eps < 0:
        raise GRPOError(f"eps must be >= 0; got {eps}")
    if rewards.dim() == 1:
        if group_size is None or group_size < 1 or rewards.numel() % group_size:
            raise GRPOError(
                f"flat rewards of length {rewards.numel()} need a group_size that divides it; "
                f"got {group_size}"
            )
        grouped = rewards.reshape(-1, group_size)
    elif rewards.dim() == 2:
        if group_size is not None and group_size != rewards.shape[1]:
            raise GRPOError(f"group_size {group_size} != rewards.shape[1] {rewards.shape[1]}")
        grouped = rewards
    else:
        raise GRPOError(
            f"rewards must be (num_groups * G,) or (num_groups, G); got {rewards.shape}"
        )
    valid = ~torch.isnan(grouped)
    high = torch.where(valid, grouped, -torch.inf).amax(1, keepdim=True)
    low = torch.where(valid, grouped, torch.inf).amin(1, keepdim=True)
    # The float mean of equal values can differ from them in the last bit; use the value itself
    # so that a constant group is exactly 0 rather than +-1e-13.
    mean = torch.where(high == low, low, torch.nanmean(grouped, 1, keepdim=True))
    advantages = grouped - mean
    if scale != "none":
        denominator = (_nanstd(grouped, 1) if scale == "group" else _nanstd(grouped)) + eps
        # A zero std (eps=0) only occurs where every centred reward is exactly 0: keep 0, not NaN.
        advantages = advantages / torch.where(denominator == 0, 1.0, denominator)
    return torch.where(valid, advantages, 0.0).reshape(rewards.shape)


def combine_rewards(
    rewards: torch.Tensor,
    group_size: int,
    weights: Sequence[float] | None = None,
    *,
    aggregation: Aggregation = "normalize_then_sum",
    scale: Scale = "group",
    eps: float = 1e-4,
) -> torch.Tensor:
    """Advantages `(B,)` from K rewards per completion, `rewards` `(B, K)`, groups adjacent.

    "normalize_then_sum" (docs/paper_facts.md#joint-grpo, "sum of the normalized individual
    rewards"; trl's `normalize_then_sum`, GDPO): each reward column gets
    `group_advantages(scale=scale)`, the columns are summed with `weights`, and the sum is
    z-scored once over the batch (as trl does) so the advantage scale does not grow with K;
    that only subtracts the batch mean (about 0) and divides by one positive number, keeping
    the ranking inside each group.
    "sum_then_normalize" (trl's default): weighted sum of the raw rewards, then
    `group_advantages(scale=scale)`.

    NaN means "this reward does not apply to this sample": it is skipped in the sum (nansum,
    as trl), so the other rewards decide. A sample with every reward NaN gets advantage 0 and
    is left out of its group's baseline.
    """
    _check_choice("aggregation", aggregation, AGGREGATIONS)
    if rewards.dim() != 2:
        raise GRPOError(f"rewards must be (B, K) with one column per reward; got {rewards.shape}")
    k = rewards.shape[1]
    w = torch.ones(k) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    if w.shape != (k,):
        raise GRPOError(f"{w.numel()} reward weights for {k} rewards")
    w = w.to(rewards)
    unscorable = torch.isnan(rewards).all(1)
    if aggregation == "sum_then_normalize":
        total = (rewards * w).nansum(1).masked_fill(unscorable, torch.nan)
        return group_advantages(total, group_size, scale=scale, eps=eps)
    per_reward = torch.stack(
        [group_advantages(rewards[:, i], group_size, scale=scale, eps=eps) for i in range(k)], 1
    )
    total = (per_reward * w).sum(1).masked_fill(unscorable, torch.nan)
    return group_advantages(total.unsqueeze(0), scale="group", eps=eps).squeeze(0)


def segment_token_advantages(
    advantages: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor | None],
    completion_mask: torch.Tensor,
    fallback: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """Per-token advantages `(B, L)`: each token gets the advantage of its segment.

    `advantages[name]` is `(B,)`; `masks[name]` is a bool or 0/1 `(B, L)` mask over the
    completion tokens, or None for "the whole completion" (= `completion_mask`). Tokens of
    the completion in no segment get `fallback` (a float, or `(B,)` such as the
    whole-completion advantage); padding tokens (`completion_mask` 0) get 0 whatever the
    segment masks say there. Overlapping segments raise
    `GRPOError` naming them: summing two advantages on one token is never meant.
    """
    if set(advantages) != set(masks):
        raise GRPOError(
            f"segments with an advantage {sorted(advantages)} != segments with a mask "
            f"{sorted(masks)}"
        )
    if completion_mask.dim() != 2:
        raise GRPOError(f"completion_mask must be (B, L); got {tuple(completion_mask.shape)}")
    batch = completion_mask.shape[0]
    inside = completion_mask.bool()
    dtype = next(iter(advantages.values())).dtype if advantages else torch.float32
    out = torch.zeros(completion_mask.shape, dtype=dtype, device=completion_mask.device)
    if isinstance(fallback, torch.Tensor):
        if fallback.shape != (batch,):
            raise GRPOError(
                f"fallback must be a float or (B,)=({batch},); got {tuple(fallback.shape)}"
            )
        fallback = fallback.to(dtype).unsqueeze(1)
    out = torch.where(inside, fallback, out)
    taken: dict[str, torch.Tensor] = {}
    for name, adv in advantages.items():
        mask = masks[name]
        mask = inside if mask is None else mask
        if mask.shape != completion_mask.shape:
            raise GRPOError(
                f"mask of segment {name!r} is {tuple(mask.shape)}, completions are "
                f"{tuple(completion_mask.shape)}"
            )
        if mask.dtype != torch.bool and ((mask != 0) & (mask != 1)).any():
            raise GRPOError(f"mask of segment {name!r} must hold only 0 and 1")
        if adv.shape != (batch,):
            raise GRPOError(
                f"advantage of segment {name!r} must be (B,)=({batch},); got {tuple(adv.shape)}"
            )
        mask = mask.bool() & inside
        for other, other_mask in taken.items():
            both = (mask & other_mask).nonzero()
            if len(both):
                row, col = both[0].tolist()
                raise GRPOError(
                    f"segments {other!r} and {name!r} overlap on {len(both)} token(s), first at "
                    f"sample {row}, token {col}"
                )
        taken[name] = mask
        out = torch.where(mask, adv.to(dtype).unsqueeze(1), out)
    return out


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    return float((x * mask).sum() / mask.sum().clamp(min=1))


def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float,
    eps_high: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip per token with DAPO's asymmetric range ("clip-higher").

    `ratio = exp(logp - old_logp)`, `loss = -min(ratio * A, clip(ratio, 1 - eps_low,
    1 + eps_high) * A)`; `advantages` is `(B,)` or `(B, L)`. Returns the `(B, L)` losses and
    the fraction of masked tokens whose clipped term is the active one: `clip_ratio/low_mean`
    (ratio < 1 - eps_low with A < 0), `clip_ratio/high_mean` (ratio > 1 + eps_high with
    A > 0) and `clip_ratio/region_mean` (either), as trl logs them.
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    loss = -torch.min(ratio * advantages, clipped * advantages)
    low = ((ratio < 1 - eps_low) & (advantages < 0)).to(logp.dtype)
    high = ((ratio > 1 + eps_high) & (advantages > 0)).to(logp.dtype)
    mask = mask.to(logp.dtype)
    stats = {
        "clip_ratio/low_mean": _masked_mean(low, mask),
        "clip_ratio/high_mean": _masked_mean(high, mask),
        "clip_ratio/region_mean": _masked_mean(torch.maximum(low, high), mask),
    }
    return loss, stats


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(policy || reference) per token (as trl):
    `exp(ref - logp) - (ref - logp) - 1`, >= 0, unbiased for samples from the policy."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


def aggregate_loss(
    per_token_loss: torch.Tensor,
    mask: torch.Tensor,
    loss_type: LossType,
    *,
    max_completion_length: int | None = None,
    num_tokens: float | None = None,
) -> torch.Tensor:
    """Reduce `(B, L)` token losses over the completion `mask` to a scalar (trl `loss_type`).

    - "grpo": mean over each sequence's tokens, then mean over sequences (original GRPO;
      short completions weigh more per token, a length bias).
    - "bnpo": sum over all tokens / number of masked tokens in this batch.
    - "dapo": sum over all tokens / `num_tokens`, the token count of the whole global batch
      divided by the number of equal micro-batches the trainer averages (grad_accum x
      processes), so the average is the global token mean; without it, equals "bnpo".
    - "dr_grpo": sum over all tokens / (B * `max_completion_length`), a constant that does
      not depend on the lengths sampled (Dr. GRPO). `max_completion_length` is required: the
      padded L varies from batch to batch.
    """
    _check_choice("loss_type", loss_type, LOSS_TYPES)
    mask = mask.to(per_token_loss.dtype)
    masked = per_token_loss * mask
    if loss_type == "grpo":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    if loss_type == "dr_grpo":
        if max_completion_length is None:
            raise GRPOError('loss_type "dr_grpo" needs max_completion_length')
        return masked.sum() / (per_token_loss.shape[0] * max_completion_length)
    if loss_type == "dapo" and num_tokens is not None:
        return masked.sum() / max(num_tokens, 1.0)
    return masked.sum() / mask.sum().clamp(min=1)


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float,
    eps_high: float,
    beta: float,
    loss_type: LossType,
    max_completion_length: int | None = None,
    num_tokens: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO loss: PPO-clip surrogate + `beta` * k3 KL per token, then `aggregate_loss`.

    `logp`, `old_logp`, `ref_logp` and `mask` are `(B, L)` per-token log-probabilities of the
    sampled completion tokens under the policy being trained, the policy that sampled them
    and the reference model. `old_logp=None` means on-policy: `logp.detach()` (ratio exactly
    1, the gradient is still that of the ratio). `ref_logp` is needed when `beta != 0`.
    `advantages` is `(B,)` or per token `(B, L)`. Returns the loss and floats to log: the
    `clip_ratio/*` fractions, `kl` (masked token mean, when `ref_logp` is given) and
    `policy_loss` (the loss without the KL term, aggregated the same way).
    """
    if old_logp is None:
        old_logp = logp.detach()
    for name, t in (("old_logp", old_logp), ("ref_logp", ref_logp), ("mask", mask)):
        if t is not None and t.shape != logp.shape:
            raise GRPOError(f"{name} is {tuple(t.shape)}, logp is {tuple(logp.shape)}")
    if advantages.shape not in (logp.shape[:1], logp.shape):
        raise GRPOError(
            f"advantages must be (B,) or (B, L) with (B, L) = {tuple(logp.shape)}; "
            f"got {tuple(advantages.shape)}"
        )
    if min(eps_low, eps_high, beta) < 0:
        raise GRPOError(
            f"eps_low, eps_high and beta must be >= 0; got {eps_low}, {eps_high}, {beta}"
        )
    if beta != 0 and ref_logp is None:
        raise GRPOError("beta != 0 needs ref_logp (the reference model's log-probabilities)")
    _check_choice("loss_type", loss_type, LOSS_TYPES)
    aggregate = partial(
        aggregate_loss,
        mask=mask,
        loss_type=loss_type,
        max_completion_length=max_completion_length,
        num_tokens=num_tokens,
    )
    surrogate, stats = clipped_surrogate(logp, old_logp, advantages, mask, eps_low, eps_high)
    per_token = surrogate
    if ref_logp is not None:
        kl = k3_kl(logp, ref_logp)
        stats["kl"] = _masked_mean(kl.detach(), mask.to(logp.dtype))
        if beta != 0:
            per_token = surrogate + beta * kl
    stats["policy_loss"] = float(aggregate(surrogate.detach()))
    return aggregate(per_token), stats
