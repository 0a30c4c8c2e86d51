"""Tests for Joint-GRPO Stage 2 (vans.training.joint_grpo_vdm) on a tiny checkpoint, toy
data and an untrained toy embedder."""

from __future__ import annotations

import dataclasses
import filecmp
import json
import math
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import yaml

from vans.data.manifest import load_manifest
from vans.data.toyworld import ToyWorldConfig, write_toyworld
from vans.errors import ConfigError
from vans.evaluation.toy_embedder import ToyEmbedder, ToyEmbedderConfig, build_vocab
from vans.models.checkpoint import load_checkpoint, load_settings
from vans.models.flow_matching import sde_kl
from vans.rl.advantages import group_advantages
from vans.rl.anchor import Anchor
from vans.rl.config import FlowGRPOConfig, GRPOConfig
from vans.rl.flow_grpo import step_log_prob
from vans.training.config import TrainConfig, load_config
from vans.training.joint_grpo_vdm import (
    JointGRPOVDMConfig,
    build_joint_grpo_vdm_task,
    frame_diff,
)
from vans.training.loop import train

REPO = Path(__file__).resolve().parents[1]
# 9 frames at 32x32 (3 latent frames of 4x4) keep the VAE and the DiT cheap.
SIZES = dict(num_frames=9, height=32, width=32, reference_video_frames=9)
REWARD_KEYS = ("reward/r_v2", "reward/r_c2", "reward/total", "video/frame_diff")


