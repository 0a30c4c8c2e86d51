"""The VANS renderer: Wan2.1 text-to-video, conditioned on VAE reference latents.

The components are diffusers' and transformers' real Wan2.1 classes
(`WanTransformer3DModel`, `AutoencoderKLWan`, `UMT5EncoderModel`, a fast umT5 tokenizer
and a flow-matching scheduler), stored in the diffusers layout of
`Wan-AI/Wan2.1-T2V-1.3B-Diffusers`.

Conditioning on the input video (docs/paper_facts.md#reference-frame-conditioning): the
whole input video is VAE-encoded to T' latent frames, n of them
(`floor(linspace(0, T'-1, n))`, n = 6 by default) are kept, and at every denoising step
these clean latents are concatenated in front of the noisy latents along time. The
transformer sees one timestep for all tokens, and its output for the reference frames is
dropped. With n = 0 (or no video) the renderer is exactly diffusers' `WanPipeline`
text-to-video: same prompt encoding, same initial noise for the same seed, same CFG, same
scheduler steps, same decoding.

`predict_velocity` is the one model call shared by the ODE sampler here and by the
Flow-GRPO SDE sampler (see `vans.models.flow_matching`); its conditional half,
`conditional_velocity`, is also what flow-matching SFT trains.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import regex
import torch
from diffusers import (
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    WanTransformer3DModel,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

from vans.data.video import resize_center_crop
from vans.errors import one_line
from vans.models.errors import LOAD_ERRORS, CheckpointError
from vans.models.flow_matching import (
    FlowStep,
    Schedule,
    diffsynth_schedule,
    euler_step,
    scheduler_step,
    set_schedule,
)
from vans.timing import Timings, maybe_stage

try:  # WanPipeline cleans prompts with ftfy when it is installed; so do we.
    import ftfy
except ImportError:  # pragma: no cover - depends on the environment
    ftfy = None

SUBFOLDERS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
EXPECTED_LAYOUT = (
    "expected a diffusers-format Wan2.1 directory with transformer/, vae/, text_encoder/, "
    "tokenizer/, scheduler/ (the layout of Wan-AI/Wan2.1-T2V-1.3B-Diffusers; download it on a "
    "machine with network access, or write one with Renderer.save_pretrained)"
)

WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，"
    "低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，"
    "毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
"""The negative prompt of the original Wan2.1 code (`sample_neg_prompt`). `render` defaults
to the empty negative prompt, like diffusers' WanPipeline; pass this one to match Wan's
own sampling script."""

WAN_NEGATIVE_PROMPT_EN = (
    "vivid colors, overexposed, static, blurry details, subtitles, style, artwork, painting, "
    "frame, stationary, overall grayish, worst quality, low quality, JPEG compression "
    "artifacts, ugly, incomplete, extra fingers, poorly drawn hands, poorly drawn face, "
    "deformed, disfigured, malformed limbs, fused fingers, stationary frame, cluttered "
    "background, three legs, crowded background people, walking backwards"
)
"""The English version of `WAN_NEGATIVE_PROMPT`, as the VANS authors' inference passes it."""

SAMPLERS = ("scheduler", "euler")
"""`RenderSettings.sampler` values."""
TIMESTEP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
"""`RenderSettings.timestep_dtype` values (None: float32)."""
VAE_TILE = {"height": 240, "width": 416, "stride_height": 120, "stride_width": 208}
"""Pixel tiles of `vae_tiling`: DiffSynth's Wan defaults (latent tiles 30x52, stride 15x26,
times the VAE's 8), so a tiled 352x640 video is cut where the authors' is."""

DEFAULT_NUM_REFERENCE_FRAMES = 6
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


