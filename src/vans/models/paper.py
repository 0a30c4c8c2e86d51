"""The paper's two models at their published sizes, randomly initialised, for paper-scale
benchmarks.

VANS starts from Qwen2.5-VL-3B-Instruct (the reasoner) and Wan2.1-T2V-1.3B (the renderer:
DiT, umT5-XXL text encoder, VAE; docs/paper_facts.md#the-two-models). `paper_configs/` holds
their config.json files as the Hugging Face repositories publish them
(`Qwen/Qwen2.5-VL-3B-Instruct`, and `Wan-AI/Wan2.1-T2V-1.3B-Diffusers`'s transformer/,
text_encoder/ and vae/), so `Reasoner` and `Renderer` are built at exactly those shapes with
nothing downloaded: on the `meta` device, where nothing is allocated, for parameter counts
and planned memory; on a GPU to measure latency and training memory
(`benchmarks/predict_latency.py --scale paper`, `benchmarks/bench_joint_grpo.py --scale
paper`). The weights are random: the figures are costs, never quality (real weights load
with `load_checkpoint`).

The tokenizers are the toy ones (`tiny.toy_tokenizers`; the real ones would be a download
too). The embedding tables keep the published vocabulary sizes (151,936 and 256,384 rows),
which hold every toy id; the reasoner's special-token ids become the toy tokenizer's
(`Reasoner.from_config`), and umT5's pad and end ids (0 and 1) are the same in both.

Planned memory (`plan_memory`) counts parameters and optimizer state only, never
activations, under these assumptions: frozen weights in bfloat16 (the VAE in float32, as
`load_checkpoint` keeps it); a trained weight costs `TRAINED_BYTES`, since the training loop
keeps it in float32 under bf16 autocast with a float32 gradient, AdamW's two float32 moments
and the float32 copy of the KL reference (`rl.reference.ReferenceWeights`; the paper's
beta is 0.004). What trains is what the paper trains: in Stage 1 the LoRA adapter on the
language model (r 8, `Reasoner.add_lora`), in Stage 2 every DiT weight.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import Qwen2_5_VLConfig

from vans.models.tiny import toy_tokenizers
from vans.models.vdm import Renderer
from vans.models.vlm import Reasoner

PAPER_CONFIGS = Path(__file__).with_name("paper_configs")
REASONER_CONFIG = PAPER_CONFIGS / "Qwen2.5-VL-3B-Instruct" / "config.json"
RENDERER_CONFIGS = PAPER_CONFIGS / "Wan2.1-T2V-1.3B-Diffusers"
"""A diffusers-layout directory of config.json files only (transformer/, text_encoder/, vae/)."""

PUBLISHED_PARAMETERS: dict[str, float] = {
    "reasoner": 3.75e9,
    "dit": 1.42e9,
    "text_encoder": 5.7e9,
}
"""Published sizes: Qwen2.5-VL-3B-Instruct, the Wan2.1-T2V-1.3B DiT, the umT5-XXL encoder."""

BF16_BYTES = 2
FP32_BYTES = 4
TRAINED_BYTES = 5 * FP32_BYTES
"""Bytes per trained parameter: float32 weight, gradient, AdamW's two moments, KL reference."""


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@contextmanager
def _building_on(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """Create tensors on `device` in `dtype` by default (what transformers' `from_pretrained`
    does for a `dtype`): each part is born in bfloat16 on the GPU, never as a float32 copy
    twice its size, and on `meta` nothing is allocated at all."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def paper_models(
    device: torch.device | str = "meta", *, dtype: torch.dtype = torch.bfloat16, seed: int = 0
) -> tuple[Reasoner, Renderer]:
    """Qwen2.5-VL-3B-Instruct and Wan2.1-T2V-1.3B with random weights on `device`, every
    part in `dtype` except the VAE (float32, as `load_checkpoint` keeps it), read with the
    toy tokenizers."""
    reasoner_tokenizer, text_tokenizer = toy_tokenizers()
    with _building_on(device, dtype):
        reasoner = Reasoner.from_config(
            Qwen2_5_VLConfig.from_dict(_read(REASONER_CONFIG)), reasoner_tokenizer, seed=seed
        )
        renderer = Renderer.from_configs(
            text_tokenizer,
            transformer=_read(RENDERER_CONFIGS / "transformer" / "config.json"),
            vae=_read(RENDERER_CONFIGS / "vae" / "config.json"),
            text_encoder=_read(RENDERER_CONFIGS / "text_encoder" / "config.json"),
            seed=seed,
        )
    renderer.vae.float()
    return reasoner, renderer


def _count(module: torch.nn.Module, *, lora: bool) -> int:
    # Tied weights (Qwen2.5-VL-3B's input embeddings and output head) are counted once.
    return sum(p.numel() for name, p in module.named_parameters() if ("lora_" in name) == lora)


@dataclass(frozen=True)
class ParameterCounts:
    """Parameters of each part of the reasoner and the renderer."""

    reasoner: int
    """Qwen2.5-VL without its LoRA adapter."""
    vision: int
    """Of which the vision tower."""
    lora: int
    """The LoRA adapter's (0 without one)."""
    dit: int
    text_encoder: int
    vae: int

    @classmethod
    def of(cls, reasoner: Reasoner, renderer: Renderer) -> ParameterCounts:
        return cls(
            reasoner=_count(reasoner.model, lora=False),
            vision=_count(reasoner.model.model.visual, lora=False),
            lora=_count(reasoner.model, lora=True),
            dit=_count(renderer.transformer, lora=False),
            text_encoder=_count(renderer.text_encoder, lora=False),
            vae=_count(renderer.vae, lora=False),
        )


@dataclass(frozen=True)
class MemoryPlan:
    """Planned bytes of parameters and optimizer state (module docstring); no activations."""

    inference: int
    """Both models, nothing trained."""
    stage1: int
    """Joint-GRPO Stage 1: the reasoner's LoRA trains, the renderer is frozen."""
    stage2: int
    """Joint-GRPO Stage 2: every DiT weight trains, the reasoner (with its LoRA) is frozen."""


def plan_memory(counts: ParameterCounts, *, frozen_bytes: int = BF16_BYTES) -> MemoryPlan:
    """The memory plan of `counts`, which must include the LoRA adapter Stage 1 trains;
    `frozen_bytes` per frozen parameter (FP32_BYTES: how the training stages load the parts
    today, `Reasoner.from_pretrained` and `Renderer.from_pretrained` in float32)."""
    if counts.lora == 0:
        raise ValueError("the counts have no LoRA adapter: add one first (Reasoner.add_lora)")
    reasoner = frozen_bytes * (counts.reasoner + counts.lora)
    vae = FP32_BYTES * counts.vae
    text_encoder = frozen_bytes * counts.text_encoder
    return MemoryPlan(
        inference=reasoner + frozen_bytes * counts.dit + text_encoder + vae,
        stage1=frozen_bytes * (counts.reasoner + counts.dit)
        + TRAINED_BYTES * counts.lora
        + text_encoder
        + vae,
        stage2=reasoner + TRAINED_BYTES * counts.dit + text_encoder + vae,
    )
