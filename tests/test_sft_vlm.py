"""Tests for SFT of the reasoner (vans.training.sft_vlm) on the tiny checkpoint and toy data."""

from __future__ import annotations

import dataclasses
import filecmp
from pathlib import Path

import pytest
import torch

from vans.data.manifest import load_manifest, write_manifest
from vans.data.toyworld import ToyWorldConfig, write_toyworld
from vans.errors import ConfigError, VansError
from vans.models.checkpoint import load_checkpoint, load_settings
from vans.models.prompting import IM_END, SYSTEM_PROMPT, build_prompt, format_target
from vans.models.vlm import SamplingConfig
from vans.training.config import TrainConfig, load_config
from vans.training.sft_vdm import SFTVDMConfig
from vans.training.sft_vlm import (
    IGNORE_INDEX,
    SFTVLMConfig,
    build_sft_vlm_task,
    completion_labels,
    sequence_nll,
)
from vans.training.stage_io import LazyItems

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def toy_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 17 input frames at 8 fps: 3 frames at 1 fps for the reasoner.
    config = ToyWorldConfig(num=4, seed=0, size=(32, 32), input_frames=17, target_frames=9)
    return write_toyworld(config, tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def task(tiny_checkpoint, toy_manifest):
    return build_sft_vlm_task(
        SFTVLMConfig(
            checkpoint=str(tiny_checkpoint),
            train_manifest=str(toy_manifest),
            eval_manifest=str(toy_manifest),
            cache_videos=True,
        )
    )


def make_item(task, num_frames: int, question: str, target: str, seed: int = 0) -> dict:
    """An item like the task's own, with a video of `num_frames` random frames."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (num_frames, 32, 32, 3), dtype=torch.uint8, generator=g)
    ids = task.reasoner.tokenizer(target, add_special_tokens=False)["input_ids"]
    return {
        "id": f"made-{seed}",
        "frames": frames,
        "fps": 1.0,
        "question": question,
        "target_ids": [*ids, task.reasoner.im_end_id],
    }


@pytest.fixture(scope="module")
def uneven_items(task):
    """Two samples whose prompts (video tokens, question) and answers differ in length."""
    return [
        make_item(task, 5, "What happens next?", format_target("It rolls.", "The ball falls.")),
        make_item(
            task,
            2,
            "What happens after the red square reaches the wall?",
            format_target("", "The red square bounces back and moves to the left."),
            seed=1,
        ),
    ]


def randomise_lora(model: torch.nn.Module, seed: int = 0) -> None:
    """LoRA B starts at zero (the adapter is then a no-op); give it values so tests see it."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


# --------------------------------------------------------------------------- the math


def test_completion_labels_hand_built():
    ids = torch.tensor([[0, 0, 5, 6, 7, 8, 0], [0, 5, 6, 7, 8, 9, 10]])
    # Prompts end at column 3; completions of 2 and 3 tokens start at column 4.
    labels = completion_labels(ids, [2, 3])
    x = IGNORE_INDEX
    assert labels.tolist() == [[x, x, x, x, 7, 8, x], [x, x, x, x, 8, 9, 10]]


def test_sequence_nll_matches_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 1, 2, 3, 4]])
    got = sequence_nll(logits, labels)
    for row in range(2):
        keep = labels[row, 1:] != -100
        ref = torch.nn.functional.cross_entropy(logits[row, :-1][keep], labels[row, 1:][keep])
        torch.testing.assert_close(got[row], ref)
    with pytest.raises(ValueError, match="no labelled token"):
        sequence_nll(logits, torch.full((2, 5), -100))


def test_lazy_items_build_once_with_a_cache():
    built = []

    def build(i):
        built.append(i)
        return [i]

    cached, fresh = LazyItems(3, build, cache=True), LazyItems(3, build)
    assert cached[1] is cached[1] and built == [1]
    assert fresh[2] == fresh[2] == [2] and built == [1, 2, 2]
    assert len(cached) == 3 and list(fresh) == [[0], [1], [2]]
    with pytest.raises(IndexError):
        cached[3]


# --------------------------------------------------------------------------- the batch


