"""GRPO math: hand-computed cases, trl 1.16's own code on identical inputs, gradients."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from vans.errors import GRPOError, VansError
from vans.rl.advantages import group_advantages, segment_token_advantages
from vans.rl.grpo import (
    aggregate_loss,
    clipped_surrogate,
    grpo_loss,
    k3_kl,
)

S = math.sqrt
close = torch.testing.assert_close


# --------------------------------------------------------------------------- advantages


def test_group_advantages_hand_computed():
    # group 1: mean 2, unbiased std sqrt((1 + 0 + 1) / 2) = 1 -> (r - 2) / 1; group 2 constant
    adv = group_advantages(torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]), eps=0.0)
    close(adv, torch.tensor([[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]))
    # flat input keeps its shape; eps enters as std + eps: [0, 1] -> +-0.5 / (sqrt(0.5) + 0.1)
    adv = group_advantages(torch.tensor([0.0, 1.0, 7.0, 7.0]), group_size=2, eps=0.1)
    d = 0.5 / (S(0.5) + 0.1)
    close(adv, torch.tensor([-d, d, 0.0, 0.0]))


def test_group_advantages_scales():
    rewards = torch.tensor([[0.0, 2.0], [4.0, 4.0]])
    # "none": mean-centred only (Dr. GRPO)
    close(group_advantages(rewards, scale="none"), torch.tensor([[-1.0, 1.0], [0.0, 0.0]]))
    # "batch": group means 1 and 4, std of all four: mean 2.5, squares 6.25 + .25 + 2.25 + 2.25
    # = 11, unbiased var 11 / 3
    d = 1 / S(11 / 3)
    close(group_advantages(rewards, scale="batch", eps=0.0), torch.tensor([[-d, d], [0.0, 0.0]]))
    with pytest.raises(GRPOError, match="scale must be one of group, batch, none; got 'std'"):
        group_advantages(rewards, scale="std")


def test_constant_groups_and_single_sample_groups_are_exactly_zero():
    # 0.1 * 3 / 3 != 0.1 in floats: a plain mean would leave about 1e-9 / eps behind
    for dtype in (torch.float32, torch.float64):
        rewards = torch.tensor([[0.1, 0.1, 0.1], [0.7, 0.7, 0.7]], dtype=dtype)
        for scale in ("group", "batch", "none"):
            adv = group_advantages(rewards, scale=scale)
            assert torch.equal(adv, torch.zeros_like(adv))
    for scale in ("group", "batch", "none"):  # G = 1: every group is constant
        adv = group_advantages(torch.tensor([0.3, 1.0, -2.0]), group_size=1, scale=scale)
        assert torch.equal(adv, torch.zeros(3))


def test_group_advantages_nan_means_not_applicable():
    # [1, nan, 3]: mean 2 and unbiased std sqrt(2) over the two valid rewards; NaN -> 0
    adv = group_advantages(torch.tensor([[1.0, float("nan"), 3.0]]), eps=0.0)
    close(adv, torch.tensor([[-1 / S(2), 0.0, 1 / S(2)]]))
    adv = group_advantages(torch.full((2, 2), float("nan")))
    assert torch.equal(adv, torch.zeros(2, 2))


def test_group_advantages_bad_shapes():
    with pytest.raises(GRPOError, match="length 5 need a group_size that divides it; got 2"):
        group_advantages(torch.zeros(5), group_size=2)
    with pytest.raises(GRPOError, match=r"group_size 3 != rewards.shape\[1\] 4"):
        group_advantages(torch.zeros(2, 4), group_size=3)
    assert issubclass(GRPOError, VansError) and issubclass(GRPOError, ValueError)


def _trl_advantages(rewards_per_func, weights, num_generations, aggregation, scale_rewards):
    """trl 1.16 `GRPOTrainer._generate_and_score_completions`, grpo_trainer.py lines 2759-2808,
    transcribed (it is one 400-line method that needs a model and reward functions), with
    trl's own `nanstd`."""
    from trl.trainer.utils import nanstd

    unscorable_mask = torch.isnan(rewards_per_func).all(dim=1)
    if aggregation == "sum_then_normalize":
        rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
        rewards[unscorable_mask] = torch.nan
        mean = torch.nanmean(rewards.view(-1, num_generations), dim=1)
        mean = mean.repeat_interleave(num_generations, dim=0)
        if scale_rewards in ["group", "none"]:
            if num_generations > 1:
                std = nanstd(rewards.view(-1, num_generations), dim=1)
                std = std.repeat_interleave(num_generations, dim=0)
            else:
                std = torch.zeros_like(rewards)
        else:
            std = nanstd(rewards).expand_as(rewards)
        advantages = rewards - mean
        if scale_rewards != "none":
            advantages = advantages / (std + 1e-4)
    else:
        grouped = rewards_per_func.view(-1, num_generations, rewards_per_func.shape[1])
        mean_k = torch.nanmean(grouped, dim=1, keepdim=True)
        std_k = (
            nanstd(grouped, dim=1, keepdim=True)
            if num_generations > 1
            else torch.zeros_like(mean_k)
        )
        reward_k = ((grouped - mean_k) / (std_k + 1e-4)).view(-1, rewards_per_func.shape[1])
        rewards = (reward_k * weights.unsqueeze(0)).nansum(dim=1)
        rewards[unscorable_mask] = torch.nan
        std = (
            nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
        )
        advantages = (rewards - torch.nanmean(rewards)) / (std + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


# One reward: trl's advantages are `group_advantages` (both of trl's aggregations agree for
# K = 1 up to the batch re-scaling of normalize_then_sum, which VANS does not do: its
# advantage is the plain sum of the per-reward group z-scores, `rl.advantages`).
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_match_trl(scale):
    pytest.importorskip("trl")
    g = torch.Generator().manual_seed(0)
    rewards = torch.rand(6 * 4, 1, generator=g, dtype=torch.float64)
    rewards[torch.rand(24, 1, generator=g) < 0.2] = torch.nan  # a reward that does not apply
    rewards[8:12] = 1.0  # a group where every reward is equal
    one = torch.ones(1, dtype=torch.float64)
    ours = group_advantages(rewards[:, 0], 4, scale=scale)
    close(ours, _trl_advantages(rewards, one, 4, "sum_then_normalize", scale))
    # G = 1 (trl's num_generations_eval=1 branch)
    ours = group_advantages(rewards[:, 0], 1, scale="group")
    close(ours, _trl_advantages(rewards, one, 1, "sum_then_normalize", "group"))


# ----------------------------------------------------------------------- segment advantages


def test_segment_token_advantages_hand_computed():
    completion = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    think = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    answer = torch.tensor([[0, 0, 1, 0, 0], [0, 1, 1, 1, 0]], dtype=torch.bool)
    adv = {"think": torch.tensor([0.5, -1.0]), "answer": torch.tensor([2.0, 3.0])}
    out = segment_token_advantages(
        adv, {"think": think, "answer": answer}, completion, fallback=torch.tensor([9.0, 8.0])
    )
    # token 3 of sample 0 and token 4 of sample 1 are in no segment -> fallback; padding -> 0
    close(out, torch.tensor([[0.5, 0.5, 2.0, 9.0, 0.0], [-1.0, 3.0, 3.0, 3.0, 8.0]]))
    out = segment_token_advantages(adv, {"think": think, "answer": answer}, completion)
    close(out, torch.tensor([[0.5, 0.5, 2.0, 0.0, 0.0], [-1.0, 3.0, 3.0, 3.0, 0.0]]))


def test_whole_completion_segment():
    completion = torch.tensor([[1, 1, 0], [1, 1, 1]])
    out = segment_token_advantages({"all": torch.tensor([1.5, -2.0])}, {"all": None}, completion)
    close(out, torch.tensor([[1.5, 1.5, 0.0], [-2.0, -2.0, -2.0]]))


def test_segment_errors_name_the_problem():
    completion = torch.ones(2, 4, dtype=torch.long)
    think = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    answer = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]])
    adv = {"think": torch.zeros(2), "answer": torch.zeros(2)}
    with pytest.raises(
        GRPOError, match=r"segments 'think' and 'answer' overlap on 1 token.*sample 1, token 2"
    ):
        segment_token_advantages(adv, {"think": think, "answer": answer}, completion)
    with pytest.raises(GRPOError, match=r"with an advantage \['answer', 'think'\].*\['think'\]"):
        segment_token_advantages(adv, {"think": think}, completion)
    with pytest.raises(GRPOError, match="mask of segment 'think' must hold only 0 and 1"):
        segment_token_advantages({"think": torch.zeros(2)}, {"think": think * 2}, completion)
    with pytest.raises(GRPOError, match=r"mask of segment 'think' is \(2, 3\)"):
        segment_token_advantages({"think": torch.zeros(2)}, {"think": think[:, :3]}, completion)
    with pytest.raises(GRPOError, match=r"advantage of segment 'think' must be \(B,\)=\(2,\)"):
        segment_token_advantages({"think": torch.zeros(3)}, {"think": think}, completion)


