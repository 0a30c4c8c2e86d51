"""The GRPO loss as pure torch functions (no model calls, no trainer); the advantages it
takes are `vans.rl.advantages`'.

How the pieces fit, from advantages to a scalar loss:

1. Per token: `clipped_surrogate` (PPO-clip with DAPO's separate low/high epsilon) plus
   `beta * k3_kl` (Schulman's k3 estimator of KL(policy || reference)).
2. `aggregate_loss` reduces the `(B, L)` token losses under the completion mask.
3. `grpo_loss` composes 1 and 2 and returns the loss and the statistics to log.

Names follow trl 1.16 (`trl/trainer/grpo_trainer.py`, `GRPOConfig`): `epsilon` /
`epsilon_high` -> `eps_low` / `eps_high`, `beta`, `loss_type`, and the logged `clip_ratio/*`
and `kl` keys.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch

from vans.errors import GRPOError, check_choice

LossType = Literal["grpo", "bnpo", "dapo", "dr_grpo"]
LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")


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
    check_choice("loss_type", loss_type, LOSS_TYPES)
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
    check_choice("loss_type", loss_type, LOSS_TYPES)
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
