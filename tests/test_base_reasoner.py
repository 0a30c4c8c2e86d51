"""Tests for the toy reasoner base: perception conversations and `vans train base-reasoner`."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vans.data.toyworld import ToyWorldConfig, iter_samples, write_toyworld
from vans.data.toyworld.perception import option_sentence, perception_mcqs, place
from vans.data.toyworld.render import COLORS
from vans.errors import VansError
from vans.evaluation.bases import MCQ_KINDS, mcq_accuracy, mcq_scores
from vans.models.checkpoint import init_tiny, load_checkpoint
from vans.models.prompting import ASSISTANT_PROMPT, SYSTEM_PROMPT
from vans.training.base_reasoner import (
    BaseReasonerConfig,
    build_base_reasoner_task,
    perception_conversations,
)
from vans.training.config import TrainConfig
from vans.training.loop import FINAL_DIR, train


@pytest.fixture(scope="module")
def toy_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = ToyWorldConfig(num=7, seed=4, size=(32, 32), input_frames=17, target_frames=9)
    return write_toyworld(config, tmp_path_factory.mktemp("toy"))


def test_option_sentences_answer_the_question() -> None:
    which = {
        "kind": "appearance",
        "question": "Which circle?",
        "options": ["red circle", "blue circle"],
        "answer": 1,
    }
    how = {"kind": "motion", "question": "How?", "options": ["is still", "moves left"], "answer": 0}
    assert [option_sentence(which, i) for i in range(2)] == ["The red circle.", "The blue circle."]
    assert option_sentence(how, 1) == "It moves left."


def _fact(color: str, shape: str, motion: str = "is still") -> dict:
    return {"name": f"{color} {shape}", "color": color, "shape": shape, "motion": motion,
            "position": [0.5, 0.5]}  # fmt: skip


def test_the_shape_question_asks_for_the_shape_of_the_one_object_of_a_colour() -> None:
    # Only the blue square is the one object of its colour: the question names the colour and
    # its options differ in shape alone, so colour cannot answer it.
    objects = [
        _fact("red", "circle", "moves right"),
        _fact("red", "triangle"),
        _fact("blue", "square"),
    ]
    for seed in range(5):
        [shape] = [
            m for m in perception_mcqs(np.random.default_rng(seed), objects) if m["kind"] == "shape"
        ]
        assert shape["question"] == "Which blue object appears in the video?"
        assert sorted(shape["options"]) == ["blue circle", "blue square", "blue triangle"]
        assert shape["options"][shape["answer"]] == "blue square"
    # No object alone in its colour (or only layers): no shape question.
    same = [_fact("red", "circle", "moves right"), _fact("red", "square")]
    assert all(m["kind"] != "shape" for m in perception_mcqs(np.random.default_rng(0), same))
    layers = [_fact("green", "layer")]
    assert all(m["kind"] != "shape" for m in perception_mcqs(np.random.default_rng(0), layers))


def test_mcq_scores_are_the_summed_log_likelihoods_of_the_options(tiny_checkpoint: Path) -> None:
    reasoner, _, _ = load_checkpoint(tiny_checkpoint)
    frames = torch.zeros((3, 32, 32, 3), dtype=torch.uint8)
    options = ["The red circle.", "It is still."]
    scores = mcq_scores(reasoner, frames, "Which?", options)
    for score, option in zip(scores, options, strict=True):
        # By hand: the chain rule over the option's tokens and the end token.
        ids = reasoner.tokenizer(option, add_special_tokens=False)["input_ids"]
        ids.append(reasoner.im_end_id)
        total = 0.0
        for k in range(len(ids)):
            inputs = reasoner.prepare([frames], ["Which?"], completions=[ids[:k]] if k else None)
            with torch.no_grad():
                logits = reasoner.model(**inputs).logits[0, -1].float()
            logits[reasoner.placeholder_ids] = -torch.inf  # never sampled, never scored
            total += float(torch.log_softmax(logits, -1)[ids[k]])
        assert float(score) == pytest.approx(total, abs=1e-4)


def test_mcq_accuracy_counts_per_kind_and_overall() -> None:
    figures = mcq_accuracy({"appearance": [True, False], "mover": [True], "motion": []})
    assert figures["mcq_accuracy"] == pytest.approx(2 / 3)
    assert figures["mcq_accuracy/appearance"] == 0.5 and figures["mcq_accuracy/mover"] == 1.0
    assert math.isnan(figures["mcq_accuracy/motion"])


def test_place_words_cover_the_grid() -> None:
    assert place([0.1, 0.9]) == "at the bottom left"
    assert place([0.5, 0.5]) == "in the middle"
    assert place([0.9, 0.5]) == "at the right"
    assert place([0.5, 0.1]) == "at the top"


def test_conversations_describe_the_input_and_never_give_the_next_event() -> None:
    for sample in iter_samples(ToyWorldConfig(num=40, seed=2, multi_future=1.0)):
        extra = sample.extra
        present = {o["name"] for o in extra["objects"]}

        targets = [c.target for c in perception_conversations(extra, seed=0)]
        assert sample.answer not in targets
        for target in targets:
            # Every colour-shape name said is an object of the input clip.
            words = target.lower().replace(".", " ").replace(",", " ").split()
            for a, b in itertools.pairwise(words):
                if a in COLORS and b in ("circle", "square", "triangle", "layer"):
                    assert f"{a} {b}" in present, (sample.id, target)
        for conversation in perception_conversations(extra, seed=0, free_form=False):
            info = conversation.info
            assert conversation.target == info["options"][info["choice"]]


def test_perception_facts_match_the_pixels() -> None:
    """Each object's recorded end position is where its colour is in the clip's last frame."""
    checked = 0
    for sample in iter_samples(ToyWorldConfig(num=30, seed=6, multi_future=0.0)):
        for facts, frame in (
            (sample.extra["objects"], sample.input_frames[-1]),
            (sample.extra["target_objects"], sample.target_frames[-1]),
        ):
            names = [o["name"] for o in facts]
            for o in facts:
                if names.count(o["name"]) > 1 or o["shape"] == "layer":
                    continue  # several blocks of one colour; layers are drawn as one band
                ys, xs = np.nonzero((frame == COLORS[o["color"]]).all(axis=-1))
                h, w = frame.shape[:2]
                x, y = o["position"]
                near = np.hypot(xs / w - x, ys / h - y) < 0.15
                assert near.sum() >= 4, (sample.id, o)
                checked += 1
    assert checked > 40


def test_a_sample_without_perception_facts_is_named(tmp_path: Path, toy_manifest: Path) -> None:
    row = json.loads(toy_manifest.read_text().splitlines()[0])
    del row["extra"]["description"]
    for video in ("input", "target"):  # paths are relative to the manifest
        row[video]["path"] = str((toy_manifest.parent / row[video]["path"]).resolve())
    bad = tmp_path / "manifest.jsonl"
    bad.write_text(json.dumps(row) + "\n")
    config = BaseReasonerConfig(
        checkpoint=str(init_tiny(tmp_path / "init")), train_manifest=str(bad)
    )
    with pytest.raises(VansError, match=r"manifest.jsonl: sample .*perception facts"):
        build_base_reasoner_task(config)


def test_base_reasoner_trains_every_parameter_and_saves_a_plain_vans_reasoner(
    tmp_path: Path, tiny_checkpoint: Path, toy_manifest: Path
) -> None:
    config = BaseReasonerConfig(
        checkpoint=str(tiny_checkpoint),
        train_manifest=str(toy_manifest),
        eval_manifest=str(toy_manifest),
        train=TrainConfig(
            out_dir=str(tmp_path / "run"),
            steps=2,
            batch_size=4,
            lr=1e-3,
            eval_every=2,
            eval_samples=6,
            save_every=10,
        ),
    )
    task = build_base_reasoner_task(config)
    assert task.reasoner.system_prompt == ASSISTANT_PROMPT
    trainable = {n for n, p in task.model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in task.model.named_parameters()}
    assert any(n.startswith("model.visual.") for n in trainable)
    # Held out: multiple-choice items only, each with its kind and right option.
    assert all(item["kind"] in MCQ_KINDS for item in task.eval_dataset())
    before = {n: p.detach().clone() for n, p in task.model.named_parameters()}
    train(task, config.train)
    moved = {n for n, p in task.model.named_parameters() if not (p == before[n]).all()}
    assert any(n.startswith("model.visual.") for n in moved)
    assert any(".language_model." in n for n in moved)
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert 0.0 <= rows[-1]["eval_mcq_accuracy"] <= 1.0
    reasoner, _, _ = load_checkpoint(Path(config.train.out_dir) / FINAL_DIR)
    assert reasoner.peft_model is None
    assert reasoner.system_prompt == SYSTEM_PROMPT


def test_toy_preset_sees_more_of_each_frame(tmp_path: Path) -> None:
    reasoner, _, settings = load_checkpoint(init_tiny(tmp_path / "toy", preset="toy"))
    assert settings.vlm_fps == 2.0 and reasoner.fps == 2.0
    _, grid = reasoner.video_inputs(torch.zeros((9, 64, 64, 3), dtype=torch.uint8))
    # 9 frames -> 5 temporal patches; 64x64 in 8-pixel patches -> 8x8.
    assert grid.tolist() == [[5, 8, 8]]
