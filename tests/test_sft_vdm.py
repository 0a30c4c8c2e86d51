"""Tests for SFT of the renderer (vans.training.sft_vdm) on the tiny checkpoint and toy data."""

from __future__ import annotations

import dataclasses
import filecmp
from pathlib import Path

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from vans.data.manifest import load_manifest
from vans.data.toyworld import ToyWorldConfig, write_toyworld
from vans.errors import ConfigError
from vans.models.checkpoint import load_checkpoint, load_settings
from vans.models.flow_matching import set_schedule
from vans.models.pipeline import VANSPipeline, load_input
from vans.models.vlm import SamplingConfig
from vans.training.sft_vdm import (
    SFTVDMConfig,
    build_sft_vdm_task,
    noisy_latents,
    sample_sigma,
    shift_sigmas,
    velocity_target,
)

# Small clips keep the VAE cheap: 9 target frames (3 latent frames) at 32x32, the input
# encoded from 9 frames (3 latent frames, so the 6 reference indices repeat: 0 0 0 1 1 2).
SIZES = dict(num_frames=9, height=32, width=32, reference_video_frames=9)
N_REF = 6


@pytest.fixture(scope="module")
def toy_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = ToyWorldConfig(num=4, seed=0, size=(32, 32), input_frames=17, target_frames=9)
    return write_toyworld(config, tmp_path_factory.mktemp("toy"))


def make_config(checkpoint: Path, manifest: Path, **kwargs) -> SFTVDMConfig:
    return SFTVDMConfig(
        checkpoint=str(checkpoint), train_manifest=str(manifest), **{**SIZES, **kwargs}
    )


@pytest.fixture(scope="module")
def task(tiny_checkpoint, toy_manifest):
    return build_sft_vdm_task(make_config(tiny_checkpoint, toy_manifest))


@pytest.fixture(scope="module")
def cached_task(tiny_checkpoint, toy_manifest):
    return build_sft_vdm_task(make_config(tiny_checkpoint, toy_manifest, cache_latents=True))


def items_of(task, count: int = 4) -> list[dict]:
    return [task.train_dataset()[i] for i in range(count)]


# --------------------------------------------------------------------------- the math


def test_noising_and_velocity_hand_computed():
    x0 = torch.tensor([[1.0, -2.0], [0.0, 4.0]])
    noise = torch.tensor([[3.0, 0.5], [1.0, 0.0]])
    sigmas = torch.tensor([0.25, 1.0])
    expected = torch.tensor([[0.75 * 1 + 0.25 * 3, 0.75 * -2 + 0.25 * 0.5], [1.0, 0.0]])
    torch.testing.assert_close(noisy_latents(x0, noise, sigmas), expected)
    torch.testing.assert_close(velocity_target(x0, noise), torch.tensor([[2.0, 2.5], [1, -4.0]]))


