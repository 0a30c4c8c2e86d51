"""Inference profiles: named sets of `VANSSettings` that say *how* a checkpoint answers
(frames the reasoner watches, its sampling and system prompt, the sampler, the negative
prompt), never what the checkpoint is (its size, frames, reference count stay its own).

- "paper": the VANS paper's protocol as this project runs it
  (docs/paper_facts.md#inference-settings); the defaults of `VANSSettings` for the fields
  "official" sets.
- "official": the VANS authors' released inference (KlingAIResearch/VANS, read 2026-12;
  docs/official.md), so that their weights give their answers.

`vans predict --profile NAME` and `vans eval --profile NAME` apply one over the
checkpoint's vans.yaml; `vans convert-official` writes "official" into the converted
checkpoint's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vans.errors import ConfigError
from vans.models.checkpoint import VANSSettings
from vans.models.vdm import WAN_NEGATIVE_PROMPT_EN
from vans.models.vlm import SamplingConfig

OFFICIAL_SYSTEM_PROMPT = (
    "You will be given a video. Your task is to predict the next event based on the input "
    "video and the user's instructions. Please begin by providing your detailed reasoning "
    "between the [Think][/Think] tags, followed by your description of the next event "
    "within the [Ans][/Ans] tags."
)
"""The system prompt of the authors' code (`agent_mllm.py`): the paper's (C.2) with a plain
apostrophe, "[Think][/Think]" for "[Think]/[/Think]" and no second "detailed"."""

OFFICIAL: dict[str, Any] = {
    # qwen-vl-utils as they ship it: FPS_MIN_FRAMES = FPS_MAX_FRAMES = 6, frames at
    # round(linspace(0, n - 1, 6)); the processor gets no fps, so mRoPE assumes its default 2.
    "vlm_frames": 6,
    "vlm_fps": 2.0,
    "system_prompt": OFFICIAL_SYSTEM_PROMPT,
    "sampling": SamplingConfig(temperature=0.7, top_p=0.9, max_new_tokens=1024),
    "negative_prompt": WAN_NEGATIVE_PROMPT_EN,
    "sampler": "euler",
    "timestep_dtype": "bfloat16",
    "vae_tiling": True,
    "output_fps": 11.0,
}
"""What the authors' inference does differently from the paper profile (docs/official.md).
Their 50 steps, CFG 5, shift 5, 6 reference latents, 33 frames at 352x640 are the
paper's too, so they are not here: a toy checkpoint keeps its own."""

_DEFAULTS = VANSSettings()
PROFILES: dict[str, dict[str, Any]] = {
    "paper": {name: getattr(_DEFAULTS, name) for name in OFFICIAL},
    "official": OFFICIAL,
}


def check_profile(name: str) -> str:
    """`name`, if it is a profile; else a ConfigError naming the known ones."""
    if name not in PROFILES:
        raise ConfigError(f"unknown inference profile {name!r}; known: {sorted(PROFILES)}")
    return name


def apply_profile(settings: VANSSettings, name: str) -> VANSSettings:
    """`settings` with the fields of profile `name` replaced."""
    return dataclasses.replace(settings, **PROFILES[check_profile(name)])
