"""Group, weighted and segment advantages: the only definition of what a rollout's rewards
are worth to the GRPO loss (docs/paper_facts.md#joint-grpo).

1. `group_advantages`: one reward per completion, the G completions of a prompt form a
   group; advantage = `(r - group mean) / (std + eps)`.
2. `segment_advantages`: the paper's "sum of the normalized individual rewards, all weights
   1": each reward is z-scored within its group, weighted (`GRPOConfig.weight`) and summed,
   per completion segment. A reward judges a segment (`RewardFunction.segment`); with
   `by_segment` each segment ("think", "answer") gets the sum over the rewards judging it
   (rewards judging "all" judge every segment), otherwise every reward judges everything.
3. `token_segment_masks` and `segment_token_advantages`: the segments' advantages spread
   onto the completion tokens of each segment (VideoP2R's per-process advantages,
   docs/paper_facts.md#videop2r-process-aware-grpo), giving per-token advantages `(B, L)`.
4. `process_advantages`: PA-GRPO's two advantages, the perception process's and the
   reasoning process's, each normalised within the group on its own (docs/videop2r.md#pa-grpo),
   with the paper's ablations and GRPO (one advantage of the summed reward) beside them.

Standard deviations are unbiased (Bessel-corrected, as `torch.std` and trl's `nanstd`), and
NaN rewards mean "not applicable to this sample", as in trl (`scale_rewards` -> `scale`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch

from vans.errors import GRPOError, check_choice
from vans.models.prompting import segment_spans
from vans.rl.config import GRPOConfig

if TYPE_CHECKING:
    from vans.rewards.vans import RewardFunction

Scale = Literal["group", "batch", "none"]
SCALES = ("group", "batch", "none")


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
    check_choice("scale", scale, SCALES)
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


def segment_advantages(
    rewards: Mapping[str, torch.Tensor],
    functions: Sequence[RewardFunction],
    config: GRPOConfig,
    *,
    by_segment: bool,
) -> dict[str, torch.Tensor]:
    """Advantages (G,) of one group: {"all": ...} or, `by_segment`, one entry per segment
    ("all", "think", "answer"), where "think" and "answer" include the rewards judging
    "all" (the module docstring). `rewards[name]` is the group's (G,) rewards."""
    segments = ("all", "think", "answer") if by_segment else ("all",)
    size = len(next(iter(rewards.values())))
    out = {s: torch.zeros(size) for s in segments}
    for fn in functions:
        weight = config.weight(fn)
        if weight == 0:
            continue
        scaled = weight * group_advantages(
            rewards[fn.name].float().unsqueeze(0), scale=config.scale_rewards, eps=config.eps
        ).squeeze(0)
        judged = ("all", "think", "answer") if fn.segment == "all" or not by_segment else ()
        for segment in judged or (fn.segment,):
            if segment in out:
                out[segment] += scaled
    return out


def token_segment_masks(
    tokenizer: Any,
    token_ids: Sequence[int],
    length: int,
    spans_of: Callable[[str], Mapping[str, tuple[int, int]]] = segment_spans,
    segments: Sequence[str] = ("think", "answer"),
) -> dict[str, torch.Tensor]:
    """Bool masks (length,) of the completion tokens inside each of `segments`' blocks,
    the blocks' character spans given by `spans_of` of the decoded text (VANS's [Think] and
    [Ans] by default; `videoqa.prompting.trace_spans` for VideoP2R's three blocks). A token
    belongs to the block its first character falls in; character offsets come from decoding
    growing prefixes, exact for any tokenizer (byte-level BPE tokens need not be whole
    characters)."""
    ends = [
        len(tokenizer.decode(token_ids[: i + 1], skip_special_tokens=False))
        for i in range(len(token_ids))
    ]
    text = tokenizer.decode(token_ids, skip_special_tokens=False)
    starts = [0, *ends[:-1]]
    spans = spans_of(text)
    masks = {}
    for segment in segments:
        mask = torch.zeros(length, dtype=torch.bool)
        span = spans.get(segment)
        if span is not None:
            for i, start in enumerate(starts):
                mask[i] = span[0] <= start < span[1] and ends[i] > start
        masks[segment] = mask
    return masks


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


def process_advantages(
    perception: torch.Tensor | None,
    reasoning: torch.Tensor | None,
    *,
    mode: Literal["process", "sequence"] = "process",
    separate_tokens: bool = True,
    scale: Scale = "group",
    eps: float = 1e-4,
) -> dict[str, torch.Tensor]:
    """The advantages (G,) a group's tokens take, by process: {"perception": the
    observation block's, "reasoning": the think and answer blocks', "all": the tokens in
    neither block's}.

    `perception` and `reasoning` are the group's (G,) process rewards (each the sum of its
    rewards); None drops that process's reward (an ablation), and its tokens then take the
    other process's advantage. "process" (PA-GRPO) normalises each process's rewards within
    the group on its own; with `separate_tokens` off (the token-assignment ablation) every
    token takes their sum. "sequence" is GRPO: one advantage of the summed rewards on every
    token. Tokens outside both blocks take the sum either way. A NaN reward (a failed
    judgment) is left out of its group's statistics and gets advantage 0 (`group_advantages`);
    in "sequence" its sample's sum is NaN too."""
    check_choice("mode", mode, ("process", "sequence"))
    given = {
        k: v for k, v in (("perception", perception), ("reasoning", reasoning)) if v is not None
    }
    if not given:
        raise GRPOError("process_advantages needs the perception or the reasoning rewards")
    sizes = {tuple(v.shape) for v in given.values()}
    if len(sizes) != 1 or len(next(iter(sizes))) != 1:
        raise GRPOError(f"process rewards must be two (G,) tensors; got shapes {sorted(sizes)}")

    def normalised(rewards: torch.Tensor) -> torch.Tensor:
        return group_advantages(rewards.float().unsqueeze(0), scale=scale, eps=eps).squeeze(0)

    if mode == "sequence":
        total = torch.stack([v.float() for v in given.values()]).sum(0)
        one = normalised(total)
        return {"perception": one, "reasoning": one, "all": one}
    adv = {k: normalised(v) for k, v in given.items()}
    both = sum(adv.values())
    if not separate_tokens:
        return {"perception": both, "reasoning": both, "all": both}
    return {
        "perception": adv.get("perception", both),
        "reasoning": adv.get("reasoning", both),
        "all": both,
    }
