"""Tests for Joint-GRPO Stage 1 (vans.training.joint_grpo_vlm) on tiny models and toy data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from vans.data.toyworld import ToyWorldConfig, write_toyworld
from vans.errors import ConfigError
from vans.evaluation.embedders import CLIPEmbedder
from vans.evaluation.toy_embedder import ToyEmbedder, build_vocab
from vans.models.checkpoint import load_checkpoint, load_settings, save_checkpoint
from vans.models.vlm import LORA_DIR
from vans.rewards.vans import stage1_rewards
from vans.rl.advantages import segment_advantages, token_segment_masks
from vans.rl.config import GRPOConfig, RewardVideoConfig
from vans.training.config import TrainConfig, load_config
from vans.training.joint_grpo_vlm import (
    JointGRPOVLMConfig,
    build_joint_grpo_vlm_task,
)
from vans.training.loop import train

G = 3


@pytest.fixture(scope="module")
def toy_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = ToyWorldConfig(num=4, seed=0, size=(32, 32), input_frames=17, target_frames=9)
    return write_toyworld(config, tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def sft_checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint with a LoRA adapter (what SFT-VLM leaves) and small render sizes."""
    reasoner, renderer, settings = load_checkpoint(tiny_checkpoint)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        reasoner.add_lora()
    small = dataclasses.replace(
        settings,
        num_frames=5,
        height=32,
        width=32,
        reference_video_frames=5,
        sampling=dataclasses.replace(settings.sampling, max_new_tokens=12),
    )
    return save_checkpoint(tmp_path_factory.mktemp("sft") / "ckpt", reasoner, renderer, small)


