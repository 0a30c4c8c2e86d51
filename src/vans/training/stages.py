"""The training stages by name, and how one runs from a YAML config plus overrides.

One place for what `vans train ...` and `vans reproduce ...` both do: resolve the config
(file, then KEY=VALUE overrides), build the stage's task, train it with the shared loop.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from vans.training.config import config_to_dict, load_config
from vans.training.loop import TrainResult, train

STAGES: dict[str, tuple[str, str, str]] = {
    "vae": ("vans.training.vae", "VAEConfig", "build_vae_task"),
    "base-reasoner": (
        "vans.training.base_reasoner",
        "BaseReasonerConfig",
        "build_base_reasoner_task",
    ),
    "sft-vlm": ("vans.training.sft_vlm", "SFTVLMConfig", "build_sft_vlm_task"),
    "sft-vdm": ("vans.training.sft_vdm", "SFTVDMConfig", "build_sft_vdm_task"),
    "joint-grpo-1": (
        "vans.training.joint_grpo_vlm",
        "JointGRPOVLMConfig",
        "build_joint_grpo_vlm_task",
    ),
    "joint-grpo-2": (
        "vans.training.joint_grpo_vdm",
        "JointGRPOVDMConfig",
        "build_joint_grpo_vdm_task",
    ),
    "sft-cot": ("vans.training.sft_cot", "SFTCoTConfig", "build_sft_cot_task"),
    "pa-grpo": ("vans.training.pa_grpo", "PAGRPOConfig", "build_pa_grpo_task"),
}
"""Stage name -> (module, config class, task builder); imported on use, so a command
loads only the model code its stage needs."""


def stage_config(name: str, config_file: Path | None, overrides: Sequence[str] = ()) -> Any:
    """The stage's resolved config: its dataclass defaults, then the file, then overrides."""
    module, config_cls, _ = STAGES[name]
    return load_config(
        getattr(importlib.import_module(module), config_cls), config_file, list(overrides)
    )


def train_command(name: str) -> list[str]:
    """The `vans train` arguments that run stage `name` ("joint-grpo-2" is `joint-grpo
    --stage 2`)."""
    if name not in STAGES:
        raise KeyError(name)
    base, _, stage = name.rpartition("-")
    return [base, "--stage", stage] if base == "joint-grpo" else [name]


def run_stage(
    name: str,
    config_file: Path | None,
    overrides: Sequence[str] = (),
    *,
    resume: bool = False,
    console: Console | None = None,
) -> TrainResult:
    """Train stage `name` (a key of `STAGES`); the resolved config is saved with the run."""
    module, _, build = STAGES[name]
    config = stage_config(name, config_file, overrides)
    task = getattr(importlib.import_module(module), build)(config)
    return train(
        task, config.train, resume=resume, console=console, run_config=config_to_dict(config)
    )
