"""What the paper-scale benchmarks share (`predict_latency.py --scale paper` and
`bench_joint_grpo.py --scale paper`): the paper's settings, an input of the paper's size,
and the report of the models' sizes and planned memory (`vans.models.paper`)."""

from __future__ import annotations

from pathlib import Path

import torch

from vans.data.toyworld import ToyWorldConfig, write_toyworld
from vans.models.checkpoint import VANSSettings, load_settings
from vans.models.paper import (
    PAPER_CONFIGS,
    PUBLISHED_PARAMETERS,
    TRAINED_BYTES,
    ParameterCounts,
    paper_models,
)

STAGE_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "paper"
"""The paper's vans.yaml and stage configs."""

ASSUMPTIONS = (
    "planned = parameters and optimizer state, no activations: frozen weights bf16 (VAE "
    f"float32); a trained weight {TRAINED_BYTES} bytes (float32 weight, gradient, two AdamW "
    "moments, KL reference copy); Stage 1 trains the LoRA on the language model, Stage 2 "
    "every DiT weight"
)


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def parameters(n: int) -> str:
    return f"{n / 1e9:.3f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def paper_settings() -> VANSSettings:
    """configs/paper/vans.yaml: 33 frames at 352x640, 50 steps, CFG 5, n = 6, VLM at 1 fps."""
    return load_settings(STAGE_CONFIGS)


def paper_manifest(root: Path) -> Path:
    """A one-sample toy-world manifest written under `root`, drawn at 352x640: an input of
    9.6 s (the paper's inputs average 9.43 s) and a 33-frame target. Random weights make
    the content irrelevant: only the sizes matter."""
    config = ToyWorldConfig(
        num=1, size=(352, 640), input_frames=77, target_frames=33, multi_future=0.0
    )
    return write_toyworld(config, root / "paper_sample")


def meta_counts() -> ParameterCounts:
    """Parameter counts of the paper's models built on the meta device (nothing allocated),
    the reasoner with the LoRA adapter Stage 1 trains (the paper's r 8)."""
    reasoner, renderer = paper_models("meta")
    reasoner.add_lora()
    return ParameterCounts.of(reasoner, renderer)


def print_sizes(counts: ParameterCounts) -> None:
    print(f"paper-scale models: random weights, the published configs in {PAPER_CONFIGS}")
    rows = [
        ("reasoner: Qwen2.5-VL-3B-Instruct", counts.reasoner, "reasoner"),
        ("  of which the vision tower", counts.vision, None),
        ("  LoRA adapter (r 8, language model)", counts.lora, None),
        ("DiT: Wan2.1-T2V-1.3B", counts.dit, "dit"),
        ("text encoder: umT5-XXL", counts.text_encoder, "text_encoder"),
        ("VAE: Wan2.1", counts.vae, None),
    ]
    for label, n, part in rows:
        line = f"  {label:<40} {parameters(n):>8}"
        if part is not None:
            published = PUBLISHED_PARAMETERS[part]
            line += f"  published {published / 1e9:.2f}B ({n / published - 1:+.2%})"
        print(line)


def cuda_total() -> str:
    return gib(torch.cuda.get_device_properties(0).total_memory)