@pytest.fixture(scope="module")
def setup(tiny_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """A small-clip copy of the tiny checkpoint, a toy data set and an untrained toy
    embedder saved to a directory."""
    root = tmp_path_factory.mktemp("stage2")
    checkpoint = Path(shutil.copytree(tiny_checkpoint, root / "ckpt"))
    settings = yaml.safe_load((checkpoint / "vans.yaml").read_text())
    (checkpoint / "vans.yaml").write_text(yaml.safe_dump({**settings, **SIZES}))
    toy = ToyWorldConfig(num=4, seed=0, size=(32, 32), input_frames=17, target_frames=9)
    manifest = write_toyworld(toy, root / "toy")
    captions = [s.answer for s in load_manifest(manifest)]
    small = ToyEmbedderConfig(embed_dim=16, channels=(8, 8, 16, 16), text_width=16, text_heads=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ToyEmbedder.untrained(build_vocab(captions), small).save_pretrained(root / "embedder")
    return {"checkpoint": checkpoint, "manifest": manifest, "embedder": root / "embedder"}


def make_config(setup, **kwargs) -> JointGRPOVDMConfig:
    defaults = dict(
        checkpoint=str(setup["checkpoint"]),
        train_manifest=str(setup["manifest"]),
        embedder=str(setup["embedder"]),
        grpo=GRPOConfig(group_size=2),
        flow=FlowGRPOConfig(num_steps=2),
        # The tiny random reasoner writes gibberish: accept its first caption.
        anchor_min_rouge=0.0,
        anchor_tries=2,
    )
    return JointGRPOVDMConfig(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def task(setup):
    return build_joint_grpo_vdm_task(make_config(setup))


def batch_of(task, seeds=(3, 4)):
    items = [task.train_dataset()[i] for i in range(len(seeds))]
    return task.collate(items, list(seeds))


@pytest.fixture(scope="module")
def first_loss(task):
    """One loss call of the untouched task (the first on-policy update) and its backward."""
    task.model.train()
    task.model.zero_grad()
    state = torch.get_rng_state()
    out = task.loss(task.model, batch_of(task))
    rng_untouched = torch.equal(torch.get_rng_state(), state)
    out["loss"].backward()
    grads = {
        part: [p.grad for p in getattr(task.renderer, part).parameters()]
        for part in ("transformer", "vae", "text_encoder")
    }
    grads["reasoner"] = [p.grad for p in task.reasoner.model.parameters()]
    task.model.zero_grad()
    task.model.eval()
    return out, grads, rng_untouched


def test_loss_is_finite_and_trains_the_dit_only(first_loss):
    out, grads, _ = first_loss
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad
    assert all(g is not None for g in grads["transformer"])
    assert any(float(g.abs().sum()) > 0 for g in grads["transformer"])
    for part in ("vae", "text_encoder", "reasoner"):
        assert all(g is None for g in grads[part]), part


def test_first_update_is_on_policy(first_loss):
    """Sampling and re-scoring use the same model call: the ratio is exactly 1, nothing is
    clipped, and the KL to the reference (the same weights) is 0."""
    out, _, _ = first_loss
    assert abs(float(out["ratio/max"]) - 1) < 1e-6 and abs(float(out["ratio/min"]) - 1) < 1e-6
    assert float(out["clip_ratio/region_mean"]) == 0.0
    assert float(out["kl"]) == 0.0


def test_logged_statistics(first_loss):
    out, _, rng_untouched = first_loss
    assert rng_untouched  # every draw comes from the prompts' seeds
    for key in (*REWARD_KEYS, "reward/r_v2_std", "advantage/abs_mean", "anchor/rouge"):
        assert math.isfinite(float(out[key])), key
    # Untrained embeddings are unit vectors: cosines in [-1, 1], the total their sum.
    assert -1 <= float(out["reward/r_v2"]) <= 1 and -1 <= float(out["reward/r_c2"]) <= 1
    torch.testing.assert_close(out["reward/total"], out["reward/r_v2"] + out["reward/r_c2"])
    assert float(out["anchor/skipped"]) == 0.0 and float(out["anchor/tries_used"]) == 1.0
    assert 0 < float(out["video/frame_diff"]) < 1


def test_rollouts_depend_only_on_the_prompt_seed(task):
    """The same prompt and seed give the same anchor, videos and rewards whatever else is in
    the batch (how prompts are split over processes does not matter)."""
    prompt = task.train_dataset()[0]
    anchor = task.write_anchor(prompt, 5)
    assert anchor == task.write_anchor(prompt, 5)
    a = task.rollout(task.model, prompt, anchor, 5)
    b = task.rollout(task.model, prompt, anchor, 5)
    assert torch.equal(a.videos, b.videos)
    assert a.videos.shape == (2, 9, 32, 32, 3) and a.videos.dtype == torch.uint8
    assert all(torch.equal(a.rewards[k], b.rewards[k]) for k in a.rewards)
    c = task.rollout(task.model, prompt, anchor, 6)
    assert not torch.equal(a.videos, c.videos)


def test_reward_weights_change_the_advantages(setup, task):
    """r_c2: 0 (the paper's ablation) leaves the rollouts and rewards as they are and the
    advantages the group z-score of r_v2 alone; by default they add r_c2's."""
    off = build_joint_grpo_vdm_task(
        make_config(setup, grpo=GRPOConfig(group_size=2, reward_weights={"r_c2": 0}))
    )
    prompt = task.train_dataset()[1]
    anchor = task.write_anchor(prompt, 7)
    both = task.rollout(task.model, prompt, anchor, 7)
    alone = off.rollout(off.model, prompt, anchor, 7)
    assert all(torch.equal(both.rewards[k], alone.rewards[k]) for k in both.rewards)

    def z(name):
        return group_advantages(both.rewards[name].unsqueeze(0)).squeeze(0)

    torch.testing.assert_close(alone.advantages, z("r_v2"))
    torch.testing.assert_close(both.advantages, z("r_v2") + z("r_c2"))
    assert not torch.allclose(both.advantages, alone.advantages)


def test_batch_split_invariance(task, first_loss):
    """A batch's scalars are the means of its prompts' own (with the same seeds), so the
    mean over processes of equal shards is the global batch's."""
    out, _, _ = first_loss
    with torch.no_grad():
        alone = [
            task.loss(task.model, task.collate([task.train_dataset()[i]], [seed]))
            for i, seed in enumerate((3, 4))
        ]
    for key in ("loss", "reward/r_v2", "reward/r_c2", "video/frame_diff", "anchor/rouge"):
        mean = (alone[0][key] + alone[1][key]) / 2
        torch.testing.assert_close(out[key].detach(), mean, atol=1e-7, rtol=1e-5)


def test_the_first_passing_caption_is_the_anchor(task, monkeypatch):
    prompt = task.train_dataset()[0]
    truth = prompt.answer
    texts = [
        "[Think]t[/Think][Ans]A green square falls.[/Ans]",
        "[Think]t[/Think][Ans]The yellow circle moves.[/Ans]",
        f"[Think]t[/Think][Ans]{truth}[/Ans]",
        f"[Think]t[/Think][Ans]{truth}[/Ans]",
    ]
    calls = []

    def generate(frames, questions, *, num_samples, sampling, seed, fps):
        calls.append((questions, num_samples, seed))
        return [texts[:num_samples]]

    monkeypatch.setattr(task.reasoner, "generate", generate)
    config = dataclasses.replace(task.config, anchor_min_rouge=0.6, anchor_tries=4)
    monkeypatch.setattr(task, "config", config)
    anchor = task.write_anchor(prompt, 11)
    assert anchor == Anchor(caption=truth, rouge=1.0, tries=3)
    assert calls[0][:2] == ([prompt.question], 4)  # one batched call for every try
    task.write_anchor(prompt, 12)
    assert calls[1][2] != calls[0][2]  # the generation seed follows the prompt's seed
    monkeypatch.setattr(task, "config", dataclasses.replace(config, anchor_tries=2))
    skipped = task.write_anchor(prompt, 11)
    assert skipped.caption is None and skipped.tries == 2 and skipped.rouge < 0.6


def test_anchor_filter_skips_and_counts(setup):
    """No caption of the random reasoner reaches ROUGE-L 1: every prompt is skipped after all
    its tries, the loss is 0 and still backpropagates, and the reward scalars are NaN
    (nothing scored). A threshold above 1, which nothing can reach, is refused."""
    task = build_joint_grpo_vdm_task(make_config(setup, anchor_min_rouge=1.0, anchor_tries=3))
    out = task.loss(task.model, batch_of(task))
    assert float(out["anchor/skipped"]) == 1.0 and float(out["anchor/tries_used"]) == 3.0
    assert float(out["loss"].detach()) == 0.0
    out["loss"].backward()  # no error: the loop can always call backward
    assert all(math.isnan(float(out[k])) for k in (*REWARD_KEYS, "ratio/max", "kl"))
    with pytest.raises(ConfigError, match="anchor_tries must be >= 1"):
        make_config(setup, anchor_tries=0)
    with pytest.raises(ConfigError, match=r"anchor_min_rouge is a ROUGE-L, in \[0, 1\]"):
        make_config(setup, anchor_min_rouge=2.0)
    with pytest.raises(ConfigError, match="unknown rewards \\['r_t1'\\]"):
        build_joint_grpo_vdm_task(
            make_config(setup, grpo=GRPOConfig(group_size=2, reward_weights={"r_t1": 0}))
        )


def test_a_run_that_skipped_every_prompt_fails_without_a_final_checkpoint(setup, tmp_path):
    """Every gradient was zero: the run says so and ships no `final/`, which would be its
    starting weights posing as a Stage-2 result; its checkpoints and metrics stay."""
    config = run_config(setup, tmp_path / "run", 1, eval_every=0, warmup_steps=0)
    config.anchor_min_rouge, config.anchor_tries = 1.0, 1
    with pytest.raises(ConfigError, match=r"every prompt was skipped.*anchor_min_rouge=1\.0"):
        train(build_joint_grpo_vdm_task(config), config.train)
    assert not (tmp_path / "run" / "final").exists()
    assert read_rows(tmp_path / "run")[0]["anchor/skipped"] == 1.0


def test_frame_diff_hand_computed():
    static = torch.full((1, 3, 2, 2, 3), 7, dtype=torch.uint8)
    assert float(frame_diff(static)) == 0.0
    moving = static.clone()
    moving[0, 1] = 58  # frame 1 differs by 51 = 0.2 * 255 from frames 0 and 2
    torch.testing.assert_close(frame_diff(moving), torch.tensor(0.2))


def run_config(setup, out: Path, steps: int, **train) -> JointGRPOVDMConfig:
    settings = dict(out_dir=str(out), steps=steps, batch_size=2, lr=1e-3, log_every=1)
    return make_config(setup, train=TrainConfig(**{**settings, **train}))


def read_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_short_run_writes_a_checkpoint_and_reward_metrics(setup, tmp_path):
    config = run_config(setup, tmp_path / "run", 2, eval_every=2, eval_samples=2)
    config.eval_manifest = str(setup["manifest"])
    task = build_joint_grpo_vdm_task(config)
    start = {k: v.clone() for k, v in task.model.state_dict().items()}
    result = train(task, config.train)
    rows = read_rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2]
    for key in REWARD_KEYS:
        assert all(math.isfinite(r[key]) for r in rows), key
        assert math.isfinite(rows[-1][f"eval_{key}"]), key
    assert rows[-1]["eval_loss"] == pytest.approx(-rows[-1]["eval_reward/total"])
    # Every update is on-policy (fresh rollouts); the KL reference stays the start model.
    assert all(r["ratio/min"] == pytest.approx(1, abs=1e-6) for r in rows)
    assert all(r["ratio/max"] == pytest.approx(1, abs=1e-6) for r in rows)
    assert rows[0]["kl"] == 0 and rows[1]["kl"] > 0

    _, renderer, settings = load_checkpoint(result.final_dir)
    assert settings == load_settings(setup["checkpoint"])
    trained = renderer.transformer.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in task.model.state_dict().items())
    assert any(not torch.equal(trained[k], start[k]) for k in start)  # the DiT moved
    vae = task.renderer.vae.state_dict()
    assert all(torch.equal(v, vae[k]) for k, v in renderer.vae.state_dict().items())
    same = filecmp.dircmp(setup["checkpoint"] / "vlm", result.final_dir / "vlm")
    assert not (same.left_only or same.right_only or same.diff_files)

    # Interrupted after step 1 and resumed: step 2 is the uninterrupted run's, its KL
    # measured against the start model (the snapshot precedes the resumed weights).
    out = tmp_path / "resumed"
    first = run_config(setup, out, 1, eval_every=0)
    train(build_joint_grpo_vdm_task(first), first.train)
    again = run_config(setup, out, 2, eval_every=0)
    train(build_joint_grpo_vdm_task(again), again.train, resume=True)
    resumed = read_rows(out)
    assert [r["step"] for r in resumed] == [1, 2]
    for key in ("loss", "kl", *REWARD_KEYS):
        assert resumed[1][key] == pytest.approx(rows[1][key], rel=1e-5, abs=1e-9), key


@pytest.mark.parametrize("name", ["toy", "paper"])
def test_shipped_configs_load(name):
    config = load_config(JointGRPOVDMConfig, REPO / "configs" / name / "joint_grpo_stage2.yaml")
    assert config.grpo.beta == 0.004
    assert config.grpo.clip_range == 1e-3
    if name == "paper":
        assert config.anchor_min_rouge == 0.6
        assert (config.grpo.group_size, config.train.steps, config.train.lr) == (8, 1000, 5e-5)
        assert config.flow.num_steps == 10
    else:
        assert config.checkpoint == "runs/toy/joint_grpo_stage1/final"
        assert config.embedder == "src/vans/assets/toyworld_base/embedder"  # the shipped judge
    assert config.train.out_dir == f"runs/{name}/joint_grpo_stage2"


def test_per_step_backward_gives_the_whole_graph_gradients(setup):
    """The loop's `backward` (each trained step of each prompt backpropagated as soon as it
    is scored) gives the gradients of the formulation it replaced: every step's loss kept
    in one graph, averaged over the steps of a group, summed over groups, divided by the
    prompts, one backward (computed here from the same rollouts)."""
    task = build_joint_grpo_vdm_task(make_config(setup, flow=FlowGRPOConfig(num_steps=3)))
    grpo, flow, r = task.config.grpo, task.config.flow, task.renderer
    batch = batch_of(task)
    task.model.train()
    out = task.backward(task.model, batch, scale=0.5)
    stepwise = [p.grad.clone() for p in task.model.parameters()]
    task.model.zero_grad(set_to_none=True)

    anchors, groups = task._groups(task.model, batch, update=True)
    assert len(groups) == 2 and all(len(g.train_steps) == 3 for g in groups)
    total = torch.zeros(())
    for g in groups:
        per_step = []
        for k, j in enumerate(g.train_steps):
            step = step_log_prob(r, g.trajectory, j, g.conditioning, flow)
            old = g.trajectory.steps[j].log_prob
            ratio = torch.exp(step.log_prob - old)
            clipped = ratio.clamp(1 - grpo.clip_range, 1 + grpo.eps_high)
            surrogate = -torch.min(ratio * g.advantages, clipped * g.advantages).mean()
            kl = sde_kl(step.mean, g.reference_means[k], step.std).mean()
            per_step.append(surrogate + grpo.beta * kl)
        total = total + torch.stack(per_step).mean()
    (0.5 * total / len(anchors)).backward()
    assert not out["loss"].requires_grad
    torch.testing.assert_close(out["loss"], (total / len(anchors)).detach(), atol=1e-7, rtol=0)
    for p, grad in zip(task.model.parameters(), stepwise, strict=True):
        torch.testing.assert_close(grad, p.grad, atol=1e-6, rtol=0)
    assert any(float(g.abs().sum()) > 0 for g in stepwise)


def test_num_iterations_reuses_rollouts_and_the_clip_binds(setup, tmp_path):
    """mu = 2 through the loop: step 2 re-scores step 1's rollouts (the same rewards) under
    the updated DiT, so the ratio leaves 1 and, at clip range 1e-6, the clip binds; step 3
    samples afresh and is on-policy again."""
    config = run_config(setup, tmp_path / "run", 3, eval_every=0, save_every=2)
    config.grpo = GRPOConfig(group_size=2, num_iterations=2, clip_range=1e-6)
    train(build_joint_grpo_vdm_task(config), config.train)
    rows = read_rows(tmp_path / "run")
    assert rows[0]["ratio/min"] == pytest.approx(1, abs=1e-6) == rows[0]["ratio/max"]
    assert rows[0]["clip_ratio/region_mean"] == 0.0
    assert rows[1]["reward/r_v2"] == rows[0]["reward/r_v2"]  # the same rollouts
    assert abs(rows[1]["ratio/min"] - 1) > 1e-6 or abs(rows[1]["ratio/max"] - 1) > 1e-6
    assert rows[1]["clip_ratio/region_mean"] > 0.0
    assert rows[2]["ratio/max"] == pytest.approx(1, abs=1e-6)  # fresh rollouts
    assert rows[1]["epoch"] == rows[0]["epoch"] < rows[2]["epoch"]
