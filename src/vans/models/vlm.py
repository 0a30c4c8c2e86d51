"""The VANS reasoner: Qwen2.5-VL (transformers) reading a video and a question.

It writes `[Think]reasoning[/Think][Ans]caption of the next event[/Ans]` (see
`vans.models.prompting`). Besides plain inference it offers what GRPO needs: groups of
sampled answers and the per-token log-probabilities of given answers, with the video
passed through the vision tower in the same (differentiable) computation.

Sharing one video across many sequences. Every sequence that shows a video needs the
vision tower's output for it in place of its `<|video_pad|>` tokens. Feeding
`pixel_values_videos` once per sequence (what transformers' processor does for a batch)
runs the tower on a copy of the video per question. Instead the reasoner runs the tower
once per distinct video (`Qwen2_5_VLModel.get_video_features`) and hands the result to the
model as `mm_encoder_outputs`, one reference per sequence (transformers 5.x accepts
pre-computed encoder outputs and places them in row order). Within `generate`, transformers
5.23 encodes before it expands the batch for `num_return_sequences`, so G samples of one
prompt also share the encoding. mRoPE positions still come from `input_ids`,
`mm_token_type_ids`, `video_grid_thw` and `second_per_grid_ts`, one grid row per sequence.
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoTokenizer,
    DynamicCache,
    GenerationConfig,
    PreTrainedTokenizerBase,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vans.errors import one_line
from vans.models.errors import LOAD_ERRORS, CheckpointError
from vans.models.prompting import (
    END_OF_TEXT,
    IM_END,
    IMAGE_PAD,
    SYSTEM_PROMPT,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
    ParsedOutput,
    build_prompt,
    num_video_tokens,
    parse_output,
)
from vans.models.video_processing import (
    VIDEO_MAX_PIXELS,
    VIDEO_MIN_PIXELS,
    preprocess_video,
    second_per_grid_t,
)

SETTINGS_FILE = "vans_reasoner.json"
"""Video settings of a saved reasoner (fps, pixel bounds, system prompt), next to config.json."""
LORA_DIR = "lora"
"""Sub-directory of a saved reasoner holding its LoRA adapter (peft format)."""

LORA_TARGETS = (
    r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
)
"""peft `target_modules` regex: q/k/v/o and gate/up/down of the language model's layers only.
The vision tower (`model.visual`) has gate/up/down projections too; this pattern cannot
match them (peft full-matches it against module names)."""

_VIDEO_TYPE = 2  # mm_token_type_ids: 0 text, 1 image, 2 video


TINY_TEXT: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,  # head_dim 16
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    # mRoPE splits head_dim / 2 = 8 rotary frequencies into time, height, width.
    "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
}
"""Language-model sizes of `Reasoner.tiny`."""

TINY_VISION: dict[str, Any] = {
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "out_hidden_size": 64,  # = text hidden size
    "patch_size": 14,
    "temporal_patch_size": 2,
    "spatial_merge_size": 2,
    # Windows of 56 pixels = 2x2 merged tokens; block 1 attends globally, block 0 in windows,
    # like the real model's mix.
    "window_size": 56,
    "fullatt_block_indexes": [1],
    "tokens_per_second": 2,  # as Qwen2.5-VL-3B-Instruct
}
"""Vision-tower sizes of `Reasoner.tiny`."""

TOY_PIXELS = 64 * 64
"""The toy reasoner's pixel budget per frame: a toy frame at its native 64x64, cut into 8x8
patches of 8 pixels (the toy tower's `patch_size`) merged into 4x4 = 16 visual tokens per 2
frames, so an 8-pixel object covers a patch of its own. The tiny default (14-pixel patches,
at most 56x56) gives a whole frame 4 tokens and an object a fraction of one; upscaling to
112x112 for 14-pixel patches sees the same but costs 3x more in the tower."""

REASONER_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"min_pixels": 28 * 28, "max_pixels": 56 * 56},
    "toy": {
        "text": {
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,  # head_dim 32
            "num_key_value_heads": 2,
            "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]},
        },
        "vision": {
            "depth": 3,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 2,
            "out_hidden_size": 128,
            "patch_size": 8,
            "window_size": 64,
            "fullatt_block_indexes": [2],
        },
        "min_pixels": TOY_PIXELS,
        "max_pixels": TOY_PIXELS,
    },
}
"""`Reasoner.random` sizes of `init_tiny`'s presets: "tiny" is the smallest that runs
(tests); "toy" is big enough to learn to see the toy world (`vans train base-reasoner`):
about 1.0M parameters and `TOY_PIXELS` per frame. The toy presets also watch at 2 fps
(`checkpoint.TOY_SETTINGS`): 9 frames of a 4-second clip, where 1 fps gives 2 time steps
of temporal patches, too few to tell a direction."""
REASONER_PRESETS["toy-base"] = REASONER_PRESETS["toy"]  # the renderer base's preset name


@dataclass
class SamplingConfig:
    """How the reasoner samples an answer.

    The papers do not state their sampling values; the defaults are plain ancestral sampling
    (temperature 1, no top-p/top-k truncation), which is also what GRPO's ratio and KL
    assume. All other sampling options of the checkpoint's `generation_config.json` (e.g.
    Qwen2.5-VL-Instruct's repetition_penalty 1.05) are switched off.
    """

    temperature: float = 1.0
    """Softmax temperature (> 0); ignored when `do_sample` is False."""
    top_p: float = 1.0
    """Nucleus sampling mass in (0, 1]; 1 keeps every token."""
    top_k: int | None = None
    """Keep only the k most likely tokens; None or 0 keeps all."""
    max_new_tokens: int = 256
    """Most tokens per answer (the end token included)."""
    do_sample: bool = True
    """False: greedy decoding (all samples of a prompt are then identical)."""

    def __post_init__(self) -> None:
        if self.do_sample and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 or None, got {self.top_k}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class Completion:
    """One generated answer."""

    text: str
    """Decoded answer, special tokens removed."""
    token_ids: torch.Tensor
    """The generated token ids (LongTensor (L,), on CPU), the end token included if one was
    written, no padding. Pass them to `completion_logprobs` to score exactly what was sampled
    (re-tokenising `text` can give other tokens)."""
    finished: bool
    """True if the answer ended with an end token, False if cut at max_new_tokens."""


class Reasoner:
    """Qwen2.5-VL with its tokenizer and video settings.

    `model` is always the `Qwen2_5_VLForConditionalGeneration`; with LoRA its linear layers
    carry the adapters in place and `peft_model` is the peft wrapper used to save them.
    """

    def __init__(
        self,
        model: Qwen2_5_VLForConditionalGeneration,
        tokenizer: PreTrainedTokenizerBase,
        *,
        fps: float = 1.0,
        min_pixels: int = VIDEO_MIN_PIXELS,
        max_pixels: int = VIDEO_MAX_PIXELS,
        system_prompt: str = SYSTEM_PROMPT,
        peft_model: Any = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.fps = float(fps)
        """Frame rate of the frames the caller passes (VANS: 1); sets mRoPE's time scale."""
        self.min_pixels = int(min_pixels)
        self.max_pixels = int(max_pixels)
        self.system_prompt = system_prompt
        self.peft_model = peft_model
        second_per_grid_t(self.fps)  # validates fps
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {min_pixels} > max_pixels {max_pixels}")
        ids = {
            tok: tokenizer.convert_tokens_to_ids(tok) for tok in (IM_END, END_OF_TEXT, VIDEO_PAD)
        }
        missing = [tok for tok, i in ids.items() if i is None or i == tokenizer.unk_token_id]
        if missing:
            raise ValueError(f"the tokenizer lacks Qwen's special tokens {missing}")
        self.im_end_id = ids[IM_END]
        self.pad_id = ids[END_OF_TEXT]
        self.video_token_id = model.config.video_token_id
        if ids[VIDEO_PAD] != self.video_token_id:
            raise ValueError(
                f"tokenizer's {VIDEO_PAD} is id {ids[VIDEO_PAD]}, the model expects "
                f"{self.video_token_id}"
            )
        unknown = (None, tokenizer.unk_token_id)
        self.placeholder_ids = sorted(
            {
                i
                for tok in (VIDEO_PAD, IMAGE_PAD, VISION_START, VISION_END)
                if (i := tokenizer.convert_tokens_to_ids(tok)) not in unknown
            }
        )
        """Vision placeholder tokens the reasoner never writes: sampling suppresses them and
        log-probabilities exclude them, so the distribution scored for training is the one
        sampled from. (A sampled `<|video_pad|>` would make the next forward expect one more
        video feature than the video has.)"""
        vision = model.config.vision_config
        self.patch_size = vision.patch_size
        self.temporal_patch_size = vision.temporal_patch_size
        self.merge_size = vision.spatial_merge_size

    # ------------------------------------------------------------------ construction

    @classmethod
    def tiny(
        cls,
        tokenizer: PreTrainedTokenizerBase,
        *,
        seed: int = 0,
        fps: float = 1.0,
        min_pixels: int = 28 * 28,
        max_pixels: int = 56 * 56,
    ) -> Reasoner:
        """A tiny, randomly initialised Qwen2.5-VL for tests and smoke runs (~0.2M parameters
        plus the embeddings). Frames are resized to at most 56x56 pixels by default."""
        return cls.random(
            tokenizer, seed=seed, fps=fps, min_pixels=min_pixels, max_pixels=max_pixels
        )

    @classmethod
    def random(
        cls,
        tokenizer: PreTrainedTokenizerBase,
        *,
        text: dict[str, Any] | None = None,
        vision: dict[str, Any] | None = None,
        seed: int = 0,
        fps: float = 1.0,
        min_pixels: int = VIDEO_MIN_PIXELS,
        max_pixels: int = VIDEO_MAX_PIXELS,
    ) -> Reasoner:
        """A randomly initialised Qwen2.5-VL whose sizes are `TINY_TEXT` / `TINY_VISION`
        updated with `text` / `vision` (vocabulary and special-token ids come from the
        tokenizer); see `from_config`."""
        text_ids, ids = _special_token_ids(tokenizer)
        config = Qwen2_5_VLConfig(
            text_config={**TINY_TEXT, **(text or {}), "vocab_size": len(tokenizer), **text_ids},
            vision_config={**TINY_VISION, **(vision or {})},
            **ids,
        )
        return cls.from_config(
            config, tokenizer, seed=seed, fps=fps, min_pixels=min_pixels, max_pixels=max_pixels
        )

    @classmethod
    def from_config(
        cls,
        config: Qwen2_5_VLConfig,
        tokenizer: PreTrainedTokenizerBase,
        *,
        seed: int = 0,
        fps: float = 1.0,
        min_pixels: int = VIDEO_MIN_PIXELS,
        max_pixels: int = VIDEO_MAX_PIXELS,
    ) -> Reasoner:
        """A randomly initialised Qwen2.5-VL of `config`'s sizes (a published config.json
        too: `vans.models.paper`), on the current default device and dtype, so that under
        `torch.device("meta")` nothing is allocated. The special-token ids are set to the
        tokenizer's, whose ids must all fit the vocabulary. The same seed gives the same
        weights; the CPU's global RNG is left untouched."""
        text_ids, ids = _special_token_ids(tokenizer)
        if len(tokenizer) > config.text_config.vocab_size:
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} tokens, the model's vocabulary "
                f"{config.text_config.vocab_size}"
            )
        config = copy.deepcopy(config)
        for name, value in text_ids.items():
            setattr(config.text_config, name, value)
        for name, value in ids.items():
            setattr(config, name, value)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Qwen2_5_VLForConditionalGeneration(config)
        # Stop at <|im_end|> or <|endoftext|>, as Qwen2.5-VL-Instruct's generation_config.json.
        model.generation_config = GenerationConfig(
            bos_token_id=text_ids["bos_token_id"],
            eos_token_id=[text_ids["eos_token_id"], text_ids["pad_token_id"]],
            pad_token_id=text_ids["pad_token_id"],
        )
        model.eval()
        return cls(model, tokenizer, fps=fps, min_pixels=min_pixels, max_pixels=max_pixels)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        lora: str | Path | None = None,
        trainable_lora: bool = False,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        fps: float | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
    ) -> Reasoner:
        """Load a reasoner from a local directory (never the network).

        `path` holds a transformers Qwen2.5-VL checkpoint and its tokenizer (a saved
        reasoner, or Qwen2.5-VL-3B-Instruct as downloaded). `lora`, if given, is a peft
        adapter directory put on top (frozen unless `trainable_lora`). Video settings come
        from the arguments, else from `vans_reasoner.json` if the directory has one, else
        the defaults. Raises CheckpointError if a part is missing or unreadable.
        """
        path = Path(path)
        check_model_dir(path)
        try:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{path}: cannot read config.json: {exc}") from exc
        if getattr(config, "model_type", None) != "qwen2_5_vl":
            raise CheckpointError(
                f"{path}: a {getattr(config, 'model_type', '?')!r} checkpoint, the reasoner "
                "needs Qwen2.5-VL ('qwen2_5_vl')"
            )
        try:
            model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                path, local_files_only=True, dtype=dtype, output_loading_info=True
            )
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except LOAD_ERRORS as exc:
            raise CheckpointError(f"{path}: cannot load the reasoner: {one_line(exc)}") from exc
        if info.get("missing_keys"):
            missing = sorted(info["missing_keys"])
            raise CheckpointError(
                f"{path}: the weights lack {len(missing)} tensors (e.g. {missing[:3]}); "
                "the checkpoint is incomplete"
            )
        settings = _read_settings(path)
        for key, value in (("fps", fps), ("min_pixels", min_pixels), ("max_pixels", max_pixels)):
            if value is not None:
                settings[key] = value
        model.to(device)
        model.eval()
        try:
            reasoner = cls(model, tokenizer, **settings)
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
        if lora is not None:
            reasoner._load_lora(Path(lora), trainable=trainable_lora)
        return reasoner

    def _load_lora(self, path: Path, *, trainable: bool) -> None:
        from peft import PeftModel

        if not (path / "adapter_config.json").is_file():
            raise CheckpointError(f"{path}: not a LoRA adapter directory (no adapter_config.json)")
        try:
            with _quiet_peft():
                self.peft_model = PeftModel.from_pretrained(
                    self.model, path, is_trainable=trainable
                )
        except LOAD_ERRORS as exc:
            raise CheckpointError(f"{path}: cannot load the LoRA adapter: {one_line(exc)}") from exc

    def save_pretrained(self, path: str | Path) -> Path:
        """Write model (safetensors), tokenizer and video settings to `path`; a LoRA adapter
        goes to `path/lora`, the model weights without it (the adapter is not merged)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state_dict = None
        if self.peft_model is not None:
            # peft wraps each adapted Linear: "...q_proj.weight" becomes
            # "...q_proj.base_layer.weight" plus "...q_proj.lora_A.default.weight" etc.
            state_dict = {
                key.replace(".base_layer.", "."): value
                for key, value in self.model.state_dict().items()
                if ".lora_" not in key
            }
        self.model.save_pretrained(path, state_dict=state_dict)
        self.tokenizer.save_pretrained(path)
        settings = {
            "fps": self.fps,
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "system_prompt": self.system_prompt,
        }
        (path / SETTINGS_FILE).write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
        if self.peft_model is not None:
            self.peft_model.save_pretrained(path / LORA_DIR)
        return path

    def add_lora(self, r: int = 8, alpha: int = 32, dropout: float = 0.05) -> Any:
        """Put LoRA adapters on q/k/v/o/gate/up/down of the language model (paper: r 8,
        alpha 32, dropout 0.05); the vision tower and everything else is frozen. Returns the
        peft model (also kept as `peft_model`)."""
        from peft import LoraConfig, get_peft_model

        if self.peft_model is not None:
            raise ValueError("the reasoner already has a LoRA adapter")
        config = LoraConfig(
            r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGETS, bias="none"
        )
        was_training = self.model.training
        with warnings.catch_warnings():
            # peft 0.21 calls a transformers method deprecated in 5.x; nothing for us to do.
            warnings.filterwarnings(
                "ignore", message=".*is_gradient_checkpointing", category=FutureWarning
            )
            self.peft_model = get_peft_model(self.model, config)
        # New modules start in training mode: without this, LoRA dropout would be active in a
        # model that reports eval mode.
        self.model.train(was_training)
        return self.peft_model

    def unfreeze_output_head(self) -> None:
        """Make the language model's output head and final norm trainable (in full, saved
        with the model weights). For tiny random models only: through their frozen random
        head LoRA alone cannot make a confident prediction. With tied embeddings the input
        embeddings train too."""
        self.model.lm_head.requires_grad_(True)
        self.model.model.language_model.norm.requires_grad_(True)

    # ------------------------------------------------------------------ inputs

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def video_inputs(
        self, frames: torch.Tensor, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`pixel_values_videos` (N, 1176) and `video_grid_thw` (1, 3) for uint8 frames
        (T, H, W, 3), in the model's dtype, on `device` (default: the model's)."""
        pixels, grid = preprocess_video(
            frames.cpu(),
            patch_size=self.patch_size,
            temporal_patch_size=self.temporal_patch_size,
            merge_size=self.merge_size,
            min_pixels=self.min_pixels,
            max_pixels=self.max_pixels,
        )
        device = self.device if device is None else device
        return pixels.to(device, self.model.dtype), grid.to(device)

    def prompt_ids(self, question: str, grid_thw: torch.Tensor) -> list[int]:
        """Token ids of the chat prompt for a video of grid `grid_thw` and a question."""
        tokens = num_video_tokens(grid_thw.reshape(-1).tolist(), self.merge_size)
        text = build_prompt(question, tokens, self.system_prompt)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if (found := ids.count(self.video_token_id)) != tokens:
            raise ValueError(
                f"the prompt has {found} video tokens instead of {tokens}: the question must "
                f"not contain {VIDEO_PAD} and the tokenizer must keep it as one token"
            )
        return ids

    def prepare(
        self,
        frames_list: Sequence[torch.Tensor],
        questions: Sequence[str],
        fps: float | Sequence[float] | None = None,
        *,
        completions: Sequence[str | Sequence[int] | torch.Tensor] | None = None,
        device: torch.device | str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Model inputs for one video per question, left-padded for batched generation.

        Frames are uint8 (T, H, W, 3) already sampled at `fps` (default `self.fps`; one rate
        for all videos or one per video); they are not resampled. Returns input_ids,
        attention_mask, mm_token_type_ids (needed for mRoPE), pixel_values_videos,
        video_grid_thw and second_per_grid_ts, ready for `model(**inputs)` or
        `model.generate(**inputs)`, on `device` (default: the model's).

        With `completions` (one answer per row, as in `sequence_logprobs`: a string gets
        `<|im_end|>` appended, token ids are taken as given) each row is
        `pad.. prompt | completion ..pad`, every completion starting at the same column:
        the teacher-forcing input of supervised fine-tuning.
        """
        if len(frames_list) != len(questions):
            raise ValueError(f"{len(frames_list)} videos for {len(questions)} questions")
        if completions is not None and len(completions) != len(questions):
            raise ValueError(f"{len(completions)} completions for {len(questions)} questions")
        device = self.device if device is None else device
        videos = [self.video_inputs(f, device) for f in frames_list]
        prompts = [self.prompt_ids(q, grid) for q, (_, grid) in zip(questions, videos, strict=True)]
        answers = [[] for _ in prompts] if completions is None else completions
        input_ids, attention_mask = self._pad(
            prompts, [self._completion_ids(a) for a in answers], device
        )
        if fps is None or isinstance(fps, int | float):
            rates = [fps or self.fps] * len(videos)
        elif len(fps) != len(videos):
            raise ValueError(f"{len(fps)} frame rates for {len(videos)} videos")
        else:
            rates = list(fps)
        spg = [second_per_grid_t(r, self.temporal_patch_size) for r in rates]
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mm_token_type_ids": self._token_types(input_ids),
            "pixel_values_videos": torch.cat([p for p, _ in videos]),
            "video_grid_thw": torch.cat([g for _, g in videos]),
            "second_per_grid_ts": torch.tensor(spg, dtype=torch.float32, device=device),
        }

    def _pad(
        self,
        prompts: Sequence[Sequence[int]],
        completions: Sequence[Sequence[int]],
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows `pad.. prompt | completion ..pad`: prompts left-padded to a common length,
        completions right-padded, so every completion starts at the same column."""
        p_len = max(len(p) for p in prompts)
        c_len = max((len(c) for c in completions), default=0)
        ids, mask = [], []
        for p, c in zip(prompts, completions, strict=True):
            left, right = p_len - len(p), c_len - len(c)
            ids.append([self.pad_id] * left + list(p) + list(c) + [self.pad_id] * right)
            mask.append([0] * left + [1] * (len(p) + len(c)) + [0] * right)
        device = self.device if device is None else device
        return torch.tensor(ids, device=device), torch.tensor(mask, device=device)

    def _token_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        return (input_ids == self.video_token_id).to(torch.int32) * _VIDEO_TYPE

    def _encode_videos(
        self, frames_list: Sequence[torch.Tensor]
    ) -> tuple[list[int], list[torch.Tensor], list[torch.Tensor]]:
        """Run the vision tower once over every distinct video (the same tensor object counts
        once). Returns per row the index of its video, and per distinct video its grid (1, 3)
        and merged embeddings (tokens, hidden)."""
        index_of: dict[int, int] = {}
        rows, distinct = [], []
        for frames in frames_list:
            if id(frames) not in index_of:
                index_of[id(frames)] = len(distinct)
                distinct.append(frames)
            rows.append(index_of[id(frames)])
        inputs = [self.video_inputs(f) for f in distinct]
        grids = [g for _, g in inputs]
        out = self.model.model.get_video_features(
            torch.cat([p for p, _ in inputs]), torch.cat(grids), return_dict=True
        )
        return rows, grids, list(out.pooler_output)

    # ------------------------------------------------------------------ generation

    def generate_completions(
        self,
        frames: torch.Tensor,
        questions: Sequence[str],
        *,
        num_samples: int = 1,
        sampling: SamplingConfig | None = None,
        seed: int | None = None,
        fps: float | None = None,
    ) -> list[list[Completion]]:
        """`num_samples` answers to each question about one video: result[q][g].

        All questions and samples run as one batch; the vision tower encodes the video once
        and the language model reads each prompt once: the prompt but its last token is
        prefilled for the questions alone, the KV cache repeated for the samples, and
        decoding starts from the last prompt token of every sample (`_prefill`). Runs in
        eval mode without gradients (the mode is restored afterwards). With a seed the
        result is reproducible and the global RNG is left untouched.

        Seed contract: the samples draw the same random numbers, in the same order, as
        transformers' `generate(num_return_sequences=num_samples)` over the repeated
        prompts, so a seed gives the same answers as that (up to float round-off of the
        logits, which can only flip a draw that falls on a boundary of the distribution).
        """
        sampling = sampling or SamplingConfig()
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not questions:
            return []
        n_q = len(questions)
        # Greedy decoding gives every sample the same answer: decode once, copy.
        n_gen = num_samples if sampling.do_sample else 1
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), self._seeded(seed):
                _, grids, embeds = self._encode_videos([frames])
                prompts = [self.prompt_ids(q, grids[0]) for q in questions]
                input_ids, attention_mask = self._pad(prompts, [[] for _ in prompts])
                spg = second_per_grid_t(fps or self.fps, self.temporal_patch_size)
                cache = self._prefill(input_ids, attention_mask, grids[0], embeds[0], spg, n_gen)
                out = self.model.generate(
                    input_ids=input_ids.repeat_interleave(n_gen, dim=0),
                    attention_mask=attention_mask.repeat_interleave(n_gen, dim=0),
                    past_key_values=cache,
                    generation_config=self._generation_config(sampling, 1),
                )
        finally:
            self.model.train(was_training)
        generated = out[:, input_ids.shape[1] :].cpu()
        if sampling.do_sample:
            completions = [self._completion(row) for row in generated]
        else:  # one greedy answer per question, copied num_samples times
            completions = [self._completion(row) for row in generated for _ in range(num_samples)]
        return [completions[q * num_samples : (q + 1) * num_samples] for q in range(n_q)]

    def _prefill(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        grid: torch.Tensor,
        video_embeds: torch.Tensor,
        second_per_grid: float,
        num_samples: int,
    ) -> DynamicCache:
        """The KV cache of the prompts (N, L) but their last token, computed once for the N
        prompts and repeated `num_samples` times per prompt (rows of one prompt adjacent, as
        `generate` orders its return sequences). The video's 3D rotary offsets
        (`rope_deltas`, set by this forward) are repeated alike, so decoding continues every
        sample at its prompt's positions. The last token is left for `generate`, which needs
        at least one uncached token and samples the first answer token from its logits."""
        n = input_ids.shape[0]
        prefix = input_ids[:, :-1]
        cache = DynamicCache(config=self.model.config)
        self.model.model(  # the decoder without its head: the prefix needs no logits
            input_ids=prefix,
            attention_mask=attention_mask[:, :-1],
            mm_token_type_ids=self._token_types(prefix),
            video_grid_thw=grid.expand(n, -1),
            second_per_grid_ts=torch.full((n,), second_per_grid, device=self.device),
            mm_encoder_outputs={
                "video": BaseModelOutputWithPooling(pooler_output=[video_embeds] * n)
            },
            past_key_values=cache,
            use_cache=True,
        )
        cache.batch_repeat_interleave(num_samples)
        self.model.model.rope_deltas = self.model.model.rope_deltas.repeat_interleave(
            num_samples, dim=0
        )
        return cache

    def generate(
        self,
        frames: torch.Tensor,
        questions: Sequence[str],
        *,
        num_samples: int = 1,
        sampling: SamplingConfig | None = None,
        seed: int | None = None,
        fps: float | None = None,
    ) -> list[list[str]]:
        """Texts of `generate_completions`: result[q][g], special tokens removed."""
        groups = self.generate_completions(
            frames, questions, num_samples=num_samples, sampling=sampling, seed=seed, fps=fps
        )
        return [[c.text for c in group] for group in groups]

    def predict(
        self,
        frames: torch.Tensor,
        questions: Sequence[str],
        sampling: SamplingConfig | None = None,
        *,
        seed: int | None = None,
    ) -> list[ParsedOutput]:
        """One parsed answer per question about the video."""
        texts = self.generate(frames, questions, num_samples=1, sampling=sampling, seed=seed)
        return [parse_output(group[0]) for group in texts]

    def _generation_config(self, sampling: SamplingConfig, num_return: int) -> GenerationConfig:
        # Every option the checkpoint's generation_config.json could set for sampling is given
        # explicitly: transformers fills unset ones from the checkpoint's defaults.
        neutral = {
            "repetition_penalty": 1.0,
            "no_repeat_ngram_size": 0,
            "top_k": 0,
            "top_p": 1.0,
            "temperature": 1.0,
        }
        if sampling.do_sample:
            neutral |= {
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
                "top_k": sampling.top_k or 0,
            }
        return GenerationConfig(
            do_sample=sampling.do_sample,
            num_beams=1,
            num_return_sequences=num_return,
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=[self.im_end_id, self.pad_id],
            pad_token_id=self.pad_id,
            suppress_tokens=self.placeholder_ids,
            use_cache=True,
            **neutral,
        )

    def _completion(self, row: torch.Tensor) -> Completion:
        ends = ((row == self.im_end_id) | (row == self.pad_id)).nonzero()
        finished = len(ends) > 0
        ids = row[: int(ends[0]) + 1] if finished else row
        text = self.tokenizer.decode(ids.tolist(), skip_special_tokens=True)
        return Completion(text=text, token_ids=ids.clone(), finished=finished)

    @contextmanager
    def _seeded(self, seed: int | None) -> Iterator[None]:
        if seed is None:
            yield
            return
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    # ------------------------------------------------------------------ scoring

    def completion_logprobs(
        self,
        frames: torch.Tensor,
        question: str,
        completions: Sequence[str | Sequence[int] | torch.Tensor],
        *,
        temperature: float = 1.0,
        fps: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probabilities of answers to one question about one video.

        A string answer is tokenised and `<|im_end|>` appended; token ids (e.g.
        `Completion.token_ids`) are scored as given. The video goes through the vision
        tower once, inside this call, and all answers through the language model in one
        forward: gradients reach the LoRA adapters and, if trainable, the vision tower. No
        `torch.no_grad` here; the caller chooses (and chooses train/eval mode: LoRA dropout
        is active in train mode). Log-probs are those of softmax(logits / temperature), the
        distribution sampling uses before any top-p/top-k truncation.

        Returns `(logprobs, mask)`, both (G, L) with L the longest answer: float log-probs
        (0 at padding) and a bool mask of real tokens.
        """
        return self.sequence_logprobs(
            [frames] * len(completions),
            [question] * len(completions),
            completions,
            temperature=temperature,
            fps=fps,
        )

    def sequence_logprobs(
        self,
        frames_list: Sequence[torch.Tensor],
        questions: Sequence[str],
        completions: Sequence[str | Sequence[int] | torch.Tensor],
        *,
        temperature: float = 1.0,
        fps: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`completion_logprobs` for a batch of (video, question, answer) rows, e.g. an SFT
        batch (loss = -logprobs[mask].mean()). Rows passing the same frames tensor object
        share one run of the vision tower."""
        if not len(frames_list) == len(questions) == len(completions):
            raise ValueError(
                f"{len(frames_list)} videos, {len(questions)} questions, "
                f"{len(completions)} completions: need one of each per row"
            )
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        n = len(completions)
        if n == 0:
            empty = torch.zeros(0, 0, device=self.device)
            return empty, empty.bool()
        rows, grids, embeds = self._encode_videos(frames_list)
        prompts = [self.prompt_ids(q, grids[v]) for q, v in zip(questions, rows, strict=True)]
        answers = [self._completion_ids(c) for c in completions]
        input_ids, attention_mask = self._pad(prompts, answers)
        length = max(len(a) for a in answers)
        if length == 0:
            empty = torch.zeros(n, 0, device=self.device)
            return empty, empty.bool()
        spg = second_per_grid_t(fps or self.fps, self.temporal_patch_size)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            mm_token_type_ids=self._token_types(input_ids),
            video_grid_thw=torch.cat([grids[v] for v in rows]),
            second_per_grid_ts=torch.full((n,), spg, device=self.device),
            mm_encoder_outputs={
                "video": BaseModelOutputWithPooling(pooler_output=[embeds[v] for v in rows])
            },
            use_cache=False,
            # Answers fill the last `length` columns; the logits predicting them sit one
            # column earlier.
            logits_to_keep=length + 1,
        )
        logits = out.logits[:, :-1].float() / temperature
        if self.placeholder_ids:
            never = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
            never[self.placeholder_ids] = True
            logits = logits.masked_fill(never, -torch.inf)
        targets = input_ids[:, -length:]
        mask = attention_mask[:, -length:].bool()
        token_logits = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        logprobs = token_logits - torch.logsumexp(logits, dim=-1)
        return logprobs.masked_fill(~mask, 0.0), mask

    def _completion_ids(self, completion: str | Sequence[int] | torch.Tensor) -> list[int]:
        if isinstance(completion, str):
            ids = self.tokenizer(completion, add_special_tokens=False)["input_ids"]
            return [*ids, self.im_end_id]
        if isinstance(completion, torch.Tensor):
            return [int(i) for i in completion.reshape(-1).tolist()]
        return [int(i) for i in completion]


@contextmanager
def _quiet_peft() -> Iterator[None]:
    """Hide a FutureWarning peft 0.21 triggers by calling a method transformers 5 deprecated."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing", category=FutureWarning
        )
        yield


def _special_token_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[dict[str, int], dict[str, int]]:
    """The ids of Qwen's special tokens in `tokenizer`, as a Qwen2.5-VL config names them:
    (those of its text config, those of the top-level config)."""
    tok_id = tokenizer.convert_tokens_to_ids
    needed = (END_OF_TEXT, IM_END, VIDEO_PAD, IMAGE_PAD, VISION_START, VISION_END)
    missing = [t for t in needed if tok_id(t) is None or tok_id(t) == tokenizer.unk_token_id]
    if missing:
        raise ValueError(f"the tokenizer lacks Qwen's special tokens {missing}")
    text = {
        "bos_token_id": tok_id(END_OF_TEXT),
        "eos_token_id": tok_id(IM_END),
        "pad_token_id": tok_id(END_OF_TEXT),
    }
    top = {
        "image_token_id": tok_id(IMAGE_PAD),
        "video_token_id": tok_id(VIDEO_PAD),
        "vision_start_token_id": tok_id(VISION_START),
        "vision_end_token_id": tok_id(VISION_END),
    }
    return text, top


def check_model_dir(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"{path}: no such model directory")
    if not path.is_dir():
        raise CheckpointError(f"{path}: is a file; a model checkpoint is a directory")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: not a model checkpoint (no config.json)")
    weights = [
        p
        for p in path.iterdir()
        if re.fullmatch(r"(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)", p.name)
    ]
    if not weights:
        raise CheckpointError(f"{path}: no model weights (model*.safetensors)")
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise CheckpointError(f"{path}: no tokenizer (tokenizer.json)")


def _read_settings(path: Path) -> dict[str, Any]:
    file = path / SETTINGS_FILE
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: cannot read reasoner settings: {exc}") from exc
    known = {"fps", "min_pixels", "max_pixels", "system_prompt"}
    if not isinstance(data, dict) or set(data) - known:
        raise CheckpointError(f"{file}: expected a mapping with keys among {sorted(known)}")
    return data