def test_labels_are_exactly_the_answer_and_the_end_token(task, toy_manifest):
    samples = load_manifest(toy_manifest)
    items = [task.train_dataset()[i] for i in range(3)]
    batch = task.collate(items, [0, 1, 2])
    tok = task.reasoner.tokenizer
    for row, sample in enumerate(samples[:3]):
        ids, labels = batch["input_ids"][row], batch["labels"][row]
        mask = batch["attention_mask"][row].bool()
        target = labels != IGNORE_INDEX
        assert not (target & ~mask).any()  # no padding is labelled
        answer = format_target(sample.reasoning, sample.answer)
        assert tok.decode(ids[target]) == answer + IM_END
        # The labelled tokens are one contiguous run ending the real tokens, so everything
        # before them is the prompt and nothing of the prompt is labelled.
        first = int(target.nonzero()[0])
        prompt = tok.decode(ids[:first][mask[:first]])
        tokens = int((ids == task.reasoner.video_token_id).sum())
        assert prompt == build_prompt(sample.question, tokens, SYSTEM_PROMPT)
        assert mask[first:].sum() == target.sum()


def test_training_prompt_is_the_inference_prompt(task, toy_manifest):
    """The tokens before the answer equal what `Reasoner.predict` feeds `generate`."""
    item = task.train_dataset()[0]
    seen = []
    generate = task.reasoner.model.generate

    def spy(*args, **kwargs):
        seen.append(kwargs["input_ids"][0])
        return generate(*args, **kwargs)

    task.reasoner.model.generate = spy
    try:
        task.reasoner.predict(item["frames"], [item["question"]], SamplingConfig(max_new_tokens=1))
    finally:
        del task.reasoner.model.generate
    batch = task.collate([item], [0])
    first = int((batch["labels"][0] != IGNORE_INDEX).nonzero()[0])
    assert torch.equal(batch["input_ids"][0, :first], seen[0].cpu())


def test_target_truncation_and_bad_rows(tiny_checkpoint, toy_manifest, tmp_path):
    config = SFTVLMConfig(
        checkpoint=str(tiny_checkpoint), train_manifest=str(toy_manifest), max_target_tokens=5
    )
    short = build_sft_vlm_task(config)
    batch = short.collate([short.train_dataset()[0]], [0])
    assert int((batch["labels"] != IGNORE_INDEX).sum()) == 5
    samples = load_manifest(toy_manifest)
    bad = [samples[0], dataclasses.replace(samples[1], answer="[Ans]leaks a tag")]
    manifest = write_manifest(tmp_path / "bad.jsonl", bad)
    with pytest.raises(VansError, match=f"{samples[1].id}.*tag"):
        build_sft_vlm_task(dataclasses.replace(config, train_manifest=str(manifest)))


def test_config_errors(tiny_checkpoint, toy_manifest):
    with pytest.raises(ConfigError, match="lora_dropout"):
        SFTVLMConfig(checkpoint="x", train_manifest="y", lora_dropout=1.5)
    with pytest.raises(VansError, match="no such checkpoint"):
        build_sft_vlm_task(SFTVLMConfig(checkpoint="/nonexistent", train_manifest="y"))


# --------------------------------------------------------------------------- the loss


def test_padding_does_not_change_a_samples_loss(task, uneven_items):
    randomise_lora(task.model)
    task.model.eval()  # no LoRA dropout
    with torch.no_grad():
        together = task.sample_losses(task.model, task.collate(uneven_items, [0, 1]))
        alone = [task.sample_losses(task.model, task.collate([it], [0]))[0] for it in uneven_items]
        loss = task.loss(task.model, task.collate(uneven_items, [0, 1]))["loss"]
    torch.testing.assert_close(together, torch.stack(alone), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, together.mean())


