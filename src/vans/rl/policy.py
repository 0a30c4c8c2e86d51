"""GRPO on the reasoner's answers, shared by Joint-GRPO Stage 1 and VideoP2R's PA-GRPO:
what a group of sampled answers records for its updates, and the loss over a batch's groups.

A group (`Stage1Group`, `QAGroup`) holds its completions and per-token advantages; the
task supplies `logprobs(group) -> (logp, mask)`, the per-token log-probabilities of exactly
the sampled tokens with the video in the forward (`Reasoner.completion_logprobs`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from vans.rl.config import GRPOConfig
from vans.rl.grpo import LossType, grpo_loss
from vans.rl.reference import ReferenceWeights

LogProbs = Callable[[Any], tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def record_logprobs(
    group: Any, logprobs: LogProbs, num_iterations: int, reference: ReferenceWeights | None
) -> None:
    """Store with the group what its later updates compare against: the sampling policy's
    log-probs when it serves more than one update, the KL reference's when there is a KL."""
    if num_iterations > 1:
        group.old_logp = logprobs(group)[0]
    if reference is not None:
        with reference.active():
            group.ref_logp = logprobs(group)[0]


def groups_loss(
    groups: Sequence[Any],
    logprobs: LogProbs,
    grpo: GRPOConfig,
    loss_type: LossType,
    max_completion_length: int,
) -> dict[str, torch.Tensor]:
    """The mean over groups of each group's GRPO loss (PPO-clip + beta * k3 KL on its
    per-token advantages), with the clip fractions and KL averaged over groups."""
    losses, rows = [], []
    for group in groups:
        logp, mask = logprobs(group)
        old = None if group.old_logp is None else group.old_logp.to(logp.device)
        loss, stats = grpo_loss(
            logp,
            old,
            group.ref_logp,
            group.token_advantages.to(logp.device),
            mask,
            eps_low=grpo.clip_range,
            eps_high=grpo.eps_high,
            beta=grpo.beta,
            loss_type=loss_type,
            max_completion_length=max_completion_length,
        )
        losses.append(loss)
        rows.append(stats)
    out = {"loss": torch.stack(losses).mean()}
    for key in rows[0]:
        out[key] = torch.tensor([row[key] for row in rows]).mean()
    return out