@dataclass
class RenderSettings:
    """How the sampler renders (paper defaults: docs/paper_facts.md#inference-settings).
    A checkpoint's `VANSSettings` (its vans.yaml) extends it: the same fields, the same
    names, from the YAML to the DiT."""

    num_reference_frames: int = DEFAULT_NUM_REFERENCE_FRAMES
    """Clean VAE latent frames of the input video prepended at every step (0:
    text-to-video)."""
    num_frames: int = 33
    """Frames of the video (4k+1)."""
    height: int = 352
    width: int = 640
    steps: int = 50
    """Denoising steps."""
    guidance_scale: float = 5.0
    """Classifier-free guidance scale (<= 1: off, one transformer call per step)."""
    negative_prompt: str = ""
    """The unconditional prompt of CFG (empty, as diffusers' WanPipeline defaults to)."""
    sampler: str = "scheduler"
    """"scheduler": the checkpoint's diffusers scheduler and its own step (UniPC for Wan2.1),
    at the checkpoint's shift; "euler": Euler steps on DiffSynth's Wan grid at the same shift
    (`flow_matching.diffsynth_schedule`; the VANS authors' inference)."""
    timestep_dtype: str | None = None
    """"bfloat16" rounds the timestep the DiT is given, as the authors' bf16 pipeline does;
    None keeps it float32."""
    vae_tiling: bool = False
    """Encode and decode in overlapping spatial tiles (`VAE_TILE`; the authors' inference
    tiles): less memory at 352x640, slightly different pixels where tiles blend."""

    def problems(self) -> list[str]:
        """What in these settings the sampler cannot run, by field."""
        problems = []
        if self.sampler not in SAMPLERS:
            problems.append(f"sampler must be one of {list(SAMPLERS)}, got {self.sampler!r}")
        if self.timestep_dtype is not None:
            if self.timestep_dtype not in TIMESTEP_DTYPES:
                problems.append(
                    f"timestep_dtype must be null or one of {list(TIMESTEP_DTYPES)}, "
                    f"got {self.timestep_dtype!r}"
                )
            elif self.sampler != "euler":
                # A diffusers scheduler finds its step by the timestep it made.
                problems.append("timestep_dtype needs sampler: euler")
        if not isinstance(self.vae_tiling, bool):
            problems.append(f"vae_tiling must be true or false, got {self.vae_tiling!r}")
        return problems


@dataclass(frozen=True)
class Conditioning:
    """What the transformer is conditioned on (`Renderer.encode_conditioning`): the same at
    sampling and, in Flow-GRPO, at re-scoring."""

    prompt_embeds: torch.Tensor
    """umT5 embeddings of the captions, (B, L, D) (`Renderer.encode_prompts`)."""
    negative_embeds: torch.Tensor | None = None
    """Embeddings of the negative prompt, (1 or B, L, D); needed when guidance > 1."""
    reference: torch.Tensor | None = None
    """Clean reference latents (1 or B, C, n, h, w) (`Renderer.prepare_reference`);
    None: plain text-to-video."""


def clean_prompt(text: str) -> str:
    """WanPipeline's prompt cleaning: fix mojibake (ftfy, if installed), unescape HTML
    twice, collapse whitespace."""
    if ftfy is not None:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return regex.sub(r"\s+", " ", text).strip()


