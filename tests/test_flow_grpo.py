"""Tests for Flow-GRPO's SDE step (vans.models.flow_matching) and the renderer's SDE
sampler / re-scoring (vans.rl.flow_grpo) on the tiny random Wan2.1."""

from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from torch.distributions import Normal, kl_divergence

from vans.errors import ConfigError, VansError
from vans.models.flow_matching import (
    Schedule,
    euler_step,
    sde_kl,
    sde_std_dev,
    sde_step,
    sde_step_with_logprob,
    set_schedule,
)
from vans.models.tiny import toy_corpus, train_text_encoder_tokenizer
from vans.models.vdm import Conditioning, Renderer, RenderSettings
from vans.rl.config import FlowGRPOConfig
from vans.rl.flow_grpo import (
    reference_step_log_prob,
    sample_trajectory,
    step_log_prob,
    train_step_indices,
    use_transformer,
)

SIZE = dict(num_frames=5, height=32, width=32)  # 2 latent frames of 4x4
CAPTIONS = ["the red ball rolls to the left", "the blue box falls"]
# A hand-made 3-step schedule starting at sigma = 1.
HAND_SCHEDULE = Schedule(
    timesteps=torch.tensor([1000.0, 750.0, 250.0]),
    sigmas=torch.tensor([1.0, 0.75, 0.25, 0.0]),
)


