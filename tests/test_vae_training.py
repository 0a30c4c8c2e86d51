"""Tests for autoencoder training of a toy renderer's VAE (vans.training.vae)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from vans.data.toyworld import ToyWorldConfig, write_toyworld
from vans.errors import ConfigError
from vans.evaluation.video_metrics import psnr
from vans.models.checkpoint import load_checkpoint
from vans.models.vdm import video_to_uint8, video_to_unit
from vans.training.config import TrainConfig
from vans.training.loop import train
from vans.training.vae import (
    VAEConfig,
    build_vae_task,
    channel_statistics,
    gaussian_kl,
)


@pytest.fixture(scope="module")
def toy_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = ToyWorldConfig(num=3, seed=0, size=(32, 32), input_frames=17, target_frames=9)
    return write_toyworld(config, tmp_path_factory.mktemp("toy"))


def make_config(checkpoint: Path, manifest: Path, **kwargs) -> VAEConfig:
    defaults = dict(
        checkpoint=str(checkpoint),
        train_manifest=str(manifest),
        num_frames=5,
        height=32,
        width=32,
        stats_clips=6,
    )
    return VAEConfig(**{**defaults, **kwargs})


def test_kl_and_psnr_hand_computed():
    mean = torch.tensor([[0.0, 1.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    # 0.5 * (mu^2 + var - 1 - log var): 0 for N(0, 1); 0.5 * (1 + 2 - 1 - log 2) for N(1, 2).
    expected = (0.0 + 0.5 * (2 - math.log(2))) / 2
    assert gaussian_kl(mean, logvar).item() == pytest.approx(expected)
    target = torch.zeros(1, 3, 1, 2, 2)
    # An error of 0.2 everywhere in [-1, 1] units: MSE 0.04, PSNR 10 log10(4 / 0.04) = 20 dB.
    assert psnr(target + 0.2, target).item() == pytest.approx(20.0)


def test_channel_statistics_pool_every_clip_and_position():
    a = torch.randn(1, 2, 3, 4, 4)
    b = torch.randn(2, 2, 1, 4, 4)
    mean, std = channel_statistics([a, b])
    flat = torch.cat([a.transpose(0, 1).reshape(2, -1), b.transpose(0, 1).reshape(2, -1)], 1)
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), flat.double().mean(1))
    torch.testing.assert_close(torch.tensor(std, dtype=torch.float64), flat.double().std(1))


def test_pixel_conversions_invert_each_other():
    frames = torch.randint(0, 256, (2, 3, 4, 4, 3), dtype=torch.uint8)
    unit = video_to_unit(frames)
    assert unit.shape == (2, 3, 3, 4, 4) and unit.min() >= -1 and unit.max() <= 1
    assert torch.equal(video_to_uint8(unit), frames)


def test_bad_sizes_are_named(tiny_checkpoint, toy_manifest):
    with pytest.raises(ConfigError, match="num_frames must be 4k\\+1, got 6"):
        build_vae_task(make_config(tiny_checkpoint, toy_manifest, num_frames=6))
    with pytest.raises(ConfigError, match="clips must be target, input or both"):
        make_config(tiny_checkpoint, toy_manifest, clips="all")


def test_items_are_the_clips_of_each_sample(tiny_checkpoint, toy_manifest):
    task = build_vae_task(make_config(tiny_checkpoint, toy_manifest))
    items = task.train_dataset()
    assert len(items) == 6  # input and target of 3 samples
    assert items[0]["id"].endswith("/input") and items[1]["id"].endswith("/target")
    assert items[0]["frames"].shape == (5, 32, 32, 3) and items[0]["frames"].dtype == torch.uint8
    only_targets = build_vae_task(make_config(tiny_checkpoint, toy_manifest, clips="target"))
    assert len(only_targets.train_dataset()) == 3


def test_loss_trains_the_vae_only(tiny_checkpoint, toy_manifest):
    task = build_vae_task(make_config(tiny_checkpoint, toy_manifest))
    batch = task.collate([task.train_dataset()[i] for i in range(2)], [3, 4])
    assert batch["noise"].shape == (2, 16, 2, 4, 4)
    out = task.loss(task.model, batch)
    out["loss"].backward()
    kl_weight = task.config.kl_weight
    assert out["loss"].item() == pytest.approx(out["mse"].item() + kl_weight * out["kl"].item())
    assert all(p.grad is not None for p in task.renderer.vae.parameters() if p.requires_grad)
    assert all(p.grad is None for p in task.renderer.transformer.parameters())
    # The same seeds give the same noise: a resumed run replays its batches exactly.
    again = task.collate([task.train_dataset()[i] for i in range(2)], [3, 4])
    assert torch.equal(again["noise"], batch["noise"])


def test_short_run_improves_reconstruction_and_sets_latent_statistics(
    tiny_checkpoint, toy_manifest, tmp_path
):
    config = make_config(
        tiny_checkpoint,
        toy_manifest,
        eval_manifest=str(toy_manifest),
        train=TrainConfig(
            out_dir=str(tmp_path / "run"),
            steps=30,
            batch_size=2,
            lr=3e-3,
            eval_every=30,
            eval_samples=6,
            log_every=10,
            save_every=30,
        ),
    )
    task = build_vae_task(config)
    before = task.loss(task.model, task.collate(list(task.train_dataset()), list(range(6))))
    result = train(task, config.train)
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert rows[-1]["eval_psnr"] > before["psnr"].item() + 3  # random init: about 8 dB
    _, renderer, _ = load_checkpoint(result.final_dir)
    cfg = renderer.vae.config
    # Encoding the statistics' clips with the saved VAE gives unit-scale normalised latents.
    latents = torch.cat([renderer.encode_video(item["frames"]) for item in task.train_dataset()])
    flat = latents.transpose(0, 1).reshape(cfg.z_dim, -1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(cfg.z_dim), atol=1e-4, rtol=0)
    torch.testing.assert_close(flat.std(1), torch.ones(cfg.z_dim), atol=1e-4, rtol=0)
