"""The toy-world video-text embedder: a small contrastive frame/text encoder (CLIP-style).

No CLIP weights can be downloaded for the toy world, so its CLIP-V / CLIP-T / FVD-toy
metrics and the Joint-GRPO video rewards use this model, trained on toy-world data with
`vans train embedder`. It implements `VideoTextEmbedder`:

* frames: resized (cover + center crop) to `image_size`, then a 4-stage strided CNN over
  the pixels plus two coordinate channels, average-pooled: the features say what is where
  (left/right, on top, in a bin) without a position-specific head;
* texts: lowercase alphanumeric words over a vocabulary built from the training captions
  (`<unk>` for the rest), then a small pre-norm transformer (word order matters: "the red
  circle hits the blue circle" is not "the blue circle hits the red circle"), mean-pooled.

A directory written by `save_pretrained` holds `vans_embedder.json` (kind, config,
vocabulary, training metrics) and `model.safetensors`.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from vans.data.video import resize_center_crop
from vans.evaluation.embedders import EmbedderError
from vans.io import atomic_dir

KIND = "toyworld"
CONFIG_FILE = "vans_embedder.json"
WEIGHTS_FILE = "model.safetensors"
PAD, UNK, BOS = "<pad>", "<unk>", "<bos>"
SPECIAL_TOKENS = (PAD, UNK, BOS)
# Frames per forward pass when embedding: bounds activation memory for long videos.
_FRAME_CHUNK = 256


class ToyEmbedderError(EmbedderError):
    """An embedder directory is missing, incomplete, or not a toy-world embedder."""


@dataclass(frozen=True)
class ToyEmbedderConfig:
    """Architecture of the toy-world embedder (stored in `vans_embedder.json`)."""

    embed_dim: int = 128
    """Size of the shared embedding space."""
    image_size: int = 64
    """Frames are resized and center-cropped to image_size x image_size."""
    channels: tuple[int, ...] = (16, 32, 64, 128)
    """Output channels of the CNN stages; each stage halves the resolution."""
    text_width: int = 128
    """Width of the word embeddings and the text transformer."""
    text_layers: int = 2
    """Transformer layers of the text encoder."""
    text_heads: int = 4
    """Attention heads per text layer."""
    max_words: int = 32
    """Words kept per text (longer texts are truncated); a <bos> token is prepended."""

    def __post_init__(self) -> None:
        size, stages = self.image_size, len(self.channels)
        if stages < 1 or size % 2**stages:
            raise ToyEmbedderError(
                f"image_size ({size}) must be divisible by 2**len(channels) ({2**stages})"
            )
        if any(c < 8 or c % 8 for c in self.channels):
            raise ToyEmbedderError(
                f"channels must be multiples of 8 (GroupNorm groups), got {list(self.channels)}"
            )
        if self.text_width % self.text_heads:
            raise ToyEmbedderError(
                f"text_width ({self.text_width}) must be divisible by text_heads "
                f"({self.text_heads})"
            )
        for name in ("embed_dim", "text_layers", "max_words"):
            if getattr(self, name) < 1:
                raise ToyEmbedderError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> ToyEmbedderConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ToyEmbedderError(f"{source}: unknown config fields {unknown}")
        data = dict(data)
        if "channels" in data:
            data["channels"] = tuple(data["channels"])
        return cls(**data)


def words(text: str) -> list[str]:
    """Lowercase alphanumeric words of `text` (punctuation dropped)."""
    return re.findall(r"[a-z0-9]+", text.lower())


def build_vocab(texts: Iterable[str]) -> list[str]:
    """Special tokens, then every word of `texts` by falling count (ties alphabetical)."""
    counts = Counter(w for text in texts for w in words(text))
    return [*SPECIAL_TOKENS, *sorted(counts, key=lambda w: (-counts[w], w))]


class FrameEncoder(nn.Module):
    """(N, 3, S, S) normalised frames -> (N, D) (not yet unit-normalised).

    Two coordinate channels are appended to the pixels and the last feature map is
    average-pooled: features say *what is where* (CoordConv), while the pooled head has far
    fewer weights than a flattened one and generalises to positions unseen in training.
    """

    def __init__(self, config: ToyEmbedderConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 3 + 2
        for stage, out in enumerate(config.channels):
            # GroupNorm, not BatchNorm: an embedding never depends on the rest of the batch.
            layers += [
                nn.Conv2d(width, out, 3, stride=2, padding=1),
                nn.GroupNorm(8, out),
                nn.GELU(),
            ]
            if stage > 0:  # not in the highest-resolution stage, where it would dominate the cost
                layers += [nn.Conv2d(out, out, 3, padding=1), nn.GroupNorm(8, out), nn.GELU()]
            width = out
        self.stages = nn.Sequential(*layers)
        self.proj = nn.Linear(width, config.embed_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        n, _, h, w = pixels.shape
        grid = {"device": pixels.device, "dtype": pixels.dtype}
        ys = torch.linspace(-1, 1, h, **grid).view(1, 1, h, 1).expand(n, 1, h, w)
        xs = torch.linspace(-1, 1, w, **grid).view(1, 1, 1, w).expand(n, 1, h, w)
        features = self.stages(torch.cat([pixels, ys, xs], dim=1))
        return self.proj(features.mean(dim=(2, 3)))


class TextEncoder(nn.Module):
    """(N, L) token ids with a validity mask -> (N, D) (not yet unit-normalised)."""

    def __init__(self, config: ToyEmbedderConfig, vocab_size: int) -> None:
        super().__init__()
        width = config.text_width
        self.tokens = nn.Embedding(vocab_size, width)
        self.positions = nn.Embedding(config.max_words + 1, width)
        layer = nn.TransformerEncoderLayer(
            width,
            config.text_heads,
            dim_feedforward=4 * width,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # No nested tensors: padded and unpadded texts then take the same code path.
        self.layers = nn.TransformerEncoder(layer, config.text_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, config.embed_dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.tokens(ids) + self.positions(positions)
        x = self.norm(self.layers(x, src_key_padding_mask=~mask))
        weights = mask.unsqueeze(-1).to(x.dtype)
        return self.proj((x * weights).sum(1) / weights.sum(1))


class ToyClipModel(nn.Module):
    """Frame and text encoders into one unit-norm space, with a learnable temperature."""

    def __init__(self, config: ToyEmbedderConfig, vocab_size: int) -> None:
        super().__init__()
        self.frames = FrameEncoder(config)
        self.texts = TextEncoder(config, vocab_size)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.frames(pixels), dim=-1)

    def encode_texts(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.texts(ids, mask), dim=-1)

    def scale(self) -> torch.Tensor:
        """exp(logit_scale) capped at 100, as in CLIP, so the logits cannot blow up."""
        return self.logit_scale.exp().clamp(max=100.0)


class ToyEmbedder:
    """`VideoTextEmbedder` for the toy world; deterministic (eval mode, no dropout)."""

    name = KIND

    def __init__(
        self,
        model: ToyClipModel,
        vocab: Sequence[str],
        config: ToyEmbedderConfig,
        metrics: dict[str, Any] | None = None,
    ) -> None:
        self.model = model.eval()
        self.vocab = list(vocab)
        self.config = config
        self.metrics = dict(metrics or {})
        """Training figures saved with the model (held-out retrieval, sample counts, ...)."""
        self._ids = {word: i for i, word in enumerate(self.vocab)}

    @classmethod
    def untrained(
        cls, vocab: Sequence[str], config: ToyEmbedderConfig | None = None
    ) -> ToyEmbedder:
        """A randomly initialised embedder (seed it with torch.manual_seed beforehand)."""
        config = config or ToyEmbedderConfig()
        return cls(ToyClipModel(config, len(vocab)), vocab, config)

    def pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> float32 (N, 3, S, S) in [-1, 1], resized with torch."""
        size = self.config.image_size
        frames = resize_center_crop(frames, (size, size))
        return frames.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> (ids (N, L), mask (N, L)); each row is <bos> then up to max_words words."""
        unk, bos = self._ids[UNK], self._ids[BOS]
        rows = [
            [bos, *(self._ids.get(w, unk) for w in words(t)[: self.config.max_words])]
            for t in texts
        ]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self._ids[PAD], dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = True
        return ids, mask

    @torch.inference_mode()
    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) RGB frames of any size -> float32 (N, D), unit rows."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
            raise ValueError(
                f"frames must be uint8 (N, H, W, 3), got {frames.dtype} {tuple(frames.shape)}"
            )
        if frames.shape[0] == 0:
            return torch.zeros((0, self.config.embed_dim))
        return torch.cat(
            [self.model.encode_frames(self.pixels(c)) for c in frames.split(_FRAME_CHUNK)]
        )

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """N strings -> float32 (N, D), unit rows. Empty strings embed <bos> alone."""
        if isinstance(texts, str):
            raise TypeError("embed_texts takes a sequence of strings, not one string")
        if len(texts) == 0:
            return torch.zeros((0, self.config.embed_dim))
        return self.model.encode_texts(*self.tokenize(texts))

    def save_pretrained(self, path: str | Path) -> Path:
        """Write `vans_embedder.json` and `model.safetensors` into `path`, atomically.

        An existing `path` is replaced only if it is empty or an embedder directory, so a
        mistyped `--out` can never wipe unrelated files.
        """
        path = Path(path)
        if path.exists() and (
            not path.is_dir() or (any(path.iterdir()) and not (path / CONFIG_FILE).exists())
        ):
            raise ToyEmbedderError(
                f"{path}: exists and is not an embedder directory; refusing to overwrite it"
            )
        meta = {
            "kind": KIND,
            "config": asdict(self.config),
            "vocab": self.vocab,
            "metrics": self.metrics,
        }
        with atomic_dir(path) as tmp:
            state = {k: v.contiguous() for k, v in self.model.state_dict().items()}
            save_file(state, tmp / WEIGHTS_FILE)
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ToyEmbedder:
        """Load a directory written by `save_pretrained`; errors name what is wrong."""
        path = Path(path)
        meta = read_embedder_meta(path)
        if meta.get("kind") != KIND:
            raise ToyEmbedderError(
                f"{path / CONFIG_FILE}: kind is {meta.get('kind')!r}, expected {KIND!r}"
            )
        source = str(path / CONFIG_FILE)
        vocab = meta.get("vocab")
        if not isinstance(vocab, list) or list(vocab[: len(SPECIAL_TOKENS)]) != list(
            SPECIAL_TOKENS
        ):
            raise ToyEmbedderError(
                f"{source}: 'vocab' must be a list starting with {SPECIAL_TOKENS}"
            )
        if not isinstance(meta.get("config"), dict):
            raise ToyEmbedderError(f"{source}: 'config' must be a mapping")
        config = ToyEmbedderConfig.from_dict(meta["config"], source)
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise ToyEmbedderError(f"{path}: missing {WEIGHTS_FILE}")
        try:
            state = load_file(weights)
        except Exception as exc:  # safetensors raises its own untyped errors for bad files
            raise ToyEmbedderError(f"{weights}: cannot read weights: {exc}") from exc
        model = ToyClipModel(config, len(vocab))
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:  # names missing / unexpected keys and shape mismatches
            details = " ".join(line.strip() for line in str(exc).splitlines()[1:])
            raise ToyEmbedderError(f"{weights}: weights do not fit {source}: {details}") from exc
        return cls(model, vocab, config, meta.get("metrics"))


def read_embedder_meta(path: str | Path) -> dict[str, Any]:
    """The parsed `vans_embedder.json` of an embedder directory, with clear errors."""
    path = Path(path)
    if not path.exists():
        raise ToyEmbedderError(f"{path}: no such embedder directory")
    if not path.is_dir():
        raise ToyEmbedderError(f"{path}: is a file; an embedder is a directory")
    file = path / CONFIG_FILE
    if not file.is_file():
        raise ToyEmbedderError(
            f"{path}: not an embedder directory (no {CONFIG_FILE}); "
            "train one with `vans train embedder --data DIR --out DIR`"
        )
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ToyEmbedderError(f"{file}: cannot read: {exc}") from exc
    if not isinstance(meta, dict):
        raise ToyEmbedderError(f"{file}: must hold a JSON object, got {type(meta).__name__}")
    return meta
