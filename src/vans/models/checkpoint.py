"""The VANS checkpoint: one directory holding both models and the inference settings.

    CHECKPOINT/
      vans.yaml     VANSSettings (reference frames, fps, resolution, frames, steps, CFG, ...)
      vlm/          Qwen2.5-VL, transformers `save_pretrained` (+ optional `lora/` adapter)
      vdm/          Wan2.1, diffusers layout: transformer/ vae/ text_encoder/ tokenizer/ scheduler/

Everything loads from local paths only; a hub id gets an error that says how to get the
weights onto disk, at once, with no network retries.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from vans.devices import resolve_device
from vans.io import atomic_dir, write_text
from vans.models.errors import CheckpointError
from vans.models.tiny import toy_tokenizers
from vans.models.vdm import Renderer, RenderSettings
from vans.models.vlm import REASONER_PRESETS, Reasoner, SamplingConfig

SETTINGS_FILE = "vans.yaml"


@dataclass
class VANSSettings(RenderSettings):
    """Inference settings stored in `vans.yaml` (paper defaults:
    docs/paper_facts.md#inference-settings): the renderer's (`RenderSettings`: reference
    frames, size, frames, steps, CFG, negative prompt; a VANSSettings is what the sampler
    takes) and the rest of the pipeline's."""

    vlm_fps: float = 1.0
    """Frame rate at which the reasoner watches the input video (and, with `vlm_frames`,
    only the time scale of its mRoPE)."""
    vlm_frames: int | None = None
    """Watch exactly this many uniformly spaced frames of the input instead of `vlm_fps`
    (the authors' code: 6, whatever the clip's length). None: `vlm_fps`."""
    system_prompt: str | None = None
    """The reasoner's system prompt; None: the one its vlm/ directory records (the paper's,
    `prompting.SYSTEM_PROMPT`, for a VANS checkpoint)."""
    output_fps: float = 8.0
    """Frame rate the answer video is written at: 33 frames span ~4 s, like the paper's
    target clips (3.76 s on average)."""
    flow_shift: float = 5.0
    """Timestep shift of the flow-matching schedule, applied to the checkpoint's scheduler."""
    reference_video_frames: int = 33
    """Frames sampled uniformly from the input video for the VAE (4k+1); n latents are picked
    from their encoding. Bounds the cost for long inputs."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """How the reasoner samples its answer."""

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = SETTINGS_FILE) -> VANSSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise CheckpointError(f"{source}: unknown settings {unknown}; known: {sorted(names)}")
        data = dict(data)
        if "sampling" in data:
            known = {f.name for f in dataclasses.fields(SamplingConfig)}
            bad = sorted(set(data["sampling"]) - known)
            if bad:
                raise CheckpointError(
                    f"{source}: unknown sampling settings {bad}; known: {sorted(known)}"
                )
            data["sampling"] = SamplingConfig(**data["sampling"])
        settings = cls(**data)
        problems = settings.problems()
        if problems:
            raise CheckpointError(f"{source}: " + "; ".join(problems))
        return settings

    def problems(self) -> list[str]:
        """What in these settings cannot run, by field (a hand-edited vans.yaml)."""
        problems = super().problems()
        counts = ("num_frames", "height", "width", "steps", "reference_video_frames")
        for name in counts:
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                problems.append(f"{name} must be a whole number >= 1, got {value!r}")
        if self.vlm_frames is not None and not (_is_int(self.vlm_frames) and self.vlm_frames >= 2):
            # Qwen2.5-VL patches 2 frames at a time.
            problems.append(
                f"vlm_frames must be null or a whole number >= 2, got {self.vlm_frames!r}"
            )
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            problems.append(f"system_prompt must be null or text, got {self.system_prompt!r}")
        for name in ("vlm_fps", "output_fps", "flow_shift"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value) and value > 0):
                problems.append(f"{name} must be a positive number, got {value!r}")
        if not (_is_number(self.guidance_scale) and math.isfinite(self.guidance_scale)):
            problems.append(f"guidance_scale must be a number, got {self.guidance_scale!r}")
        # More reference frames than the input's latent frames repeat some
        # (`vdm.reference_indices`), as a still image gives n copies of its one frame.
        n = self.num_reference_frames
        if not _is_int(n) or n < 0:
            problems.append(f"num_reference_frames must be a whole number >= 0, got {n!r}")
        return problems

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def save_checkpoint(
    path: str | Path, reasoner: Reasoner, renderer: Renderer, settings: VANSSettings
) -> Path:
    """Write a checkpoint directory atomically (a temporary sibling, then a rename)."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        reasoner.save_pretrained(tmp / "vlm")
        renderer.save_pretrained(tmp / "vdm")
        write_settings(tmp, settings)
    return path


def write_settings(directory: str | Path, settings: VANSSettings) -> Path:
    """Write `settings` as the checkpoint directory's vans.yaml."""
    return write_text(
        Path(directory) / SETTINGS_FILE, yaml.safe_dump(settings.to_dict(), sort_keys=False)
    )


