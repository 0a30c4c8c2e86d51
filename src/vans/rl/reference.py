"""The reference policy of GRPO's KL term, as a snapshot of the trainable weights.

Joint-GRPO regularises each stage towards the model it started from (the SFT model), not
towards the base model: disabling a LoRA adapter would give the pretrained Qwen2.5-VL, and
Stage 2 trains every DiT weight. Both cases are covered by keeping a copy of the weights
that train (the adapter, plus whatever else is unfrozen) and swapping it in for the
reference forward. The copy costs as much memory as the trainable weights (a few MB for a
LoRA; a full copy of the DiT for Stage 2, as Flow-GRPO's frozen reference does).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class ReferenceWeights:
    """The trainable parameters of `model` as they are now, to be swapped back in later.

    Take it before training (and before a resumed run loads its checkpoint, so the
    reference stays the starting model). `active()` is a context manager under which
    `model` computes with the reference weights; the training weights (and their
    gradients) are restored on exit, even on error. The swap writes the parameters in
    place, so run the reference forward before the policy forward whose graph will be
    backpropagated (autograd refuses tensors modified after they were saved).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameters to take a reference of")
        self.values = [p.detach().clone() for p in self.params]

    @contextmanager
    def active(self) -> Iterator[None]:
        saved = [p.detach().clone() for p in self.params]
        try:
            with torch.no_grad():
                for p, ref in zip(self.params, self.values, strict=True):
                    p.copy_(ref)
            yield
        finally:
            with torch.no_grad():
                for p, value in zip(self.params, saved, strict=True):
                    p.copy_(value)


def disable_dropout(model: torch.nn.Module) -> int:
    """Set every dropout probability in `model` to 0 and return how many were > 0.

    RL samples with the model in eval mode (no dropout) and must score the same policy: with
    LoRA dropout left on in the loss and reference forwards, their log-probs are of other,
    randomly thinned policies, and the KL to the reference is dropout noise (0.2 per token
    on the toy reasoner) rather than drift (trl's `disable_dropout`)."""
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p > 0:
            module.p = 0.0
            changed += 1
    return changed
