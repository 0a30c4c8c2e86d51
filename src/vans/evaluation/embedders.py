"""One interface for every model that embeds video frames and texts into a shared space.

CLIP-V, CLIP-T, FVD-toy and the Joint-GRPO video rewards all go through a
`VideoTextEmbedder`, so a metric and the reward trained against it can never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from vans.data.video import resize_center_crop
from vans.errors import VansError
from vans.models.video_processing import CLIP_MEAN, CLIP_STD


@runtime_checkable
class VideoTextEmbedder(Protocol):
    """Embeds frames and texts into one space; every output row has unit L2 norm."""

    name: str
    """Short identifier written into reports, e.g. "clip-vit-b-32" or "toyworld"."""

    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) RGB frames of any size -> float32 (N, D), unit rows, on CPU."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """N strings -> float32 (N, D), unit rows, on CPU. Empty strings are allowed."""
        ...


class EmbedderError(VansError):
    """An embedder directory that cannot be loaded."""


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def clip_pixel_values(frames: torch.Tensor, image_size: int) -> torch.Tensor:
    """CLIP's preprocessing in plain torch: bicubic resize of the short side to
    `image_size`, center crop, scale to [0, 1], normalise with CLIP's mean and std.

    uint8 (N, H, W, 3) -> float32 (N, 3, image_size, image_size). Matches transformers'
    CLIPImageProcessor (PIL) up to interpolation round-off (tested).
    """
    square = resize_center_crop(frames, (image_size, image_size), mode="bicubic")
    x = square.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class CLIPEmbedder:
    """transformers' `CLIPModel` (the protocol uses ViT-B/32) loaded from a local directory.

    The directory is a standard CLIP checkpoint (config.json, weights, tokenizer files), e.g.
    a local copy of openai/clip-vit-base-patch32. Texts longer than the text tower's context
    (77 tokens for ViT-B/32) are truncated, as in CLIPScore.
    """

    def __init__(
        self, model: Any, tokenizer: Any, *, name: str = "clip", batch_size: int = 64
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        self.image_size = int(model.config.vision_config.image_size)
        self.max_text_tokens = int(model.config.text_config.max_position_embeddings)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, device: str = "cpu", batch_size: int = 64
    ) -> CLIPEmbedder:
        from transformers import AutoTokenizer, CLIPModel

        path = Path(path)
        try:
            model = CLIPModel.from_pretrained(path, local_files_only=True).to(device)
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise EmbedderError(f"{path}: cannot load a CLIP model and tokenizer: {exc}") from None
        return cls(model, tokenizer, name=f"clip:{path.name}", batch_size=batch_size)

    @classmethod
    def tiny(cls, *, seed: int = 0, image_size: int = 32) -> CLIPEmbedder:
        """A randomly initialised CLIPModel at toy size with a tokenizer trained on the toy
        world: the real class and code path, for tests and for trying the CLIP metrics."""
        from transformers import CLIPConfig, CLIPModel

        from vans.models.tiny import toy_corpus, train_clip_tokenizer

        tokenizer = train_clip_tokenizer(toy_corpus())
        config = CLIPConfig(
            text_config={
                "vocab_size": len(tokenizer),
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "max_position_embeddings": 77,
                "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id,
                "pad_token_id": tokenizer.pad_token_id,
            },
            vision_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": image_size,
                "patch_size": 8,
            },
            projection_dim=16,
        )
        torch.manual_seed(seed)
        return cls(CLIPModel(config), tokenizer, name="clip:tiny")

    def save_pretrained(self, path: str | Path) -> Path:
        """Write a CLIP directory that `from_pretrained` and `load_embedder` read back."""
        path = Path(path)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        return path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        out = []
        for chunk in frames.split(self.batch_size):
            pixels = clip_pixel_values(chunk, self.image_size).to(self.device)
            out.append(_embedding(self.model.get_image_features(pixel_values=pixels)))
        return l2_normalize(torch.cat(out)).cpu()

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        out = []
        texts = list(texts)
        for i in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(
                texts[i : i + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_text_tokens,
                return_tensors="pt",
            ).to(self.device)
            out.append(
                _embedding(
                    self.model.get_text_features(
                        input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
                    )
                )
            )
        return l2_normalize(torch.cat(out)).cpu()


def _embedding(output: Any) -> torch.Tensor:
    # transformers 5 returns a model output object from get_*_features; older ones a tensor.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def video_features(embedder: VideoTextEmbedder, videos: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-video features for a Fréchet distance when no I3D is available (FVD-toy):
    appearance (the mean frame embedding) and motion (last minus first frame embedding),
    concatenated: (B, 2D). A static video has zero motion features, so a generator that
    freezes the frame is pulled away from real, moving videos."""
    rows = []
    for video in videos:
        e = embedder.embed_frames(video)
        rows.append(torch.cat([e.mean(0), e[-1] - e[0]]))
    return torch.stack(rows)


EMBEDDER_FILE = "vans_embedder.json"


def load_embedder(path: str | Path, *, device: str = "cpu") -> VideoTextEmbedder:
    """Load a toy-world embedder (a directory with vans_embedder.json) or a CLIP directory."""
    path = Path(path)
    if not path.is_dir():
        raise EmbedderError(f"{path}: embedder directory not found")
    if (path / EMBEDDER_FILE).is_file():
        from vans.evaluation.toy_embedder import ToyEmbedder

        return ToyEmbedder.from_pretrained(path)
    config = path / "config.json"
    if config.is_file() and json.loads(config.read_text()).get("model_type") == "clip":
        return CLIPEmbedder.from_pretrained(path, device=device)
    raise EmbedderError(
        f"{path}: not an embedder directory (expected {EMBEDDER_FILE} from `vans train "
        "embedder`, or a CLIP checkpoint whose config.json has model_type 'clip')"
    )