def reference_indices(num_latent_frames: int, num_reference_frames: int) -> list[int]:
    """`floor(linspace(0, T'-1, n))` for n = `num_reference_frames`, computed exactly with
    integers.

    Indices repeat when n > T' (e.g. a single image, T' = 1, gives n copies of frame 0).
    """
    n = num_reference_frames
    if n < 0:
        raise ValueError(f"the number of reference frames must be >= 0, got {n}")
    if num_latent_frames < 1:
        raise ValueError(f"need at least one latent frame, got {num_latent_frames}")
    if n == 1:
        return [0]
    return [i * (num_latent_frames - 1) // (n - 1) for i in range(n)]


def video_to_unit(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames (..., T, H, W, 3) -> float32 (..., 3, T, H, W) in [-1, 1], the VAE's
    input; the inverse of `video_to_uint8`."""
    return frames.movedim(-1, -4).float() / 255 * 2 - 1


def video_to_uint8(video: torch.Tensor) -> torch.Tensor:
    """Decoded video (B, 3, T, H, W) in [-1, 1] -> uint8 frames (B, T, H, W, 3)."""
    pixels = ((video.float() + 1) / 2 * 255).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 4, 1).contiguous()


def conditional_velocity(
    transformer: torch.nn.Module,
    latents: torch.Tensor,
    timestep: torch.Tensor | float,
    prompt_embeds: torch.Tensor,
    reference: torch.Tensor | None = None,
) -> torch.Tensor:
    """One transformer call with VANS reference conditioning, shared by sampling and training.

    Clean `reference` latents (1 or B, C, n, h, w) go in front of the noisy `latents`
    (B, C, T', h, w) along time; `timestep` (a scalar or one per sample, (B,)) is given to
    every token of a sample, the reference ones included; the output for the reference
    frames is dropped. `transformer` may be wrapped (e.g. DDP) as long as it takes
    WanTransformer3DModel's arguments. Returns float32 (B, C, T', h, w).
    """
    batch = latents.shape[0]
    # The compute dtype is the patch embedding's: diffusers keeps some parameters (the
    # scale-shift table, norms) in float32 whatever the model's dtype, and one of them is
    # the first parameter. DDP wraps the model in `.module`.
    dtype = getattr(transformer, "module", transformer).patch_embedding.weight.dtype
    hidden = latents
    num_reference_frames = 0
    if reference is not None:
        num_reference_frames = reference.shape[2]
        reference = reference.to(latents.device, latents.dtype).expand(batch, -1, -1, -1, -1)
        hidden = torch.cat([reference, latents], dim=2)
    out = transformer(
        hidden_states=hidden.to(dtype),
        timestep=torch.as_tensor(timestep, device=latents.device).expand(batch),
        encoder_hidden_states=prompt_embeds.to(latents.device, dtype).expand(batch, -1, -1),
        return_dict=False,
    )[0]
    return out[:, :, num_reference_frames:].float()


TINY_TRANSFORMER: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "in_channels": 16,
    "out_channels": 16,
    "freq_dim": 256,
    "ffn_dim": 32,
    "num_layers": 2,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 1024,
}
"""DiT sizes of `Renderer.tiny` (its `text_dim` is the text encoder's `d_model`)."""

TINY_VAE: dict[str, Any] = {
    "base_dim": 3,
    "z_dim": 16,  # matches the 16-entry latents_mean / latents_std defaults
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "temperal_downsample": [False, True, True],
}
"""VAE sizes of `Renderer.tiny`."""

TINY_TEXT_ENCODER: dict[str, Any] = {
    "d_model": 32,
    "d_kv": 16,
    "d_ff": 64,
    "num_layers": 2,
    "num_heads": 2,
    "relative_attention_num_buckets": 8,
}
"""umT5 encoder sizes of `Renderer.tiny`."""


class Renderer:
    """Wan2.1 with VANS reference conditioning; see the module docstring."""

    def __init__(
        self,
        transformer: WanTransformer3DModel,
        vae: AutoencoderKLWan,
        text_encoder: UMT5EncoderModel,
        tokenizer: Any,
        scheduler: SchedulerMixin,
    ) -> None:
        self.transformer = transformer
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self._check_components()

    def _check_components(self) -> None:
        tcfg, vcfg = self.transformer.config, self.vae.config
        z_dim = vcfg.z_dim
        problems = []
        if tcfg.in_channels != z_dim or tcfg.out_channels != z_dim:
            problems.append(
                f"transformer in/out channels ({tcfg.in_channels}/{tcfg.out_channels}) "
                f"!= VAE z_dim ({z_dim})"
            )
        if len(vcfg.latents_mean) != z_dim or len(vcfg.latents_std) != z_dim:
            problems.append(
                f"VAE latents_mean/latents_std have {len(vcfg.latents_mean)}/"
                f"{len(vcfg.latents_std)} entries, z_dim is {z_dim}"
            )
        if tcfg.text_dim != self.text_encoder.config.d_model:
            problems.append(
                f"transformer text_dim ({tcfg.text_dim}) != text encoder d_model "
                f"({self.text_encoder.config.d_model})"
            )
        if self.tokenizer.pad_token_id is None:
            problems.append("the tokenizer has no pad token")
        if problems:
            raise ValueError("Renderer components do not fit together: " + "; ".join(problems))

    # ------------------------------------------------------------------ properties

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    @property
    def latent_channels(self) -> int:
        return self.transformer.config.in_channels

    @property
    def temporal_scale(self) -> int:
        return self.vae.config.scale_factor_temporal or 4

    @property
    def spatial_scale(self) -> int:
        return self.vae.config.scale_factor_spatial or 8

    def set_shift(self, shift: float) -> None:
        """Sample with timestep shift `shift` whatever the checkpoint's scheduler says (the
        Wan2.1-1.3B diffusers repo ships 3.0; VANS uses 5.0)."""
        key = "flow_shift" if "flow_shift" in self.scheduler.config else "shift"
        self.scheduler = type(self.scheduler).from_config(self.scheduler.config, **{key: shift})

    def trainable_transformer(self, gradient_checkpointing: bool = False) -> torch.nn.Module:
        """Make every DiT weight trainable and freeze the VAE and the text encoder (eval mode,
        no gradients; their outputs can then be cached exactly), as VANS trains the renderer
        (SFT and Flow-GRPO). Returns the DiT."""
        self.vae.requires_grad_(False).eval()
        self.text_encoder.requires_grad_(False).eval()
        self.transformer.requires_grad_(True)
        if gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        return self.transformer

    def num_latent_frames(self, num_frames: int) -> int:
        return (num_frames - 1) // self.temporal_scale + 1

    def to(self, device: torch.device | str) -> Renderer:
        for module in (self.transformer, self.vae, self.text_encoder):
            module.to(device)
        return self

    # ------------------------------------------------------------------ construction

    @classmethod
    def tiny(cls, tokenizer: Any, *, seed: int = 0) -> Renderer:
        """A tiny randomly initialised Wan2.1 (same classes as the real one), for tests."""
        return cls.random(tokenizer, seed=seed)

    @classmethod
    def random(
        cls,
        tokenizer: Any,
        *,
        transformer: dict[str, Any] | None = None,
        vae: dict[str, Any] | None = None,
        text_encoder: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> Renderer:
        """A randomly initialised Wan2.1 whose sizes are `TINY_TRANSFORMER`, `TINY_VAE` and
        `TINY_TEXT_ENCODER` updated with the given dicts (the DiT's `text_dim` follows the
        text encoder's `d_model`), the text encoder's vocabulary and special ids the
        tokenizer's (`from_configs`)."""
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer needs pad and eos tokens (umT5 uses pad id 0)")
        t5_sizes = {**TINY_TEXT_ENCODER, **(text_encoder or {})}
        return cls.from_configs(
            tokenizer,
            transformer={
                **TINY_TRANSFORMER,
                **(transformer or {}),
                "text_dim": t5_sizes["d_model"],
            },
            vae={**TINY_VAE, **(vae or {})},
            text_encoder={
                "vocab_size": len(tokenizer),
                "pad_token_id": tokenizer.pad_token_id,
                "eos_token_id": tokenizer.eos_token_id,
                "decoder_start_token_id": tokenizer.pad_token_id,
                **t5_sizes,
            },
            seed=seed,
        )

    @classmethod
    def from_configs(
        cls,
        tokenizer: Any,
        *,
        transformer: dict[str, Any],
        vae: dict[str, Any],
        text_encoder: dict[str, Any],
        seed: int = 0,
    ) -> Renderer:
        """A randomly initialised Wan2.1 from the configs of its parts (the contents of a
        diffusers-layout directory's transformer/, vae/ and text_encoder/ config.json; a
        published one too: `vans.models.paper`), on the current default device and dtype,
        so that under `torch.device("meta")` nothing is allocated. The tokenizer must fit
        the text encoder: every id inside its vocabulary, the same pad and eos ids. The same
        seed gives the same weights; the CPU's global RNG is left untouched."""
        t5_config = UMT5Config.from_dict(text_encoder)
        problems = []
        if len(tokenizer) > t5_config.vocab_size:
            problems.append(
                f"the tokenizer has {len(tokenizer)} tokens, the text encoder's vocabulary "
                f"{t5_config.vocab_size}"
            )
        for name in ("pad_token_id", "eos_token_id"):
            if getattr(tokenizer, name) != getattr(t5_config, name):
                problems.append(
                    f"the tokenizer's {name} is {getattr(tokenizer, name)}, the text "
                    f"encoder's {getattr(t5_config, name)}"
                )
        if problems:
            raise ValueError("; ".join(problems))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            dit = WanTransformer3DModel.from_config(transformer)
            autoencoder = AutoencoderKLWan.from_config(vae)
            encoder = UMT5EncoderModel(t5_config)
        for module in (dit, autoencoder, encoder):
            module.eval()
        return cls(dit, autoencoder, encoder, tokenizer, FlowMatchEulerDiscreteScheduler(shift=5.0))

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        vae_dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> Renderer:
        """Load a diffusers-format Wan2.1 directory from local files only.

        `dtype` is used for the transformer and the text encoder; the VAE stays in
        `vae_dtype` (float32, as Wan recommends). Raises `CheckpointError` when a part is
        missing or does not load.
        """
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"{path}: no such directory; {EXPECTED_LAYOUT}")
        missing = [name for name in SUBFOLDERS if not (path / name).is_dir()]
        if missing:
            raise CheckpointError(
                f"{path}: missing {', '.join(s + '/' for s in missing)}; {EXPECTED_LAYOUT}"
            )
        for name in ("transformer", "vae", "text_encoder"):
            check_weights(path / name)
        if not any((path / "tokenizer" / f).is_file() for f in ("tokenizer.json", "spiece.model")):
            raise CheckpointError(
                f"{path / 'tokenizer'}: no tokenizer.json or spiece.model; {EXPECTED_LAYOUT}"
            )
        scheduler_cls = _scheduler_class(path / "scheduler")

        def load(part: str, loader: Callable[[], Any]) -> Any:
            try:
                return loader()
            except LOAD_ERRORS as exc:
                raise CheckpointError(f"{path / part}: cannot load: {one_line(exc)}") from exc

        transformer = load(
            "transformer",
            lambda: WanTransformer3DModel.from_pretrained(
                path / "transformer", torch_dtype=dtype, local_files_only=True
            ),
        )
        vae = load(
            "vae",
            lambda: AutoencoderKLWan.from_pretrained(
                path / "vae", torch_dtype=vae_dtype, local_files_only=True
            ),
        )
        text_encoder = load(
            "text_encoder",
            lambda: UMT5EncoderModel.from_pretrained(
                path / "text_encoder", dtype=dtype, local_files_only=True
            ),
        )
        tokenizer = load(
            "tokenizer",
            lambda: AutoTokenizer.from_pretrained(path / "tokenizer", local_files_only=True),
        )
        scheduler = load(
            "scheduler",
            lambda: scheduler_cls.from_pretrained(path / "scheduler", local_files_only=True),
        )
        for module in (transformer, vae, text_encoder):
            module.to(device).eval()
        try:
            return cls(transformer, vae, text_encoder, tokenizer, scheduler)
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the diffusers layout (safetensors), loadable by `from_pretrained` and by
        diffusers' `WanPipeline.from_pretrained` (a `model_index.json` is written too)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(path / "transformer", safe_serialization=True)
        self.vae.save_pretrained(path / "vae", safe_serialization=True)
        self.text_encoder.save_pretrained(path / "text_encoder")
        self.tokenizer.save_pretrained(path / "tokenizer")
        self.scheduler.save_pretrained(path / "scheduler")
        index = {
            "_class_name": "WanPipeline",
            "scheduler": ["diffusers", type(self.scheduler).__name__],
            "text_encoder": ["transformers", type(self.text_encoder).__name__],
            "tokenizer": ["transformers", type(self.tokenizer).__name__],
            "transformer": ["diffusers", type(self.transformer).__name__],
            "vae": ["diffusers", type(self.vae).__name__],
        }
        (path / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        return path

    # ------------------------------------------------------------------ encoders

    @torch.no_grad()
    def encode_prompts(
        self, prompts: Sequence[str], max_sequence_length: int = 512
    ) -> torch.Tensor:
        """umT5 embeddings (B, max_sequence_length, D), as WanPipeline computes them: the
        prompts are cleaned, padded (or truncated) to `max_sequence_length`, and every
        position past a prompt's own length is zero. Returned in the transformer's dtype."""
        return self.prompt_embeddings(prompts, max_sequence_length)

    def prompt_embeddings(
        self, prompts: Sequence[str], max_sequence_length: int = 512, *, longest: bool = False
    ) -> torch.Tensor:
        """`encode_prompts` under the caller's grad mode, for training the text encoder (a
        toy renderer base's, which starts random where Wan's umT5 is pretrained).

        With `longest` the encoder runs on the batch's longest prompt only and zeros pad the
        result to `max_sequence_length`: the masked padding does not change the other
        positions, so this differs from WanPipeline's numbers by float rounding only, and
        it saves most of a toy training step (512 positions for 40-token prompts)."""
        prompts = [clean_prompt(p) for p in prompts]
        tokens = self.tokenizer(
            prompts,
            padding="longest" if longest else "max_length",
            max_length=max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        encoder_device = next(self.text_encoder.parameters()).device
        ids, mask = tokens.input_ids.to(encoder_device), tokens.attention_mask.to(encoder_device)
        hidden = self.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        lengths = mask.gt(0).sum(dim=1)
        keep = torch.arange(hidden.shape[1], device=encoder_device)[None, :] < lengths[:, None]
        hidden = torch.where(keep[..., None], hidden, torch.zeros_like(hidden))
        hidden = torch.nn.functional.pad(hidden, (0, 0, 0, max_sequence_length - hidden.shape[1]))
        return hidden.to(device=self.device, dtype=self.dtype)

    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(latents_mean, 1 / latents_std), shaped to broadcast over (B, C, T, h, w).

        Wan's pipelines multiply and divide by the *inverse* std; we do the same so the
        float results are bit-identical.
        """
        cfg = self.vae.config
        shape = (1, cfg.z_dim, 1, 1, 1)
        mean = torch.tensor(cfg.latents_mean).view(shape).to(like.device, like.dtype)
        inv_std = 1.0 / torch.tensor(cfg.latents_std).view(shape).to(like.device, like.dtype)
        return mean, inv_std

    @torch.no_grad()
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (T, H, W, 3) -> normalised latents (1, C, T', H/8, W/8), float32; a
        batch of clips (B, T, H, W, 3) gives (B, ...) in one VAE call (on CPU several times
        faster than one call per clip).

        The VAE compresses time causally by 4: T' = (T-1)//4 + 1, and frames past
        4(T'-1)+1 are not used. Latents are the posterior mode, normalised as
        `(z - latents_mean) / latents_std` (the inverse of what WanPipeline does before
        decoding), so they live in the same space as the denoised latents.
        """
        if frames.dtype != torch.uint8 or frames.ndim not in (4, 5) or frames.shape[-1] != 3:
            raise ValueError(
                "frames must be uint8 (T, H, W, 3) or (B, T, H, W, 3), got "
                f"{tuple(frames.shape)} {frames.dtype}"
            )
        clips = frames if frames.ndim == 5 else frames.unsqueeze(0)
        t, h, w = clips.shape[1:4]
        if t < 1 or h % self.spatial_scale or w % self.spatial_scale:
            raise ValueError(
                f"frames must be non-empty with H and W multiples of {self.spatial_scale}, "
                f"got {tuple(frames.shape)}"
            )
        clips = clips[:, : (t - 1) // self.temporal_scale * self.temporal_scale + 1]
        vae_param = next(self.vae.parameters())
        x = video_to_unit(clips.to(vae_param.device))
        z = self.vae.encode(x.to(vae_param.dtype)).latent_dist.mode().float()
        mean, inv_std = self._latent_stats(z)
        return (z - mean) * inv_std

    @staticmethod
    def reference_latents(latents: torch.Tensor, num_reference_frames: int) -> torch.Tensor | None:
        """Latent frames `floor(linspace(0, T'-1, n))` of `latents` (1, C, T', h, w) ->
        (1, C, n, h, w) for n = `num_reference_frames`; None for n = 0."""
        if num_reference_frames == 0:
            return None
        index = reference_indices(latents.shape[2], num_reference_frames)
        return latents[:, :, index]

    def prepare_reference(
        self,
        reference_frames: torch.Tensor | None,
        num_reference_frames: int,
        height: int,
        width: int,
    ) -> torch.Tensor | None:
        """Resize + center-crop the input video to (height, width), encode it once and
        pick `num_reference_frames` latent frames; None means plain text-to-video."""
        if num_reference_frames < 0:
            raise ValueError(f"num_reference_frames must be >= 0, got {num_reference_frames}")
        if reference_frames is None or num_reference_frames == 0:
            return None
        frames = resize_center_crop(reference_frames, (height, width))
        return self.reference_latents(self.encode_video(frames), num_reference_frames)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Denoised latents (B, C, T', h, w) -> video (B, 3, T, H, W) in [-1, 1], float32."""
        vae_param = next(self.vae.parameters())
        latents = latents.to(vae_param.device, vae_param.dtype)
        mean, inv_std = self._latent_stats(latents)
        video = self.vae.decode(latents / inv_std + mean, return_dict=False)[0]
        return video.float()

    # ------------------------------------------------------------------ sampling

    def initial_noise(
        self,
        batch_size: int,
        num_frames: int,
        height: int,
        width: int,
        seed: int,
        *,
        shared: bool = False,
    ) -> torch.Tensor:
        """Float32 Gaussian latents (B, C, T', H/8, W/8) drawn from a CPU generator seeded
        with `seed` (the noise WanPipeline draws for `torch.Generator().manual_seed(seed)`).
        With `shared`, one draw (the noise of a batch of one) repeated B times."""
        shape = (
            1 if shared else batch_size,
            self.latent_channels,
            self.num_latent_frames(num_frames),
            height // self.spatial_scale,
            width // self.spatial_scale,
        )
        generator = torch.Generator("cpu").manual_seed(seed)
        noise = torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device)
        return noise.expand(batch_size, *shape[1:]).clone() if shared else noise

    def predict_velocity(
        self,
        latents: torch.Tensor,
        t: torch.Tensor | float,
        prompt_embeds: torch.Tensor,
        negative_embeds: torch.Tensor | None,
        guidance_scale: float,
        reference: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The guided velocity for noisy `latents` (B, C, T', h, w) at timestep `t`.

        Clean `reference` latents (1 or B, C, n, h, w) are put in front of the noisy ones
        along time, every token gets the same timestep, and the output for the reference
        frames is dropped (`conditional_velocity`, also what SFT trains). With
        `guidance_scale > 1` this is classifier-free guidance as in WanPipeline,
        `uncond + g * (cond - uncond)`, from two transformer calls. Returns float32
        (B, C, T', h, w); gradients flow if enabled.
        """
        cond = conditional_velocity(self.transformer, latents, t, prompt_embeds, reference)
        if guidance_scale <= 1.0:
            return cond
        if negative_embeds is None:
            raise ValueError(f"guidance_scale {guidance_scale} > 1 needs negative_embeds")
        uncond = conditional_velocity(self.transformer, latents, t, negative_embeds, reference)
        return uncond + guidance_scale * (cond - uncond)

    def denoise(
        self,
        latents: torch.Tensor,
        prompt_embeds: torch.Tensor,
        negative_embeds: torch.Tensor | None,
        *,
        settings: RenderSettings,
        reference: torch.Tensor | None = None,
        step: FlowStep | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """The denoising loop, from pure noise `latents` to clean latents, with the steps,
        guidance and sampler of `settings`.

        Each step calls `predict_velocity` then `step` (default: the sampler's, see
        `sampling_schedule`; `vans.models.flow_matching` has others). `progress(done,
        total)` is called after every step. Runs under the caller's grad mode.
        """
        schedule, default_step = self.sampling_schedule(settings, latents.device)
        step = step or default_step
        guidance_scale = settings.guidance_scale
        total = len(schedule)
        for i, t in enumerate(schedule.timesteps):
            v = self.predict_velocity(
                latents, t, prompt_embeds, negative_embeds, guidance_scale, reference
            )
            latents = step(latents, v, i, schedule)
            if progress is not None:
                progress(i + 1, total)
        return latents

    def sampling_schedule(
        self, settings: RenderSettings, device: torch.device | str | None = None
    ) -> tuple[Schedule, FlowStep]:
        """The schedule of `settings.steps` steps and the step that walks it: the
        checkpoint scheduler's own, or Euler on DiffSynth's grid at the scheduler's shift."""
        if settings.sampler == "scheduler":
            schedule = set_schedule(self.scheduler, settings.steps, device=device)
            return schedule, scheduler_step(self.scheduler)
        config = self.scheduler.config
        shift = config.get("flow_shift") or config.get("shift") or 1.0
        dtype = (
            None if settings.timestep_dtype is None else TIMESTEP_DTYPES[settings.timestep_dtype]
        )
        schedule = diffsynth_schedule(settings.steps, shift, timestep_dtype=dtype)
        return Schedule(schedule.timesteps.to(device), schedule.sigmas.to(device)), euler_step

    @contextmanager
    def vae_tiles(self, enabled: bool) -> Iterator[None]:
        """Within: the VAE encodes and decodes in `VAE_TILE` tiles if `enabled`."""
        vae, before = self.vae, self.vae.use_tiling
        if enabled:
            vae.enable_tiling(
                VAE_TILE["height"],
                VAE_TILE["width"],
                VAE_TILE["stride_height"],
                VAE_TILE["stride_width"],
            )
        else:
            vae.use_tiling = False
        try:
            yield
        finally:
            vae.use_tiling = before

    def encode_conditioning(
        self,
        captions: Sequence[str],
        settings: RenderSettings,
        reference_frames: torch.Tensor | None = None,
        timings: Timings | None = None,
    ) -> Conditioning:
        """What the DiT is conditioned on: the captions' umT5 embeddings, the negative
        prompt's when CFG is on, and `settings.num_reference_frames` reference latents of
        `reference_frames` (resized and center-cropped to the settings' size).

        The frozen encoders run in their own dtype, outside any autocast of the caller (a
        training step under bf16 autocast conditions its rollouts as inference does).
        `timings` receives text_encode and vae_encode.
        """
        negative_embeds, reference = self._shared_conditioning(settings, reference_frames, timings)
        return Conditioning(self._encode_captions(captions, timings), negative_embeds, reference)

    def _encode_captions(self, captions: Sequence[str], timings: Timings | None) -> torch.Tensor:
        with (
            torch.no_grad(),
            torch.autocast(self.device.type, enabled=False),
            maybe_stage(timings, "text_encode"),
        ):
            return self.encode_prompts(captions)

    def _shared_conditioning(
        self,
        settings: RenderSettings,
        reference_frames: torch.Tensor | None,
        timings: Timings | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The negative embeddings (None without CFG) and the reference latents, which every
        caption of a call shares."""
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            negative_embeds = None
            if settings.guidance_scale > 1.0:
                with maybe_stage(timings, "text_encode"):
                    negative_embeds = self.encode_prompts([settings.negative_prompt])
            with maybe_stage(timings, "vae_encode"), self.vae_tiles(settings.vae_tiling):
                reference = self.prepare_reference(
                    reference_frames, settings.num_reference_frames, settings.height, settings.width
                )
        return negative_embeds, reference

    def check_inputs(
        self,
        captions: Sequence[str] | None,
        conditioning: Conditioning | None,
        settings: RenderSettings,
    ) -> None:
        """Fail with a `ValueError` naming the argument that cannot be rendered."""
        if (captions is None) == (conditioning is None):
            raise ValueError("give captions or a precomputed conditioning (one of them)")
        if conditioning is None:
            if isinstance(captions, str) or not isinstance(captions, Sequence) or not captions:
                raise ValueError("captions must be a non-empty list of strings")
            for c in captions:
                # An empty caption is legitimate: it renders unconditionally (as WanPipeline).
                if not isinstance(c, str):
                    raise ValueError(f"every caption must be a string, got {c!r}")
        s = settings
        if s.num_frames < 1 or (s.num_frames - 1) % self.temporal_scale:
            raise ValueError(
                f"num_frames must be {self.temporal_scale}k+1 (e.g. 33), got {s.num_frames}"
            )
        multiple = self.spatial_scale * self.transformer.config.patch_size[1]
        if s.height < multiple or s.width < multiple or s.height % multiple or s.width % multiple:
            raise ValueError(
                f"height and width must be positive multiples of {multiple}, "
                f"got {s.height}x{s.width}"
            )
        if s.num_reference_frames < 0:
            raise ValueError(f"num_reference_frames must be >= 0, got {s.num_reference_frames}")
        if s.steps < 1:
            raise ValueError(f"steps must be >= 1, got {s.steps}")
        problems = RenderSettings.problems(s)
        if problems:
            raise ValueError("; ".join(problems))

    def __call__(
        self,
        captions: Sequence[str] | None = None,
        *,
        settings: RenderSettings | None = None,
        conditioning: Conditioning | None = None,
        reference_frames: torch.Tensor | None = None,
        latents: torch.Tensor | None = None,
        seed: int = 0,
        shared_noise: bool = False,
        step: FlowStep | None = None,
        batch_size: int | None = None,
        output_type: Literal["uint8", "latent"] = "uint8",
        progress: Callable[[int, int], None] | None = None,
        timings: Timings | None = None,
        **overrides: Any,
    ) -> torch.Tensor:
        """The sampler: one video per caption, uint8 (B, num_frames, height, width, 3), or
        with `output_type="latent"` the clean latents (B, C, T', h, w).

        `settings` (default `RenderSettings()`, the paper's), with any of its fields
        overridden by keyword (`steps=10`), sets the size, reference count, steps and CFG.
        Every piece can be given precomputed instead of computed here:

        - `captions`, or `conditioning` (`encode_conditioning`: prompt embeddings, negative
          embeddings, reference latents; Flow-GRPO re-scores its rollouts with the same);
        - `reference_frames`, the input video, uint8 (T, H, W, 3) of any size (ignored with
          a `conditioning`); None or `num_reference_frames=0` gives plain text-to-video;
        - `latents`, the initial noise (B, C, T', h, w); else drawn from `seed`
          (`initial_noise`, one draw for all with `shared_noise`);
        - `step`, the sampler's `FlowStep` (default: the scheduler's; Flow-GRPO passes its
          recording SDE step).

        The negative prompt and the reference video are encoded once for the whole call;
        with `batch_size` the captions are encoded, denoised and decoded that many at a
        time (less memory, the same videos). `timings` receives text_encode, vae_encode,
        denoise and vae_decode seconds. Runs under the caller's grad mode (the encoders and
        the VAE never record gradients).
        """
        s = replace(settings or RenderSettings(), **overrides)
        # 1. inputs
        self.check_inputs(captions, conditioning, s)
        if conditioning is None:
            # 2. what every chunk shares; the captions are encoded chunk by chunk
            negative_embeds, reference = self._shared_conditioning(s, reference_frames, timings)
            total = len(captions)
        else:
            negative_embeds, reference = conditioning.negative_embeds, conditioning.reference
            total = conditioning.prompt_embeds.shape[0]
        # 3. initial noise
        if latents is None:
            latents = self.initial_noise(
                total, s.num_frames, s.height, s.width, seed, shared=shared_noise
            )
        if latents.shape[0] != total:
            raise ValueError(f"{latents.shape[0]} initial latents for {total} videos")
        outputs = []
        chunk = batch_size or total
        for start in range(0, total, chunk):
            if captions is not None:
                prompt_embeds = self._encode_captions(captions[start : start + chunk], timings)
            else:
                prompt_embeds = conditioning.prompt_embeds[start : start + chunk]
            # 4. the denoising loop
            with maybe_stage(timings, "denoise"):
                clean = self.denoise(
                    latents[start : start + chunk],
                    prompt_embeds,
                    negative_embeds,
                    settings=s,
                    reference=reference,
                    step=step,
                    progress=progress,
                )
            # 5. decoding
            if output_type == "latent":
                outputs.append(clean)
            else:
                with (
                    maybe_stage(timings, "vae_decode"),
                    self.vae_tiles(s.vae_tiling),
                    torch.no_grad(),
                    torch.autocast(self.device.type, enabled=False),
                ):
                    outputs.append(video_to_uint8(self.decode_latents(clean)))
        return torch.cat(outputs)

    @torch.no_grad()
    def render(self, captions: Sequence[str], **kwargs: Any) -> torch.Tensor:
        """The sampler (`__call__`) without gradients: uint8 (B, num_frames, height,
        width, 3)."""
        return self(captions, output_type="uint8", **kwargs)

    @torch.no_grad()
    def generate_latents(self, captions: Sequence[str], **kwargs: Any) -> torch.Tensor:
        """`render` up to (and excluding) decoding: the clean latents (B, C, T', h, w)."""
        return self(captions, output_type="latent", **kwargs)


def check_weights(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: no config.json; {EXPECTED_LAYOUT}")
    if not any(f.name.endswith(_WEIGHT_SUFFIXES) for f in folder.iterdir()):
        raise CheckpointError(f"{folder}: no weights (*.safetensors or *.bin); {EXPECTED_LAYOUT}")


def _scheduler_class(folder: Path) -> type[SchedulerMixin]:
    import diffusers

    config_file = folder / "scheduler_config.json"
    try:
        name = json.loads(config_file.read_text())["_class_name"]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{config_file}: cannot read the scheduler class ({exc}); {EXPECTED_LAYOUT}"
        ) from exc
    scheduler_cls = getattr(diffusers, name, None)
    if not (isinstance(scheduler_cls, type) and issubclass(scheduler_cls, SchedulerMixin)):
        raise CheckpointError(f"{config_file}: {name!r} is not a diffusers scheduler")
    return scheduler_cls