def check_checkpoint_dir(path: str | Path) -> Path:
    """Fail fast, with what to do, if `path` is not a VANS checkpoint directory."""
    path = Path(path)
    if not path.exists():
        if len(str(path).split("/")) == 2 and not str(path).startswith((".", "/")):
            raise CheckpointError(
                f"{path}: no such directory. It looks like a hub id, but vans loads only local "
                "directories (offline: HF_HUB_OFFLINE=1). Download the weights on a machine with "
                "network access, then pass the directory (see README: real weights)."
            )
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if not path.is_dir():
        raise CheckpointError(f"{path}: is a file; a VANS checkpoint is a directory")
    missing = [p for p in (SETTINGS_FILE, "vlm", "vdm") if not (path / p).exists()]
    if missing:
        raise CheckpointError(
            f"{path}: not a VANS checkpoint, missing {', '.join(missing)}. A checkpoint holds "
            f"{SETTINGS_FILE}, vlm/ and vdm/ (create a tiny one with `vans init-tiny --out DIR`)."
        )
    return path


def load_settings(path: str | Path) -> VANSSettings:
    file = Path(path) / SETTINGS_FILE
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{file}: cannot read settings: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: settings must be a mapping, got {type(data).__name__}")
    return VANSSettings.from_dict(data, str(file))


def load_checkpoint(
    path: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Reasoner, Renderer, VANSSettings]:
    """Load both models and the settings of a checkpoint directory.

    `dtype` applies to the reasoner, the DiT and the text encoder (bfloat16 on a GPU); the
    VAE stays float32. The reasoner's fps comes from `vans.yaml`, the one place it is set.
    """
    device = str(resolve_device(device))
    path = check_checkpoint_dir(path)
    settings = load_settings(path)
    lora = path / "vlm" / "lora"
    reasoner = Reasoner.from_pretrained(
        path / "vlm",
        lora=lora if lora.exists() else None,
        dtype=dtype,
        device=device,
        fps=settings.vlm_fps,
    )
    renderer = Renderer.from_pretrained(path / "vdm", dtype=dtype, device=device)
    renderer.set_shift(settings.flow_shift)
    return reasoner, renderer, settings


TINY_SETTINGS = VANSSettings(
    num_frames=17, height=64, width=64, steps=8, sampling=SamplingConfig(max_new_tokens=48)
)
"""Settings of `vans init-tiny`: the paper's conditioning (6 reference latents, 1 fps, CFG 5)
at a size a laptop CPU renders in seconds."""

TOY_SETTINGS = dataclasses.replace(
    TINY_SETTINGS, vlm_fps=2.0, sampling=SamplingConfig(max_new_tokens=128)
)
"""Settings of the toy presets: the reasoner watches at 2 fps (see `REASONER_PRESETS`), and
answers may take 128 tokens. A toy answer is ~70 tokens ([Think] ~45, [Ans] ~15); at 48
most were cut before [/Ans], so Joint-GRPO's format reward paid for short answers."""

PRESET_SETTINGS: dict[str, VANSSettings] = {"tiny": TINY_SETTINGS}
"""`init_tiny`'s settings per preset; presets not named here use `TOY_SETTINGS`."""


RENDERER_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {},
    "toy": {
        "transformer": {
            "num_attention_heads": 4,
            "attention_head_dim": 16,
            "ffn_dim": 128,
            "num_layers": 4,
        },
    },
    "toy-base": {
        "transformer": {
            "num_attention_heads": 4,
            "attention_head_dim": 16,
            "ffn_dim": 128,
            "num_layers": 4,
            "patch_size": (1, 4, 4),
        },
        "vae": {
            "base_dim": 8,
            "decoder_base_dim": 16,
            "dim_mult": [1, 2, 2],
            "temperal_downsample": [True, True],
            "scale_factor_spatial": 4,
        },
    },
}
"""Renderer sizes of `init_tiny` (overrides of `Renderer.random`'s): "tiny" is the smallest
that runs (tests); "toy" has a DiT big enough to learn the toy world (0.26M parameters
instead of 28K, whose flow-matching loss plateaus), with the 14K-parameter VAE (base_dim
3), whose reconstructions lose the objects' colours. "toy-base" is the toy renderer base
(docs/toybases.md): a 465K-parameter VAE that compresses 4x in space (Wan's is 8x, which
leaves an 8-pixel toy object one latent pixel) and 4x in time, with a decoder twice as wide
as its encoder (`decoder_base_dim`, channels 16-32: the decoder draws the colours, the
encoder only has to tell them apart), and the toy DiT patchifying 4x4 latents, so that its
tokens still cover 16x16 pixels and it costs what the "toy" DiT costs."""


def init_tiny(path: str | Path, *, seed: int = 0, preset: str = "tiny") -> Path:
    """Write a tiny, randomly initialised checkpoint of the real architectures, with
    tokenizers trained on the toy world's language; `preset` picks the sizes
    (`REASONER_PRESETS`, `RENDERER_PRESETS`) and the settings (`PRESET_SETTINGS`)."""
    known = sorted(set(RENDERER_PRESETS) & set(REASONER_PRESETS))
    if preset not in known:
        raise CheckpointError(f"unknown preset {preset!r}; known: {known}")
    settings = PRESET_SETTINGS.get(preset, TOY_SETTINGS)
    reasoner_tokenizer, text_tokenizer = toy_tokenizers()
    reasoner = Reasoner.random(
        reasoner_tokenizer, seed=seed, fps=settings.vlm_fps, **REASONER_PRESETS[preset]
    )
    renderer = Renderer.random(text_tokenizer, seed=seed, **RENDERER_PRESETS[preset])
    return save_checkpoint(path, reasoner, renderer, settings)