@pytest.fixture(scope="module")
def embedder_dir(toy_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    captions = [json.loads(line)["answer"] for line in toy_manifest.read_text().splitlines()]
    out = tmp_path_factory.mktemp("embedder") / "toy"
    ToyEmbedder.untrained(build_vocab(captions)).save_pretrained(out)
    return out


def make_config(checkpoint: Path, manifest: Path, embedder: Path, **kwargs) -> JointGRPOVLMConfig:
    defaults = dict(
        checkpoint=str(checkpoint),
        train_manifest=str(manifest),
        embedder=str(embedder),
        grpo=GRPOConfig(group_size=G),
        reward_videos=RewardVideoConfig(steps=2),
        cache_items=True,
    )
    return JointGRPOVLMConfig(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def task(sft_checkpoint, toy_manifest, embedder_dir):
    return build_joint_grpo_vlm_task(make_config(sft_checkpoint, toy_manifest, embedder_dir))


def batch_of(task, indices=(0,), seeds=(7,)):
    return task.collate([task.train_dataset()[i] for i in indices], list(seeds))


# --------------------------------------------------------------------------- pure parts


class _CharTokenizer:
    """Decodes ids as characters of a fixed string: enough for the span arithmetic."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.pieces[i] for i in ids)


def test_token_segment_masks_follow_the_blocks():
    pieces = ["[Think]", "a", " b", "[/Think]", " ", "[Ans]", "cap", "[/Ans]", "<end>"]
    tok = _CharTokenizer(pieces)
    masks = token_segment_masks(tok, list(range(len(pieces))), length=11)
    # Tags belong to their block; the space between the blocks and the end token to none.
    assert masks["think"].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert masks["answer"].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    # A token spanning a tag boundary belongs to the block its first character is in.
    tok = _CharTokenizer(["[Think]x[/Th", "ink][Ans]y", "[/Ans]"])
    masks = token_segment_masks(tok, [0, 1, 2], length=3)
    assert masks["think"].tolist() == [1, 1, 0] and masks["answer"].tolist() == [0, 0, 1]


def test_segment_advantages_sum_normalised_rewards_per_segment():
    rewards = stage1_rewards(embedder=None)  # the functions are not called here
    values = {
        "r_f": torch.tensor([1.0, 0.0, 1.0]),
        "r_t1": torch.tensor([0.2, 0.2, 0.8]),
        "r_v1": torch.tensor([0.5, 0.5, 0.5]),  # no spread: contributes exactly 0
    }
    # z-scores with the unbiased std (eps 1e-4): r_f mean 2/3, std sqrt(1/3);
    # r_t1 mean 0.4, std sqrt(0.12).
    z_f = (values["r_f"] - 2 / 3) / (3**-0.5 + 1e-4)
    z_t = (values["r_t1"] - 0.4) / (0.12**0.5 + 1e-4)
    config = GRPOConfig(group_size=3)
    flat = segment_advantages(values, rewards, config, by_segment=False)
    torch.testing.assert_close(flat["all"], z_f + z_t)
    seg = segment_advantages(values, rewards, config, by_segment=True)
    torch.testing.assert_close(seg["all"], z_f)  # r_f judges every token
    torch.testing.assert_close(seg["think"], z_f)
    torch.testing.assert_close(seg["answer"], z_f + z_t)  # r_t1, r_v1 judge the answer
    weighted = GRPOConfig(group_size=3, reward_weights={"r_f": 0.0, "r_t1": 2.0})
    torch.testing.assert_close(
        segment_advantages(values, rewards, weighted, by_segment=False)["all"], 2 * z_t
    )


def test_unknown_reward_weight_is_named(sft_checkpoint, toy_manifest, embedder_dir):
    config = make_config(
        sft_checkpoint, toy_manifest, embedder_dir, grpo=GRPOConfig(reward_weights={"r_c2": 0})
    )
    with pytest.raises(ConfigError, match=r"reward_weights: unknown rewards \['r_c2'\]"):
        build_joint_grpo_vlm_task(config)


def test_checkpoint_without_adapter_is_refused(tiny_checkpoint, toy_manifest, embedder_dir):
    with pytest.raises(ConfigError, match=f"no LoRA adapter in vlm/{LORA_DIR}"):
        build_joint_grpo_vlm_task(make_config(tiny_checkpoint, toy_manifest, embedder_dir))


# --------------------------------------------------------------------------- the task


def test_loss_trains_only_the_adapter_and_feeds_the_video(task):
    model = task.model
    calls = []
    hook = model.model.visual.register_forward_hook(
        lambda *args: calls.append(torch.is_grad_enabled())
    )
    model.train()
    model.zero_grad(set_to_none=True)
    try:
        out = task.loss(model, batch_of(task))
    finally:
        hook.remove()
    out["loss"].backward()
    # The vision tower ran in the sampling (no grad) and again in the loss forward (grad).
    assert False in calls and True in calls
    assert torch.isfinite(out["loss"])
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trained and all("lora_" in n for n in trained)
    assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n in trained)
    for module in (task.renderer.transformer, task.renderer.vae):
        assert all(p.grad is None for p in module.parameters())
    for key in ("reward/r_f", "reward/r_t1", "reward/r_v1", "reward/total", "kl",
                "clip_ratio/region_mean", "advantage/abs_mean", "length/think_tokens",
                "reward_videos/unique", "time/sampling", "time/reward_videos",
                "time/scoring", "time/update"):  # fmt: skip
        assert key in out, key
    assert 1 <= out["reward_videos/unique"] <= G


def test_on_policy_step_has_no_kl(task):
    """At the start the policy is the reference: in training mode (the task switched LoRA
    dropout off) the KL is exactly 0. (Whether the clip binds is tested with
    num_iterations 2 below: with one iteration the ratio is 1 by construction.)"""
    assert all(m.p == 0 for m in task.model.modules() if isinstance(m, torch.nn.Dropout))
    assert task.reasoner.peft_model.peft_config["default"].lora_dropout > 0  # as trained
    task.model.train()
    out = task.loss(task.model, batch_of(task))
    assert float(out["kl"]) == 0.0


def test_rollout_is_a_function_of_the_seed(task):
    batch = batch_of(task, seeds=(11,))
    with torch.no_grad():
        a = task.evaluate(task.model, batch)
        b = task.evaluate(task.model, batch)
    for key in ("reward/r_t1", "reward/r_v1", "length/completion_tokens"):
        assert float(a[key]) == float(b[key])
    assert float(a["loss"]) == -float(a["reward/total"])


def test_segment_aware_advantages_reach_the_tokens(sft_checkpoint, toy_manifest, embedder_dir):
    task = build_joint_grpo_vlm_task(
        make_config(sft_checkpoint, toy_manifest, embedder_dir, segment_advantages=True)
    )
    out = task.loss(task.model, batch_of(task))
    assert torch.isfinite(out["loss"])


def test_short_run_saves_a_loadable_checkpoint(
    sft_checkpoint, toy_manifest, embedder_dir, tmp_path
):
    config = make_config(
        sft_checkpoint,
        toy_manifest,
        embedder_dir,
        eval_manifest=str(toy_manifest),
        train=TrainConfig(
            out_dir=str(tmp_path / "run"),
            steps=2,
            batch_size=2,
            lr=1e-3,
            eval_every=2,
            eval_samples=2,
            log_every=1,
            save_every=2,
        ),
    )
    result = train(build_joint_grpo_vlm_task(config), config.train)
    rows = read_rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2]
    assert "reward/r_v1" in rows[0] and "eval_reward/r_t1" in rows[1]
    reasoner, _, settings = load_checkpoint(result.final_dir)
    assert reasoner.peft_model is not None
    assert settings == load_settings(sft_checkpoint)
    assert (result.final_dir / "vdm" / "transformer").is_dir()

    # Interrupted after step 1 and resumed: step 2 equals the uninterrupted run's, its KL
    # taken against the start model (the reference snapshot precedes the resumed weights).
    def run(steps: int) -> JointGRPOVLMConfig:
        train_config = dataclasses.replace(
            config.train, out_dir=str(tmp_path / "resumed"), steps=steps, eval_every=0
        )
        return dataclasses.replace(config, train=train_config)

    train(build_joint_grpo_vlm_task(run(1)), run(1).train)
    train(build_joint_grpo_vlm_task(run(2)), run(2).train, resume=True)
    resumed = read_rows(tmp_path / "resumed")
    assert [r["step"] for r in resumed] == [1, 2]
    for key in ("loss", "kl", "reward/r_t1", "reward/r_v1", "length/completion_tokens"):
        assert resumed[1][key] == pytest.approx(rows[1][key], rel=1e-5, abs=1e-9), key


def read_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_paper_config_has_the_paper_values():
    config = load_config(
        JointGRPOVLMConfig, Path(__file__).parents[1] / "configs/paper/joint_grpo_stage1.yaml"
    )
    g = config.grpo
    assert (g.group_size, g.beta, g.clip_range) == (8, 0.004, 1e-3)
    assert (config.train.steps, config.train.lr) == (800, 5e-5)


def test_batch_split_invariance(task):
    """A batch's loss and rewards are the means of its prompts' own (same seeds), so equal
    shards on several processes average to the global batch's."""
    with torch.no_grad():
        both = task.loss(task.model, batch_of(task, (0, 1), (7, 8)))
        alone = [task.loss(task.model, batch_of(task, (i,), (s,))) for i, s in ((0, 7), (1, 8))]
    for key in ("loss", "reward/r_t1", "reward/r_v1", "reward/total", "length/think_tokens"):
        mean = (float(alone[0][key]) + float(alone[1][key])) / 2
        assert float(both[key]) == pytest.approx(mean, rel=1e-5, abs=1e-6), key


def test_toy_option_tunes_the_output_head_too(sft_checkpoint, toy_manifest, embedder_dir):
    task = build_joint_grpo_vlm_task(
        make_config(sft_checkpoint, toy_manifest, embedder_dir, train_lm_head=True)
    )
    task.loss(task.model, batch_of(task))["loss"].backward()
    trained = {n for n, p in task.model.named_parameters() if p.grad is not None}
    assert "lm_head.weight" in trained and any("lora_" in n for n in trained)
    assert not any(".visual." in n for n in trained)


def test_frozen_parts_are_placed_on_the_training_device(sft_checkpoint, toy_manifest, tmp_path):
    """Stage 1 puts the frozen renderer and the reward embedder where the reasoner trains,
    once: a step on the CPU places them there; on another device (meta here, where
    nothing is allocated) every part moves."""
    CLIPEmbedder.tiny().save_pretrained(tmp_path / "clip")
    task = build_joint_grpo_vlm_task(make_config(sft_checkpoint, toy_manifest, tmp_path / "clip"))
    renderer, embedder = task.renderer, task.embedder
    assert isinstance(embedder, CLIPEmbedder) and task.frozen.device is None
    task.evaluate(task.model, batch_of(task))
    assert task.frozen.device == task.reasoner.device == torch.device("cpu")
    meta = torch.device("meta")
    task.frozen.place(meta)
    for module in (renderer.transformer, renderer.vae, renderer.text_encoder, embedder.model):
        assert {p.device for p in module.parameters()} == {meta}
    assert task.reasoner.device == torch.device("cpu")  # the loop moves the trained model


def test_num_iterations_reuses_rollouts_and_the_clip_binds(
    sft_checkpoint, toy_manifest, embedder_dir, tmp_path
):
    """mu = 2: the second step trains on the first step's rollouts (same rewards) with the
    updated weights, so tokens leave the clip range (clip_range 1e-3, lr 1e-2); with a clip
    range no update reaches, nothing is clipped. The third step samples afresh."""

    def run(name: str, clip_range: float) -> list[dict]:
        config = make_config(
            sft_checkpoint,
            toy_manifest,
            embedder_dir,
            grpo=GRPOConfig(group_size=G, num_iterations=2, clip_range=clip_range),
            train=TrainConfig(
                out_dir=str(tmp_path / name),
                steps=3,
                batch_size=1,
                lr=1e-2,
                log_every=1,
                save_every=2,
                eval_every=0,
            ),
        )
        train(build_joint_grpo_vlm_task(config), config.train)
        return read_rows(tmp_path / name)

    rows = run("tight", 1e-3)
    assert rows[0]["clip_ratio/region_mean"] == 0.0  # the first update is on-policy
    assert rows[1]["clip_ratio/region_mean"] > 0.0
    for key in ("reward/r_t1", "reward/r_v1", "length/completion_tokens"):
        assert rows[1][key] == rows[0][key], key  # the same rollouts
    assert rows[1]["time/sampling"] == 0.0 and rows[2]["time/sampling"] > 0.0
    assert rows[2]["clip_ratio/region_mean"] == 0.0  # a fresh batch, on-policy again
    assert rows[1]["epoch"] == rows[0]["epoch"] < rows[2]["epoch"]
    wide = run("wide", 10.0)
    assert wide[1]["clip_ratio/region_mean"] == 0.0
    assert wide[1]["policy_loss"] != wide[0]["policy_loss"]  # the ratio moved


def test_num_iterations_needs_checkpoints_at_fresh_batches(
    sft_checkpoint, toy_manifest, embedder_dir, tmp_path
):
    config = make_config(
        sft_checkpoint,
        toy_manifest,
        embedder_dir,
        grpo=GRPOConfig(group_size=G, num_iterations=2),
        train=TrainConfig(out_dir=str(tmp_path / "run"), steps=2, batch_size=1, save_every=3),
    )
    with pytest.raises(ConfigError, match="save_every=3 must be a multiple of"):
        train(build_joint_grpo_vlm_task(config), config.train)
    with pytest.raises(ConfigError, match="num_iterations must be >= 1"):
        GRPOConfig(num_iterations=0)