# ------------------------------------------------------------------------ per-token terms


def test_clipped_surrogate_hand_computed():
    ratio = torch.tensor([[1.5, 0.5, 1.5, 0.5, 1.25, 3.0]])
    adv = torch.tensor([[1.0, -1.0, -1.0, 1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    logp = ratio.log()
    loss, stats = clipped_surrogate(logp, torch.zeros_like(logp), adv, mask, 0.2, 0.28)
    # 1.5 * +1: clipped at 1.28 (high); 0.5 * -1: clipped at 0.8 -> -min(-0.5, -0.8) = 0.8 (low);
    # 1.5 * -1 and 0.5 * +1: the unclipped term is the smaller one; 1.25 < 1.28: not clipped;
    # the last token is padding (it would be clipped)
    close(loss, torch.tensor([[-1.28, 0.8, 1.5, -0.5, -1.25, -1.28]]))
    assert stats == pytest.approx(
        {"clip_ratio/low_mean": 0.2, "clip_ratio/high_mean": 0.2, "clip_ratio/region_mean": 0.4}
    )
    # symmetric epsilon 0.2: 1.25 is clipped too; (B,) advantages broadcast over tokens
    loss, stats = clipped_surrogate(
        logp[:, 4:5], torch.zeros(1, 1), torch.ones(1), mask[:, :1], 0.2, 0.2
    )
    close(loss, torch.tensor([[-1.2]]))
    assert stats["clip_ratio/high_mean"] == 1.0


def test_k3_kl():
    # delta = ln(0.25) - ln(0.5) = -ln 2: exp(delta) - delta - 1 = 0.5 + ln 2 - 1
    close(
        k3_kl(torch.tensor(math.log(0.5)), torch.tensor(math.log(0.25))),
        torch.tensor(math.log(2) - 0.5),
    )
    assert k3_kl(torch.tensor(-1.3), torch.tensor(-1.3)) == 0
    # unbiased: its expectation under the policy is KL(policy || reference)
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64)
    close((p * k3_kl(p.log(), q.log())).sum(), (p * (p / q).log()).sum())


def test_aggregate_loss_hand_computed():
    per_token = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 99.0, 99.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    # per-sequence means 2.5 and 15 -> 8.75
    close(aggregate_loss(per_token, mask, "grpo"), torch.tensor(8.75))
    # masked sum 10 + 30 = 40 over 6 tokens
    close(aggregate_loss(per_token, mask, "bnpo"), torch.tensor(40 / 6))
    close(aggregate_loss(per_token, mask, "dapo"), torch.tensor(40 / 6))
    close(aggregate_loss(per_token, mask, "dapo", num_tokens=10), torch.tensor(4.0))
    # 40 / (B * max_completion_length) = 40 / (2 * 8)
    close(aggregate_loss(per_token, mask, "dr_grpo", max_completion_length=8), torch.tensor(2.5))
    with pytest.raises(GRPOError, match='"dr_grpo" needs max_completion_length'):
        aggregate_loss(per_token, mask, "dr_grpo")
    with pytest.raises(
        GRPOError, match="loss_type must be one of grpo, bnpo, dapo, dr_grpo; got 'ppo'"
    ):
        aggregate_loss(per_token, mask, "ppo")
    # an all-padding batch gives 0, not NaN
    assert aggregate_loss(per_token, torch.zeros_like(mask), "grpo") == 0


# ----------------------------------------------------------------------------- grpo_loss


def test_grpo_loss_hand_computed():
    # on-policy (ratio 1), ref = logp + ln 2 -> k3 = 2 - ln 2 - 1 on every token
    logp = torch.full((2, 2), -1.0)
    kl = 1 - math.log(2)
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, stats = grpo_loss(
        logp, None, logp + math.log(2), torch.tensor([1.0, -2.0]), mask,
        eps_low=0.2, eps_high=0.2, beta=0.1, loss_type="grpo",
    )  # fmt: skip
    # token losses -A + 0.1 kl; sequence means -1 + 0.1 kl and 2 + 0.1 kl -> 0.5 + 0.1 kl
    close(loss, torch.tensor(0.5 + 0.1 * kl))
    assert stats == pytest.approx(
        {
            "clip_ratio/low_mean": 0.0,
            "clip_ratio/high_mean": 0.0,
            "clip_ratio/region_mean": 0.0,
            "kl": kl,
            "policy_loss": 0.5,
        }
    )


def test_grpo_loss_bad_inputs():
    logp = torch.zeros(2, 3)
    kw = {"eps_low": 0.2, "eps_high": 0.2, "beta": 0.0, "loss_type": "grpo"}
    with pytest.raises(GRPOError, match="beta != 0 needs ref_logp"):
        grpo_loss(logp, None, None, torch.zeros(2), torch.ones(2, 3), **kw | {"beta": 0.1})
    with pytest.raises(GRPOError, match=r"mask is \(2, 2\), logp is \(2, 3\)"):
        grpo_loss(logp, None, None, torch.zeros(2), torch.ones(2, 2), **kw)
    with pytest.raises(GRPOError, match=r"advantages must be \(B,\) or \(B, L\).*got \(3,\)"):
        grpo_loss(logp, None, None, torch.zeros(3), torch.ones(2, 3), **kw)
    with pytest.raises(GRPOError, match="must be >= 0"):
        grpo_loss(logp, None, None, torch.zeros(2), torch.ones(2, 3), **kw | {"eps_low": -0.1})


def test_grpo_loss_gradient_matches_analytic():
    # on-policy, no clipping: d/dlogp[i,t] = (-A_i + beta (1 - exp(ref - logp))) m[i,t] / (n_i B)
    g = torch.Generator().manual_seed(1)
    logp = -torch.rand(3, 4, generator=g, dtype=torch.float64)
    ref = logp - 0.3 * torch.rand(3, 4, generator=g, dtype=torch.float64)
    adv = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float64)
    beta = 0.04
    x = logp.clone().requires_grad_()
    loss, _ = grpo_loss(
        x, None, ref, adv, mask, eps_low=0.2, eps_high=0.28, beta=beta, loss_type="grpo"
    )
    loss.backward()
    n = mask.sum(1, keepdim=True)
    expected = (-adv[:, None] + beta * (1 - torch.exp(ref - logp))) * mask / (n * 3)
    close(x.grad, expected)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
def test_grpo_loss_gradcheck(loss_type):
    g = torch.Generator().manual_seed(2)
    logp = -torch.rand(2, 5, generator=g, dtype=torch.float64)
    old = logp + 0.5 * torch.randn(2, 5, generator=g, dtype=torch.float64)  # some tokens clip
    ref = logp - 0.2 * torch.rand(2, 5, generator=g, dtype=torch.float64)
    adv = torch.randn(2, 5, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])

    def f(x):
        return grpo_loss(
            x, old, ref, adv, mask, eps_low=0.2, eps_high=0.28, beta=0.04,
            loss_type=loss_type, max_completion_length=6,
        )[0]  # fmt: skip

    assert torch.autograd.gradcheck(f, (logp.clone().requires_grad_(),))


