"""The paper's models built from the configs in the repository (`vans.models.paper`): the
real classes at the published sizes, on the meta device, so nothing is allocated."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from vans.models.paper import (
    PUBLISHED_PARAMETERS,
    REASONER_CONFIG,
    ParameterCounts,
    paper_models,
    plan_memory,
)
from vans.models.prompting import VIDEO_PAD


@pytest.fixture(scope="module")
def models():
    reasoner, renderer = paper_models(device="meta")
    reasoner.add_lora()  # the paper's r 8, as Stage 1 trains it
    return reasoner, renderer


@pytest.fixture(scope="module")
def counts(models) -> ParameterCounts:
    return ParameterCounts.of(*models)


@pytest.mark.parametrize("part", sorted(PUBLISHED_PARAMETERS))
def test_parameter_counts_are_the_published_ones_within_1_percent(counts, part):
    assert getattr(counts, part) == pytest.approx(PUBLISHED_PARAMETERS[part], rel=0.01)


def test_the_dit_has_every_tensor_of_the_published_checkpoint(models):
    # A full Wan2.1-T2V-1.3B DiT checkpoint holds 825 tensors (docs/paper_facts.md#the-two-models).
    assert len(models[1].transformer.state_dict()) == 825


def test_nothing_is_allocated_and_the_vae_alone_is_float32(models):
    reasoner, renderer = models
    bf16 = [reasoner.model, renderer.transformer, renderer.text_encoder]
    assert {p.device.type for m in [*bf16, renderer.vae] for p in m.parameters()} == {"meta"}
    weights = [p for m in bf16 for name, p in m.named_parameters() if "lora_" not in name]
    assert {p.dtype for p in weights} == {torch.bfloat16}
    assert {p.dtype for p in renderer.vae.parameters()} == {torch.float32}


def test_lora_adapts_exactly_the_language_models_seven_projections(counts):
    text = json.loads(REASONER_CONFIG.read_text())
    hidden, ffn, layers = text["hidden_size"], text["intermediate_size"], text["num_hidden_layers"]
    kv = hidden // text["num_attention_heads"] * text["num_key_value_heads"]
    # (in, out) of q, k, v, o and gate, up, down; a rank-8 adapter adds 8 * (in + out).
    shapes = [(hidden, hidden), (hidden, kv), (hidden, kv), (hidden, hidden)]
    shapes += [(hidden, ffn), (hidden, ffn), (ffn, hidden)]
    assert counts.lora == layers * sum(8 * (a + b) for a, b in shapes)


def test_the_published_vocabularies_hold_the_toy_tokenizers_ids(models):
    reasoner, renderer = models
    assert reasoner.model.config.text_config.vocab_size == 151936
    assert renderer.text_encoder.config.vocab_size == 256384
    assert reasoner.model.config.video_token_id == reasoner.tokenizer.convert_tokens_to_ids(
        VIDEO_PAD
    )


def test_the_plan_needs_the_adapter_stage_1_trains(counts):
    plan = plan_memory(counts)
    assert plan.inference < plan.stage1 < plan.stage2
    with pytest.raises(ValueError, match="LoRA"):
        plan_memory(dataclasses.replace(counts, lora=0))