def test_the_sampler_walks_the_training_path():
    """From x_sigma, a scheduler step with the target velocity lands exactly on
    x_sigma_next: training and the sampler use the same convention, and the timestep the
    DiT sees for a noise level is sigma * num_train_timesteps, as the scheduler's."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=5.0)
    schedule = set_schedule(scheduler, 4)
    torch.testing.assert_close(
        schedule.timesteps, schedule.sigmas[:-1] * scheduler.config.num_train_timesteps
    )
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(1, 16, 2, 4, 4, generator=g), torch.randn(1, 16, 2, 4, 4, generator=g)
    x = noisy_latents(x0, noise, schedule.sigmas[:1])
    for i, t in enumerate(schedule.timesteps):
        x = scheduler.step(velocity_target(x0, noise), t, x, return_dict=False)[0]
        expected = noisy_latents(x0, noise, schedule.sigmas[i + 1 : i + 2])
        torch.testing.assert_close(x, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x, x0, atol=1e-5, rtol=1e-5)


def test_shift_matches_diffusers():
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=5.0)
    u = torch.arange(1000, 0, -1) / 1000
    torch.testing.assert_close(shift_sigmas(u, 5.0), scheduler.sigmas.float())


def test_noise_level_distributions():
    def draws(**kwargs):
        g = torch.Generator().manual_seed(0)
        return torch.stack([sample_sigma(g, **kwargs) for _ in range(4000)])

    uniform = draws(shift=1.0)
    assert uniform.min() >= 0 and uniform.max() < 1
    assert abs(float(uniform.mean()) - 0.5) < 0.02
    shifted = draws(shift=5.0)
    # The median moves to shift(0.5) = 2.5 / 3.
    assert abs(float(shifted.median()) - 2.5 / 3) < 0.02
    logit = draws(shift=1.0, rule="logit_normal")
    inside = (logit > torch.sigmoid(torch.tensor(-1.0))) & (
        logit < torch.sigmoid(torch.tensor(1.0))
    )
    assert abs(float(inside.float().mean()) - 0.6827) < 0.03  # one standard deviation
    with pytest.raises(ValueError, match="rule"):
        sample_sigma(torch.Generator(), 1.0, "cosine")


# --------------------------------------------------------------------------- batches


def test_per_sample_randomness_comes_only_from_the_seeds(cached_task):
    task = cached_task
    items = items_of(task, 2)
    state = torch.get_rng_state()
    a, b = task.collate(items, [7, 8]), task.collate(items, [7, 8])
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    assert torch.equal(a["noise"], b["noise"]) and torch.equal(a["sigmas"], b["sigmas"])
    c = task.collate(items, [7, 9])
    assert torch.equal(c["noise"][0], a["noise"][0]) and not torch.equal(
        c["noise"][1], a["noise"][1]
    )
    assert c["noise"].shape == (2, 16, 3, 4, 4)  # C, T' = (9 - 1) / 4 + 1, 32 / 8, 32 / 8
    with torch.no_grad():
        torch.testing.assert_close(
            task.sample_losses(task.model, a), task.sample_losses(task.model, b)
        )


def test_caption_dropout(task, cached_task):
    dropped = [task.draw(seed)[1] for seed in range(2000)]
    assert abs(sum(dropped) / len(dropped) - 0.1) < 0.02
    seeds = [s for s, d in enumerate(dropped) if d][:1] + [
        s for s, d in enumerate(dropped) if not d
    ][:1]
    items = items_of(task, 2)
    batch = task.collate(items, seeds)
    assert batch["captions"] == [task.negative_prompt, items[1]["caption"]]
    assert task.negative_prompt == load_settings(task.start).negative_prompt
    cached = cached_task.collate(items_of(cached_task, 2), seeds)
    assert torch.equal(cached["prompt_embeds"][0], cached_task.negative_embeds())
    assert torch.equal(cached["prompt_embeds"][1], items_of(cached_task, 2)[1]["prompt_embeds"])
    never = dataclasses.replace(task.config, caption_dropout=0.0)
    always = dataclasses.replace(task.config, caption_dropout=1.0)
    for config, expected in ((never, False), (always, True)):
        task.config = config
        assert all(task.draw(seed)[1] == expected for seed in range(50))
    task.config = dataclasses.replace(task.config, caption_dropout=0.1)


# --------------------------------------------------------------------------- the loss


def test_the_dit_sees_the_sample_as_at_inference(task, toy_manifest):
    sample = load_manifest(toy_manifest)[0]
    batch = task.collate(items_of(task, 1), [3])
    seen = {}

    def hook(module, args, kwargs):
        seen.update(kwargs)

    handle = task.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            task.sample_losses(task.model, batch)
    finally:
        handle.remove()
    hidden = seen["hidden_states"]
    assert hidden.shape == (1, 16, N_REF + 3, 4, 4)
    # The reference: the inference path's latents of the input video, clean.
    settings = dataclasses.replace(load_settings(task.start), reference_video_frames=9)
    clip = load_input(settings, video=sample.input.path)
    reference = task.renderer.prepare_reference(clip.vdm_frames, N_REF, 32, 32)
    torch.testing.assert_close(hidden[:, :, :N_REF], reference, atol=1e-6, rtol=1e-6)
    # The rest: the target's latents noised to the sample's sigma; one timestep for all.
    x0 = task.renderer.encode_video(batch["target_frames"][0])
    expected = noisy_latents(x0, batch["noise"], batch["sigmas"])
    torch.testing.assert_close(hidden[:, :, N_REF:], expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(seen["timestep"], batch["sigmas"] * 1000)


def test_the_loss_ignores_the_reference_outputs(cached_task):
    task = cached_task
    batch = task.collate(items_of(task, 2), [0, 1])

    def shift_output(frames: slice):
        def hook(module, args, out):
            out = out[0].clone()
            out[:, :, frames] += 100.0
            return (out,)

        return hook

    with torch.no_grad():
        clean = task.sample_losses(task.model, batch)
        for frames, changes in ((slice(0, N_REF), False), (slice(N_REF, None), True)):
            handle = task.model.register_forward_hook(shift_output(frames))
            try:
                perturbed = task.sample_losses(task.model, batch)
            finally:
                handle.remove()
            assert torch.equal(perturbed, clean) != changes


def test_batch_split_invariance(cached_task):
    task = cached_task
    items, seeds = items_of(task, 4), [11, 12, 13, 14]
    with torch.no_grad():
        whole = task.sample_losses(task.model, task.collate(items, seeds))
        halves = torch.cat(
            [
                task.sample_losses(task.model, task.collate(items[i : i + 2], seeds[i : i + 2]))
                for i in (0, 2)
            ]
        )
        loss = task.loss(task.model, task.collate(items, seeds))["loss"]
    torch.testing.assert_close(whole, halves, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, whole.mean())


def test_latent_cache_gives_the_same_loss(task, cached_task, monkeypatch):
    seeds = [21, 22, 23]
    with torch.no_grad():
        fresh = task.sample_losses(task.model, task.collate(items_of(task, 3), seeds))
        cached = cached_task.sample_losses(
            cached_task.model, cached_task.collate(items_of(cached_task, 3), seeds)
        )
    torch.testing.assert_close(cached, fresh, atol=1e-5, rtol=1e-5)

    # Each item is encoded once: asking again runs neither encoder.
    def fail(*args, **kwargs):
        raise AssertionError("encoded twice")

    monkeypatch.setattr(cached_task.renderer.vae, "encode", fail)
    monkeypatch.setattr(cached_task.renderer.text_encoder, "forward", fail)
    again = cached_task.collate(items_of(cached_task, 3), seeds)
    assert set(again) == {"sigmas", "noise", "prompt_embeds", "target_latents", "reference_latents"}


def test_frozen_encoders_ignore_bf16_autocast(task):
    """The loop may run the loss under bf16 autocast; the VAE and text encoder still run in
    float32, so cached and freshly encoded latents stay the same numbers."""
    item = items_of(task, 1)[0]
    args = (item["reference_frames"][None], item["target_frames"][None], [item["caption"]])
    plain = task.encode(*args)
    batch = task.collate([item], [4])
    with torch.no_grad():
        full = task.loss(task.model, batch)["loss"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = task.encode(*args)
            half = task.loss(task.model, batch)["loss"]
    for key, value in plain.items():
        assert mixed[key].dtype == torch.float32 and torch.equal(mixed[key], value)
    assert half.dtype == torch.float32 and abs(float(half) - float(full)) < 0.05 * float(full)


def test_only_the_dit_trains(task):
    r = task.renderer
    assert task.model is r.transformer
    assert all(p.requires_grad for p in r.transformer.parameters())
    assert not any(p.requires_grad for m in (r.vae, r.text_encoder) for p in m.parameters())
    task.model.train()
    assert not r.vae.training and not r.text_encoder.training
    loss = task.loss(task.model, task.collate(items_of(task, 2), [0, 1]))["loss"]
    task.model.zero_grad()
    loss.backward()
    # Every DiT parameter is reached (no unused parameters), nothing else gets a gradient.
    assert all(p.grad is not None for p in r.transformer.parameters())
    assert all(p.grad is None for m in (r.vae, r.text_encoder) for p in m.parameters())
    task.model.zero_grad()
    task.model.eval()


def test_gradient_checkpointing_changes_nothing(tiny_checkpoint, toy_manifest, cached_task):
    task = cached_task
    checkpointed = build_sft_vdm_task(
        make_config(tiny_checkpoint, toy_manifest, gradient_checkpointing=True, cache_latents=True)
    )
    batch = task.collate(items_of(task, 2), [5, 6])
    grads = []
    for t in (task, checkpointed):
        t.model.train()
        t.model.zero_grad()
        loss = t.loss(t.model, batch)["loss"]
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in t.model.parameters()]))
        t.model.zero_grad()
        t.model.eval()
    assert checkpointed.model.is_gradient_checkpointing
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_a_few_adam_steps_lower_the_loss(tiny_checkpoint, toy_manifest):
    task = build_sft_vdm_task(make_config(tiny_checkpoint, toy_manifest, cache_latents=True))
    batch = task.collate(items_of(task, 2), [0, 1])
    optimizer = torch.optim.AdamW(task.model.parameters(), lr=1e-3)
    task.model.train()
    losses = []
    for _ in range(6):
        loss = task.loss(task.model, batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0], losses


# --------------------------------------------------------------------------- configs and saving


def test_config_errors(tiny_checkpoint, toy_manifest):
    with pytest.raises(ConfigError, match="caption_dropout"):
        make_config(tiny_checkpoint, toy_manifest, caption_dropout=1.5)
    with pytest.raises(ConfigError, match="num_frames must be 4k\\+1, got 10"):
        build_sft_vdm_task(make_config(tiny_checkpoint, toy_manifest, num_frames=10))
    with pytest.raises(ConfigError, match="width must be a multiple of 16, got 40"):
        build_sft_vdm_task(make_config(tiny_checkpoint, toy_manifest, width=40))


def test_unset_sizes_come_from_the_checkpoint(tiny_checkpoint, toy_manifest):
    config = SFTVDMConfig(checkpoint=str(tiny_checkpoint), train_manifest=str(toy_manifest))
    settings = load_settings(tiny_checkpoint)
    resolved = config.resolved(settings)
    assert (resolved.num_frames, resolved.height, resolved.width) == (17, 64, 64)
    assert resolved.num_reference_frames == settings.num_reference_frames == 6
    assert resolved.flow_shift == settings.flow_shift == 5.0


def test_save_pretrained_writes_a_checkpoint_that_renders(tiny_checkpoint, toy_manifest, tmp_path):
    task = build_sft_vdm_task(make_config(tiny_checkpoint, toy_manifest))
    with torch.no_grad():
        for p in task.model.parameters():
            p.add_(0.01)
    out = tmp_path / "sft"
    task.save_pretrained(task.model, out)
    reasoner, renderer, settings = load_checkpoint(out)
    trained = task.model.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in renderer.transformer.state_dict().items())
    for part in ("vae", "text_encoder"):
        fresh = getattr(task.renderer, part).state_dict()
        assert all(
            torch.equal(v, fresh[k]) for k, v in getattr(renderer, part).state_dict().items()
        )
    # The reasoner is the starting checkpoint's, file for file; the settings record the
    # conditioning trained with.
    same = filecmp.dircmp(tiny_checkpoint / "vlm", out / "vlm")
    assert not (same.left_only or same.right_only or same.diff_files)
    assert settings == dataclasses.replace(load_settings(tiny_checkpoint), reference_video_frames=9)
    quick = dataclasses.replace(settings, steps=2, sampling=SamplingConfig(max_new_tokens=8))
    pipe = VANSPipeline(reasoner, renderer, quick)
    answers = pipe(
        "What happens next?", video=load_manifest(task.config.train_manifest)[0].input.path
    )
    assert answers[0].video.shape == (17, 64, 64, 3)