def test_pa_grpo_each_segment_learns_from_its_own_advantage():
    """VideoP2R (docs/paper_facts.md#videop2r-process-aware-grpo): perception and reasoning
    advantages, each normalised in its group, reach only their own tokens: the gradient on a
    perception token is -A_perception / n."""
    perception = group_advantages(torch.tensor([1.0, 0.0]), 2, eps=0.0)  # [+r, -r]
    reasoning = group_advantages(torch.tensor([0.0, 0.0]), 2)  # constant group: no signal
    completion = torch.ones(2, 4)
    obs = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])
    adv = segment_token_advantages(
        {"perception": perception, "reasoning": reasoning},
        {"perception": obs, "reasoning": 1 - obs},
        completion,
    )
    x = torch.zeros(2, 4, requires_grad=True)
    loss, _ = grpo_loss(
        x, None, None, adv, completion, eps_low=0.2, eps_high=0.2, beta=0.0, loss_type="bnpo"
    )
    loss.backward()
    r = 1 / S(2)
    close(x.grad, torch.tensor([[-r, -r, 0, 0], [r, 0, 0, 0]]) / 8)


# --------------------------------------------------------------- against trl's _compute_loss


class _SingleProcess:
    """The accelerator calls `_compute_loss` makes, for one process."""

    num_processes = 1

    @staticmethod
    def reduce(x, reduction="sum"):
        return x

    @staticmethod
    def gather(x):
        return x

    gather_for_metrics = gather


