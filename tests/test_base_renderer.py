"""Tests for the toy renderer base: the VAE's foreground weighting, text-to-video pretraining
on clip descriptions (`sft-vdm` with clips: descriptions) with the text encoder trained, and
the "toy-base" renderer preset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vans.data.manifest import load_manifest
from vans.data.toyworld import ToyWorldConfig, write_toyworld
from vans.errors import ConfigError
from vans.models.checkpoint import RENDERER_PRESETS, load_checkpoint, load_settings
from vans.models.vdm import Renderer
from vans.training.config import TrainConfig
from vans.training.loop import train
from vans.training.sft_vdm import SFTVDMConfig, build_sft_vdm_task
from vans.training.vae import VAEConfig, build_vae_task, foreground_mask, weighted_mse

SIZES = dict(num_frames=9, height=32, width=32, reference_video_frames=9)


@pytest.fixture(scope="module")
def toy_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = ToyWorldConfig(num=3, seed=0, size=(32, 32), input_frames=17, target_frames=9)
    return write_toyworld(config, tmp_path_factory.mktemp("toy"))


def t2v_config(checkpoint: Path, manifest: Path, out: Path | None = None, **kwargs):
    train_config = TrainConfig(
        out_dir=str(out or "unused"), steps=2, batch_size=2, lr=1e-3, save_every=1, log_every=1
    )
    defaults = dict(
        checkpoint=str(checkpoint),
        train_manifest=str(manifest),
        clips="descriptions",
        num_reference_frames=0,
        train_text_encoder=True,
        train=train_config,
    )
    return SFTVDMConfig(**{**defaults, **SIZES, **kwargs})


# --------------------------------------------------------------------------- VAE weighting


def test_foreground_is_what_differs_from_its_rows_background():
    x = torch.full((1, 3, 2, 2, 4), -0.8)
    x[:, :, :, 1] = 0.2  # the second row is floor: its own background
    x[0, :, 1, 0, 2] = torch.tensor([0.9, -0.6, -0.6])  # a red pixel in frame 1, row 0
    x[0, 2, 0, 1, 3] = 0.25  # within the threshold of the floor
    mask = foreground_mask(x, threshold=0.1)
    assert mask.shape == (1, 1, 2, 2, 4)
    assert mask.sum() == 1 and mask[0, 0, 1, 0, 2]


def test_weighted_mse_hand_computed():
    error = torch.zeros(1, 3, 1, 1, 2)
    error[0, :, 0, 0, 0] = 1.0  # squared error 1 on every channel of pixel 0, 0 on pixel 1
    weight = torch.tensor([11.0, 1.0]).view(1, 1, 1, 1, 2)
    # (11 * 1 * 3 + 1 * 0 * 3) / (11 * 3 + 1 * 3) = 33 / 36
    assert weighted_mse(error, weight).item() == pytest.approx(33 / 36)
    assert weighted_mse(error, torch.ones(1, 1, 1, 1, 2)).item() == pytest.approx(0.5)


def test_vae_loss_weights_the_objects(tiny_checkpoint, toy_manifest):
    config = VAEConfig(
        checkpoint=str(tiny_checkpoint),
        train_manifest=str(toy_manifest),
        num_frames=5,
        height=32,
        width=32,
        foreground_weight=10.0,
        stats_clips=2,
    )
    task = build_vae_task(config)
    batch = task.collate([task.train_dataset()[i] for i in range(2)], [0, 1])
    with torch.no_grad():
        out = task.loss(task.model, batch)
    assert {"mse", "foreground_mse", "weighted_mse", "kl", "psnr"} <= set(out)
    expected = out["weighted_mse"] + config.kl_weight * out["kl"]
    torch.testing.assert_close(out["loss"], expected)
    # A random decoder misses the objects far more than the flat background.
    assert out["foreground_mse"] > out["mse"] and out["weighted_mse"] > out["mse"]
    with pytest.raises(ConfigError, match="foreground_weight must be >= 0"):
        VAEConfig(checkpoint="c", train_manifest="m", foreground_weight=-1)


# --------------------------------------------------------------------------- T2V pretraining


def test_descriptions_train_on_target_and_input_clips(tiny_checkpoint, toy_manifest):
    task = build_sft_vdm_task(t2v_config(tiny_checkpoint, toy_manifest))
    samples = load_manifest(toy_manifest)
    items = task.train_dataset()
    assert len(items) == 2 * len(samples)
    for i, sample in enumerate(samples):
        target, clip = items[2 * i], items[2 * i + 1]
        assert target["id"] == f"{sample.id}/target" and clip["id"] == f"{sample.id}/input"
        assert target["caption"] == sample.extra["target_description"]
        assert clip["caption"] == sample.extra["description"]
        # The input clip is resampled to the target's 9 frames at the target's size.
        assert target["target_frames"].shape == clip["target_frames"].shape == (9, 32, 32, 3)
    answer = build_sft_vdm_task(
        t2v_config(tiny_checkpoint, toy_manifest, clips="answer", num_reference_frames=6)
    )
    assert [it["caption"] for it in answer.train_dataset()] == [s.answer for s in samples]
    with pytest.raises(ConfigError, match="set num_reference_frames: 0, got 6"):
        t2v_config(tiny_checkpoint, toy_manifest, num_reference_frames=6)


def test_the_text_encoder_trains_with_the_dit(tiny_checkpoint, toy_manifest):
    task = build_sft_vdm_task(t2v_config(tiny_checkpoint, toy_manifest, cache_latents=True))
    r = task.renderer
    assert set(task.model) == {"transformer", "text_encoder"}
    assert not any(p.requires_grad for p in r.vae.parameters())
    item = task.train_dataset()[0]
    # Cached items keep the VAE latents but not the (changing) prompt embeddings.
    assert "target_latents" in item and "prompt_embeds" not in item and item["caption"]
    batch = task.collate([item, task.train_dataset()[1]], [3, 4])
    task.loss(task.model, batch)["loss"].backward()
    for module in (r.transformer, r.text_encoder):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads)
    task.model.zero_grad(set_to_none=True)


def test_pretraining_resumes_exactly_and_saves_a_t2v_base(tiny_checkpoint, toy_manifest, tmp_path):
    config = t2v_config(tiny_checkpoint, toy_manifest, tmp_path / "straight", cache_latents=True)
    config.train.steps = 3
    straight = train(build_sft_vdm_task(config), config.train)

    config = t2v_config(tiny_checkpoint, toy_manifest, tmp_path / "resumed", cache_latents=True)
    config.train.steps = 2
    train(build_sft_vdm_task(config), config.train)
    config.train.steps = 3
    resumed = train(build_sft_vdm_task(config), config.train, resume=True)
    assert resumed.losses == pytest.approx(straight.losses[2:], abs=1e-6)

    _, renderer, settings = load_checkpoint(resumed.final_dir)
    _, again, _ = load_checkpoint(straight.final_dir)
    _, start, _ = load_checkpoint(tiny_checkpoint)
    assert settings.num_reference_frames == 0  # a text-to-video base
    for name in ("text_encoder", "transformer"):
        trained = dict(getattr(renderer, name).named_parameters())
        for key, value in getattr(again, name).named_parameters():
            torch.testing.assert_close(trained[key], value)
        assert any(
            not torch.equal(trained[key], value)
            for key, value in getattr(start, name).named_parameters()
        )
    assert load_settings(tiny_checkpoint).num_reference_frames == 6


# --------------------------------------------------------------------------- the preset


def test_toy_base_preset_downsamples_as_its_scale_factors_say(tiny_checkpoint):
    tokenizer = Renderer.from_pretrained(tiny_checkpoint / "vdm").tokenizer
    renderer = Renderer.random(tokenizer, **RENDERER_PRESETS["toy-base"])
    frames = torch.zeros(5, 32, 32, 3, dtype=torch.uint8)
    latents = renderer.encode_video(frames)
    scale = renderer.spatial_scale
    assert latents.shape[2:] == (renderer.num_latent_frames(5), 32 // scale, 32 // scale)
    video = renderer.render(
        ["a red circle"], num_reference_frames=0, num_frames=5, height=32, width=32, steps=1
    )
    assert video.shape == (1, 5, 32, 32, 3)


def test_a_batch_of_clips_encodes_as_each_clip_alone(tiny_checkpoint):
    renderer = Renderer.from_pretrained(tiny_checkpoint / "vdm")
    clips = torch.randint(0, 256, (3, 5, 32, 32, 3), dtype=torch.uint8)
    batched = renderer.encode_video(clips)
    alone = torch.cat([renderer.encode_video(clip) for clip in clips])
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=1e-4)


def test_longest_padding_gives_the_pipelines_embeddings(tiny_checkpoint):
    renderer = Renderer.from_pretrained(tiny_checkpoint / "vdm")
    prompts = ["The red circle moves left and ends at the bottom.", "a cube"]
    exact = renderer.encode_prompts(prompts)
    with torch.no_grad():
        short = renderer.prompt_embeddings(prompts, longest=True)
    assert short.shape == exact.shape == (2, 512, renderer.text_encoder.config.d_model)
    torch.testing.assert_close(short, exact, atol=1e-5, rtol=1e-5)