def dims(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    tokenizer = train_text_encoder_tokenizer(toy_corpus(50), vocab_size=200)
    return Renderer.tiny(tokenizer, seed=0)


@pytest.fixture(scope="module")
def conditioning(renderer) -> Conditioning:
    g = torch.Generator().manual_seed(1)
    video = torch.randint(0, 256, (9, 40, 48, 3), generator=g, dtype=torch.uint8)
    return Conditioning(
        prompt_embeds=renderer.encode_prompts(CAPTIONS, max_sequence_length=16),
        negative_embeds=renderer.encode_prompts([""], max_sequence_length=16),
        reference=renderer.prepare_reference(video, 3, SIZE["height"], SIZE["width"]),
    )


def noise(renderer: Renderer, seed: int = 0) -> torch.Tensor:
    return renderer.initial_noise(len(CAPTIONS), **SIZE, seed=seed)


def shift5(steps: int) -> Schedule:
    return set_schedule(FlowMatchEulerDiscreteScheduler(shift=5.0), steps)


# --------------------------------------------------------------------------- the pure step


def test_log_prob_is_the_gaussian_density_of_the_sample():
    schedule = shift5(4)
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(3, 16, 2, 4, 4, generator=g), torch.randn(3, 16, 2, 4, 4, generator=g)
    for index in range(len(schedule)):
        out = sde_step_with_logprob(x, v, index, schedule, 0.7, generator=g)
        expected = Normal(out.mean, out.std).log_prob(out.sample).mean(dim=dims(x))
        assert out.log_prob.shape == (3,) and out.log_prob.dtype == torch.float32
        torch.testing.assert_close(out.log_prob, expected, atol=1e-5, rtol=1e-6)
        assert out.std.ndim == 0 and out.std > 0
        # The sample really is drawn around the mean with the step's std.
        z = (out.sample - out.mean) / out.std
        assert abs(z.mean().item()) < 0.1 and abs(z.std().item() - 1) < 0.1
    # bf16 inputs: the step is computed and returned in float32.
    out16 = sde_step_with_logprob(x.bfloat16(), v.bfloat16(), 1, schedule, generator=g)
    assert out16.sample.dtype == out16.log_prob.dtype == torch.float32


def test_prev_sample_is_scored_and_nothing_is_drawn():
    schedule = shift5(4)
    g = torch.Generator().manual_seed(0)
    x, v, prev = (torch.randn(2, 16, 2, 4, 4, generator=g) for _ in range(3))
    g_state, global_state = g.get_state(), torch.random.get_rng_state()
    out = sde_step_with_logprob(x, v, 2, schedule, 0.7, prev_sample=prev, generator=g)
    assert torch.equal(g.get_state(), g_state)
    assert torch.equal(torch.random.get_rng_state(), global_state)
    assert torch.equal(out.sample, prev)
    expected = Normal(out.mean, out.std).log_prob(prev).mean(dim=dims(prev))
    torch.testing.assert_close(out.log_prob, expected, atol=1e-5, rtol=1e-6)
    # Scoring the sample the step drew from given noise gives back the drawn log-prob.
    eps = torch.randn(x.shape, generator=g)
    drawn = sde_step_with_logprob(x, v, 2, schedule, 0.7, noise=eps)
    scored = sde_step_with_logprob(x, v, 2, schedule, 0.7, prev_sample=drawn.sample)
    assert torch.equal(scored.log_prob, drawn.log_prob)
    with pytest.raises(ValueError, match="not both"):
        sde_step_with_logprob(x, v, 2, schedule, prev_sample=prev, noise=eps)
    with pytest.raises(ValueError, match="noise_level must be > 0"):
        sde_step_with_logprob(x, v, 2, schedule, 0.0)


def test_hand_computed_steps_and_sigma_one_uses_second_sigma():
    x = torch.tensor([[1.0, 2.0]])
    v = torch.tensor([[4.0, -2.0]])
    eps = torch.tensor([[1.0, -1.0]])
    # Step 0, sigma = 1: std_dev = a * sqrt(1 / (1 - sigmas[1])) = 0.5 * 2 = 1 (finite).
    assert sde_std_dev(HAND_SCHEDULE, 0, 0.5).item() == pytest.approx(1.0)
    out = sde_step_with_logprob(x, v, 0, HAND_SCHEDULE, 0.5, noise=eps)
    # dt = -0.25: mean = x (1 + 1/2 * -0.25) + v (1 + 0) * -0.25 = 0.875 x - 0.25 v.
    torch.testing.assert_close(out.mean, torch.tensor([[-0.125, 2.25]]))
    torch.testing.assert_close(out.std, torch.tensor(0.5))  # 1 * sqrt(0.25)
    torch.testing.assert_close(out.sample, torch.tensor([[0.375, 1.75]]))
    # Each element is one std from the mean: -1/2 - log(0.5) - log(2 pi) / 2.
    expected = -0.5 - math.log(0.5) - 0.5 * math.log(2 * math.pi)
    assert out.log_prob.item() == pytest.approx(expected, abs=1e-6)

    # Step 1, sigma = 0.75: std_dev^2 = 0.25 * 3 = 0.75, dt = -0.5:
    # mean = x (1 + 0.75 / 1.5 * -0.5) + v (1 + 0.75 * 0.25 / 1.5) * -0.5 = 0.75 x - 0.5625 v.
    out = sde_step_with_logprob(x, v, 1, HAND_SCHEDULE, 0.5, noise=eps)
    torch.testing.assert_close(out.mean, torch.tensor([[0.75 - 2.25, 1.5 + 1.125]]))
    torch.testing.assert_close(out.std, torch.tensor(math.sqrt(0.75 * 0.5)))


def test_kl_closed_form():
    mean = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    ref = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    std = torch.tensor(2.0)
    # Row 0: (1 + 4) / 2 / (2 * 4); row 1: 9 / 2 / 8.
    torch.testing.assert_close(sde_kl(mean, ref, std), torch.tensor([0.3125, 0.5625]))
    expected = kl_divergence(Normal(mean, std), Normal(ref, std)).mean(dim=1)
    torch.testing.assert_close(sde_kl(mean, ref, std), expected)
    assert torch.equal(sde_kl(mean, mean, std), torch.zeros(2))


# --------------------------------------------------------------------------- the sampler


def test_sde_converges_to_the_ode_sampler_as_noise_vanishes(renderer, conditioning):
    x = noise(renderer)
    args = (conditioning.prompt_embeds, conditioning.negative_embeds)
    kwargs = dict(
        settings=RenderSettings(steps=4, guidance_scale=5.0), reference=conditioning.reference
    )
    with torch.no_grad():
        ode = renderer.denoise(x, *args, step=euler_step, **kwargs)
    errors = []
    for a in (0.3, 0.03, 1e-4):
        config = FlowGRPOConfig(num_steps=4, noise_level=a)
        traj = sample_trajectory(
            renderer, x, conditioning, config, torch.Generator().manual_seed(0)
        )
        errors.append((traj.final_latents - ode).abs().max().item())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-3 * ode.abs().max().item()
    assert errors[2] < 2 * errors[1] * (1e-4 / 0.03)  # first order in a
    assert errors[0] > 0.01  # the SDE really is stochastic at a usable noise level


def test_trajectory_record_and_flow_step(renderer, conditioning):
    config = FlowGRPOConfig(num_steps=4)
    x = noise(renderer)
    traj = sample_trajectory(renderer, x, conditioning, config, torch.Generator().manual_seed(3))
    assert [s.index for s in traj.steps] == traj.sde_indices == [0, 1, 2, 3]
    assert torch.equal(traj.steps[0].latents, x)
    for before, after in zip(traj.steps, traj.steps[1:], strict=False):
        assert after.latents is before.next_latents
    torch.testing.assert_close(
        torch.stack([s.timestep for s in traj.steps]), traj.schedule.timesteps
    )
    assert traj.log_probs().shape == (2, 4) and traj.log_probs().dtype == torch.float32
    assert traj.final_latents.shape == x.shape
    # The plain SDE FlowStep in Renderer.denoise walks the same path for the same draws.
    with torch.no_grad():
        via_denoise = renderer.denoise(
            x,
            conditioning.prompt_embeds,
            conditioning.negative_embeds,
            settings=RenderSettings(steps=4, guidance_scale=config.guidance_scale),
            reference=conditioning.reference,
            step=sde_step(config.noise_level, torch.Generator().manual_seed(3)),
        )
    assert torch.equal(via_denoise, traj.final_latents)


def test_first_on_policy_ratio_is_exactly_one(renderer, conditioning):
    config = FlowGRPOConfig(num_steps=4, guidance_scale=5.0)
    traj = sample_trajectory(
        renderer, noise(renderer), conditioning, config, torch.Generator().manual_seed(0)
    )
    renderer.transformer.zero_grad()
    worst = 0.0
    for j in traj.sde_indices:
        out = step_log_prob(renderer, traj, j, conditioning, config)
        assert out.log_prob.requires_grad
        ratio = torch.exp(out.log_prob - traj.steps[j].log_prob)
        worst = max(worst, (out.log_prob - traj.steps[j].log_prob).abs().max().item())
        assert torch.allclose(ratio, torch.ones(2), atol=1e-6, rtol=0)
        out.log_prob.sum().backward()
    assert worst < 1e-6
    grads = [p.grad for p in renderer.transformer.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0
    renderer.transformer.zero_grad()


def test_kl_to_reference_model(renderer, conditioning):
    config = FlowGRPOConfig(num_steps=3)
    traj = sample_trajectory(
        renderer, noise(renderer), conditioning, config, torch.Generator().manual_seed(0)
    )
    out = step_log_prob(renderer, traj, 1, conditioning, config)
    same = reference_step_log_prob(
        renderer, traj, 1, conditioning, config, reference_model=renderer.transformer
    )
    assert not same.log_prob.requires_grad
    assert torch.equal(sde_kl(out.mean, same.mean, out.std), torch.zeros(2))

    other = Renderer.tiny(renderer.tokenizer, seed=1).transformer
    original = renderer.transformer
    by_module = reference_step_log_prob(renderer, traj, 1, conditioning, config, other)
    assert renderer.transformer is original  # swapped back
    by_context = reference_step_log_prob(
        renderer, traj, 1, conditioning, config, use_transformer(renderer, other)
    )
    assert torch.equal(by_module.mean, by_context.mean)
    kl = sde_kl(out.mean, by_module.mean, out.std)
    assert kl.shape == (2,) and (kl > 0).all()
    direct = ((out.mean - by_module.mean) ** 2).mean(dim=dims(out.mean)) / (2 * out.std**2)
    torch.testing.assert_close(kl, direct)
    kl.sum().backward()  # the KL's gradient reaches the policy only
    assert any(p.grad is not None for p in renderer.transformer.parameters())
    assert all(p.grad is None for p in other.parameters())
    renderer.transformer.zero_grad()


def test_sde_window_steps_outside_are_euler(renderer, conditioning):
    config = FlowGRPOConfig(num_steps=4, sde_window=(1, 3))
    x = noise(renderer)
    a = sample_trajectory(renderer, x, conditioning, config, torch.Generator().manual_seed(0))
    b = sample_trajectory(renderer, x, conditioning, config, torch.Generator().manual_seed(1))
    assert a.sde_indices == [1, 2]
    assert [s.log_prob is None for s in a.steps] == [True, False, False, True]
    assert torch.equal(a.steps[0].next_latents, b.steps[0].next_latents)  # deterministic
    assert not torch.equal(a.steps[1].next_latents, b.steps[1].next_latents)
    for j in (0, 3):
        s = a.steps[j]
        with torch.no_grad():
            v = renderer.predict_velocity(
                s.latents,
                s.timestep,
                conditioning.prompt_embeds,
                conditioning.negative_embeds,
                config.guidance_scale,
                conditioning.reference,
            )
        assert torch.equal(s.next_latents, euler_step(s.latents, v, j, a.schedule))
    assert train_step_indices(a, 1.0, torch.Generator()) == [1, 2]
    with pytest.raises(ValueError, match=r"step 0 is an Euler.*SDE steps: \[1, 2\]"):
        step_log_prob(renderer, a, 0, conditioning, config)


# --------------------------------------------------------------------------- selection, config


def test_train_step_indices(renderer, conditioning):
    config = FlowGRPOConfig(num_steps=10)
    x = noise(renderer)[:1]
    one = Conditioning(conditioning.prompt_embeds[:1], conditioning.negative_embeds, None)
    traj = sample_trajectory(renderer, x, one, config, torch.Generator().manual_seed(0))
    assert train_step_indices(traj, 1.0, torch.Generator()) == list(range(10))
    picked = [train_step_indices(traj, 0.25, torch.Generator().manual_seed(s)) for s in range(5)]
    for p in picked:
        assert len(p) == 3 and p == sorted(set(p)) and set(p) <= set(range(10))  # ceil(2.5)
    assert train_step_indices(traj, 0.25, torch.Generator().manual_seed(0)) == picked[0]
    assert len({tuple(p) for p in picked}) > 1  # the seed matters
    assert len(train_step_indices(traj, 0.01, torch.Generator())) == 1
    with pytest.raises(ValueError, match="fraction"):
        train_step_indices(traj, 0.0, torch.Generator())


def test_group_noise(renderer):
    shared = renderer.initial_noise(3, **SIZE, seed=4, shared=True)
    assert shared.shape == (3, 16, 2, 4, 4)
    assert torch.equal(shared[0], shared[2])
    assert torch.equal(shared[:1], renderer.initial_noise(1, **SIZE, seed=4))
    own = renderer.initial_noise(3, **SIZE, seed=4)
    assert shared.shape == own.shape
    assert not torch.equal(own[0], own[1])


def test_config_errors_name_the_field():
    assert issubclass(ConfigError, VansError)
    with pytest.raises(ConfigError, match=r"sde_window.*num_steps \(4\).*\[2, 6\]"):
        FlowGRPOConfig(num_steps=4, sde_window=(2, 6))
    with pytest.raises(
        ConfigError, match=r"noise_level must be > 0.*timestep_fraction must be in \(0, 1\]"
    ):
        FlowGRPOConfig(noise_level=0.0, timestep_fraction=1.5)
    with pytest.raises(ConfigError, match="num_steps must be >= 1"):
        FlowGRPOConfig(num_steps=0)