def _trl_compute_loss(logp, old, ref, adv, mask, eps_low, eps_high, beta, loss_type, max_len):
    """trl 1.16's `GRPOTrainer._compute_loss` on a bare instance holding only the attributes it
    reads (token-level ratios, no vLLM, no entropy masking or bonus, one process, no
    accumulation); the model forward is replaced by `logp`. Returns (loss, trl's metrics)."""
    from trl.trainer.grpo_trainer import GRPOTrainer

    trainer = object.__new__(GRPOTrainer)
    trainer.__dict__.update(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None),
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        model=SimpleNamespace(training=True),
        accelerator=_SingleProcess(),
        _metrics={"train": defaultdict(list)},
        aux_loss_enabled=False,
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        use_vllm=False,
        _entropy_bonus_enabled=False,
        current_gradient_accumulation_steps=1,
        max_completion_length=max_len,
        beta=beta,
        loss_type=loss_type,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
    )
    batch = logp.shape[0]
    inputs = {
        "prompt_ids": torch.zeros(batch, 2, dtype=torch.long),
        "prompt_mask": torch.ones(batch, 2, dtype=torch.long),
        "completion_ids": torch.zeros_like(mask, dtype=torch.long),
        "completion_mask": mask,
        "advantages": adv,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    loss = trainer._compute_loss(None, inputs)
    return loss, {k: v[0] for k, v in trainer._metrics["train"].items()}


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("per_token_adv", [False, True])
def test_grpo_loss_matches_trl(loss_type, per_token_adv):
    pytest.importorskip("trl")
    g = torch.Generator().manual_seed(3)
    b, length = 4, 6
    logp = -2 * torch.rand(b, length, generator=g, dtype=torch.float64)
    old = logp + 0.3 * torch.randn(b, length, generator=g, dtype=torch.float64)
    ref = logp + 0.3 * torch.randn(b, length, generator=g, dtype=torch.float64)
    shape = (b, length) if per_token_adv else (b,)
    adv = torch.randn(*shape, generator=g, dtype=torch.float64)
    lengths = torch.tensor([6, 4, 1, 3])
    mask = (torch.arange(length) < lengths[:, None]).long()
    args = (0.2, 0.28, 0.04, loss_type)

    x_trl = logp.clone().requires_grad_()
    want, trl_metrics = _trl_compute_loss(x_trl, old, ref, adv, mask, *args, max_len=8)
    want.backward()
    x = logp.clone().requires_grad_()
    loss, stats = grpo_loss(
        x, old, ref, adv, mask, eps_low=0.2, eps_high=0.28, beta=0.04, loss_type=loss_type,
        max_completion_length=8,
    )  # fmt: skip
    loss.backward()

    close(loss, want)
    close(x.grad, x_trl.grad)
    assert 0 < stats["clip_ratio/region_mean"] < 1  # the case exercises clipping
    for key in ("kl", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"):
        # trl divides by a float32 token count
        assert stats[key] == pytest.approx(trl_metrics[key], rel=1e-6), key


def test_on_policy_matches_trl_without_old_logps():
    """trl uses `per_token_logps.detach()` when there are no old log-probs; so do we."""
    pytest.importorskip("trl")
    g = torch.Generator().manual_seed(4)
    logp = -torch.rand(2, 3, generator=g, dtype=torch.float64)
    adv = torch.tensor([0.7, -1.2], dtype=torch.float64)
    mask = torch.ones(2, 3, dtype=torch.long)
    x_trl = logp.clone().requires_grad_()
    want, _ = _trl_compute_loss(x_trl, None, None, adv, mask, 0.2, 0.2, 0.0, "grpo", max_len=3)
    want.backward()
    x = logp.clone().requires_grad_()
    loss, stats = grpo_loss(
        x, None, None, adv, mask, eps_low=0.2, eps_high=0.2, beta=0.0, loss_type="grpo"
    )
    loss.backward()
    close(loss, want)
    close(x.grad, x_trl.grad)
    assert "kl" not in stats and stats["clip_ratio/region_mean"] == 0