def test_the_loss_forward_sees_the_video(task, uneven_items):
    calls = []
    handle = task.model.model.visual.register_forward_hook(
        lambda module, args, out: calls.append(args[0].shape[0])
    )
    try:
        batch = task.collate(uneven_items, [0, 1])
        loss = task.loss(task.model, batch)["loss"]
    finally:
        handle.remove()
    # One run of the vision tower over both videos, inside the loss forward.
    assert calls == [batch["pixel_values_videos"].shape[0]]
    grid = batch["video_grid_thw"]
    assert calls[0] == int((grid[:, 0] * grid[:, 1] * grid[:, 2]).sum())
    # Every trainable parameter gets a gradient (no unused parameters).
    task.model.zero_grad()
    loss.backward()
    trainable = [p for p in task.model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    task.model.zero_grad()
    # Another video, same text: another loss.
    other = [dict(it, frames=255 - it["frames"]) for it in uneven_items]
    randomise_lora(task.model)
    task.model.eval()
    with torch.no_grad():
        a = task.sample_losses(task.model, task.collate(uneven_items, [0, 1]))
        b = task.sample_losses(task.model, task.collate(other, [0, 1]))
    assert (a - b).abs().min() > 1e-4


def test_bf16_autocast_loss_is_float32_and_close(task, uneven_items):
    task.model.eval()
    batch = task.collate(uneven_items, [0, 1])
    with torch.no_grad():
        full = task.loss(task.model, batch)["loss"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = task.loss(task.model, batch)["loss"]
    assert half.dtype == torch.float32 and abs(float(half) - float(full)) < 0.05 * float(full)


def test_only_the_language_models_lora_trains(task):
    names = [n for n, p in task.model.named_parameters() if p.requires_grad]
    layers = task.model.config.text_config.num_hidden_layers
    assert len(names) == layers * 7 * 2  # q k v o gate up down, A and B
    assert all("language_model" in n and ".lora_" in n for n in names)
    config = task.reasoner.peft_model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout) == (8, 32, 0.05)


def test_train_lm_head_trains_and_saves_the_head(tiny_checkpoint, toy_manifest, tmp_path):
    config = SFTVLMConfig(
        checkpoint=str(tiny_checkpoint), train_manifest=str(toy_manifest), train_lm_head=True
    )
    task = build_sft_vlm_task(config)
    full = {n for n, p in task.model.named_parameters() if p.requires_grad and ".lora_" not in n}
    assert full == {"lm_head.weight", "model.language_model.norm.weight"}
    with torch.no_grad():
        task.model.lm_head.weight.add_(0.5)
    task.save_pretrained(task.model, tmp_path / "out")
    reasoner, _, _ = load_checkpoint(tmp_path / "out")
    assert torch.equal(reasoner.model.lm_head.weight, task.model.lm_head.weight)


def test_a_few_adam_steps_lower_the_loss(tiny_checkpoint, toy_manifest):
    task = build_sft_vlm_task(
        SFTVLMConfig(checkpoint=str(tiny_checkpoint), train_manifest=str(toy_manifest))
    )
    batch = task.collate([task.train_dataset()[i] for i in range(2)], [0, 1])
    params = [p for p in task.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    task.model.eval()  # no dropout: a deterministic descent
    losses = []
    for _ in range(8):
        loss = task.loss(task.model, batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3, losses


# --------------------------------------------------------------------------- saving


def test_save_pretrained_writes_a_checkpoint_that_predicts(task, tiny_checkpoint, tmp_path):
    randomise_lora(task.model, seed=3)
    out = tmp_path / "sft"
    task.save_pretrained(task.model, out)
    reasoner, _, settings = load_checkpoint(out)
    trained = {n: p for n, p in task.model.named_parameters() if p.requires_grad}
    loaded = dict(reasoner.model.named_parameters())
    assert trained and all(torch.equal(loaded[n], p.detach()) for n, p in trained.items())
    assert settings == load_settings(tiny_checkpoint)
    # The renderer is the starting checkpoint's, file for file.
    same = filecmp.dircmp(tiny_checkpoint / "vdm", out / "vdm")
    assert not (same.left_only or same.right_only or same.diff_files)
    item = task.train_dataset()[0]
    answer = reasoner.predict(item["frames"], [item["question"]], SamplingConfig(max_new_tokens=8))
    assert len(answer) == 1 and isinstance(answer[0].caption, str)
    with pytest.raises(ValueError, match="task's"):
        task.save_pretrained(torch.nn.Linear(1, 1), tmp_path / "other")

    # Training again from the result continues its adapter.
    config = SFTVLMConfig(checkpoint=str(out), train_manifest=str(task.config.train_manifest))
    again = build_sft_vlm_task(config)
    for name, p in again.model.named_parameters():
        if name in trained:
            assert p.requires_grad and torch.equal(p, trained[name].detach())
    with pytest.raises(ConfigError, match="r 8 \\(config: 4\\)"):
        build_sft_vlm_task(dataclasses.replace(config, lora_r=4))


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize("folder", ["toy", "paper"])
def test_sft_configs_load(folder):
    vlm = load_config(SFTVLMConfig, CONFIGS / folder / "sft_vlm.yaml")
    vdm = load_config(SFTVDMConfig, CONFIGS / folder / "sft_vdm.yaml")
    assert (vlm.lora_r, vlm.lora_alpha, vlm.lora_dropout) == (8, 32, 0.05)
    assert isinstance(vlm.train, TrainConfig) and isinstance(vdm.train, TrainConfig)
    if folder == "paper":
        assert (vlm.train.steps, vlm.train.lr, vlm.fps) == (10_000, 5e-5, 1.0)
        assert (vdm.train.steps, vdm.train.lr) == (20_000, 5e-5)
        assert (vdm.num_frames, vdm.height, vdm.width, vdm.num_reference_frames) == (
            33,
            352,
            640,
            6,
        )
    else:
        # The toy recipe chains the stages: the VDM starts from the VLM run's final model.
        assert vdm.checkpoint == f"{vlm.train.out_dir}/final"
        assert vdm.cache_latents
