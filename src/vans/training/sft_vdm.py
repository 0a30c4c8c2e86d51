"""Supervised fine-tuning of the renderer: flow matching on the Wan DiT
(docs/paper_facts.md#supervised-fine-tuning, with the reference-frame conditioning of
docs/paper_facts.md#reference-frame-conditioning).

Per sample, with x0 the VAE latents of the target clip and a noise level sigma:

    x_sigma = (1 - sigma) * x0 + sigma * noise,   target velocity v = noise - x0,

the convention of Wan, diffusers' FlowMatchEulerDiscreteScheduler and the project's sampler
(`vans.models.flow_matching`): an Euler step `x + (sigma_next - sigma) * v` walks exactly
along this line. The DiT sees the sample exactly as at inference (`conditional_velocity`,
shared with `Renderer.predict_velocity`): the clean reference latents of the input video
(n = 6 latent frames picked by linspace) prepended along time, the timestep
`sigma * num_train_timesteps` for every token, its output for the reference frames
dropped. The loss is the mean squared error of the velocity on the generated frames,
averaged per sample, then over samples.

Noise levels: u ~ U(0, 1) ("uniform") or u = sigmoid(N(m, s)) ("logit_normal", SD3's
rule), then shifted like the sampler's schedule, sigma = shift * u / (1 + (shift - 1) * u);
with VANS's shift 5 training, like sampling, spends most steps at high noise. Caption
dropout replaces a sample's caption by the checkpoint's negative prompt, the unconditional
branch of classifier-free guidance at inference (empty by default).

What is drawn from what (`clips`): "answer" is VANS's SFT, each sample's target clip from
its answer caption. "descriptions" is the text-to-video pretraining of a toy renderer base
(the toy analogue of Wan2.1's pretraining, which VANS starts from): every target clip from
its `extra["target_description"]` and every input clip, resampled to the target's frame
count, from its `extra["description"]` (what each clip shows, `data/toyworld/perception.py`),
two items per sample, with no reference frames.

All DiT parameters train; the VAE and the text encoder are frozen (eval mode, no
gradients), which makes caching their outputs exact. `train_text_encoder` trains the text
encoder too (its prompt embeddings are then never cached): only for a toy base, whose
umT5 is random where Wan's comes pretrained; SFT keeps it frozen, as VANS does. Every
random draw of a sample (noise level, dropout, noise) comes from
`torch.Generator().manual_seed(seed)` of that sample, never from the global RNG.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from vans.data.dataset import VideoViews, VNEPDataset
from vans.data.manifest import load_manifest
from vans.data.schema import VNEPSample
from vans.errors import ConfigError
from vans.models.checkpoint import VANSSettings, save_checkpoint
from vans.models.vdm import Renderer, conditional_velocity
from vans.training.config import TrainConfig
from vans.training.stage_io import CopiedPart, LazyItems, load_start

CLIP_CAPTIONS: dict[str, dict[str, str]] = {
    "answer": {"target": "answer"},
    "descriptions": {"target": "target_description", "input": "description"},
}
"""Per `clips` choice: each clip an item is made of -> where its caption comes from (the
sample's answer, or a key of its `extra`)."""


@dataclass
class SFTVDMConfig:
    """SFT of the renderer (`vans train sft-vdm`). Fields left None take the starting
    checkpoint's settings (vans.yaml), so training conditions the DiT as inference does."""

    checkpoint: str
    """VANS checkpoint to start from (vans.yaml, vlm/, vdm/), e.g. the SFT-VLM result."""
    train_manifest: str
    """Training samples (JSONL manifest): input video, answer caption, target video."""
    eval_manifest: str | None = None
    """Held-out samples for the periodic eval loss; None: no eval loss."""
    clips: Literal["answer", "descriptions"] = "answer"
    """What the DiT learns to draw (see the module docstring): "answer" (VANS's SFT) or
    "descriptions" (text-to-video pretraining of a toy renderer base on target and input
    clips with their descriptions; needs num_reference_frames 0)."""
    train_text_encoder: bool = False
    """Train the umT5 text encoder jointly with the DiT: for pretraining a toy base, whose
    text encoder is random (Wan's is pretrained, and VANS's SFT keeps it frozen)."""
    num_reference_frames: int | None = None
    """Clean latent frames of the input prepended on time (paper: 6; 0 trains plain
    text-to-video); None: the checkpoint's. The saved checkpoint records it."""
    reference_video_frames: int | None = None
    """Frames sampled from the input video for the VAE (4k+1); None: the checkpoint's.
    The saved checkpoint records it."""
    num_frames: int | None = None
    """Frames of the target clip (4k+1; paper: 33); None: the checkpoint's."""
    height: int | None = None
    """Height of the target clip and the reference frames (paper: 352); None: the
    checkpoint's."""
    width: int | None = None
    """Width (paper: 640); None: the checkpoint's."""
    flow_shift: float | None = None
    """Shift of the noise-level distribution (see the module docstring); None: the
    checkpoint's sampling shift (VANS: 5). Not stated for training in the paper."""
    timestep_sampling: Literal["uniform", "logit_normal"] = "uniform"
    """How u in [0, 1] is drawn before the shift. Not stated in the paper; uniform is what
    Wan's shifted scheduler implies."""
    logit_mean: float = 0.0
    """Mean of the normal behind "logit_normal"."""
    logit_std: float = 1.0
    """Standard deviation of the normal behind "logit_normal"."""
    caption_dropout: float = 0.1
    """Probability that a sample's caption is replaced by the negative prompt, so the
    unconditional branch of CFG keeps being trained. Not stated in the paper."""
    cache_latents: bool = False
    """Keep every sample's VAE latents (reference and target) and text embeddings in
    memory after their first use (exact: the encoders are frozen). For small data sets
    such as the toy world; 100K real samples would need hundreds of GB."""
    gradient_checkpointing: bool = False
    """Recompute DiT block activations in the backward pass (less memory, ~30% slower)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The generic training settings (steps, batch size, lr, ...)."""

    def __post_init__(self) -> None:
        problems = []
        for name in ("num_reference_frames",):
            value = getattr(self, name)
            if value is not None and value < 0:
                problems.append(f"{name} must be >= 0, got {value}")
        for name in ("reference_video_frames", "num_frames", "height", "width"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be >= 1, got {value}")
        if self.flow_shift is not None and not self.flow_shift > 0:
            problems.append(f"flow_shift must be > 0, got {self.flow_shift}")
        if self.clips not in ("answer", "descriptions"):
            problems.append(f"clips must be answer or descriptions, got {self.clips!r}")
        if self.clips == "descriptions" and self.num_reference_frames != 0:
            problems.append(
                "clips: descriptions is text-to-video pretraining: set num_reference_frames: 0, "
                f"got {self.num_reference_frames}"
            )
        if not self.logit_std > 0:
            problems.append(f"logit_std must be > 0, got {self.logit_std}")
        if not 0 <= self.caption_dropout <= 1:
            problems.append(f"caption_dropout must be in [0, 1], got {self.caption_dropout}")
        if problems:
            raise ConfigError("invalid sft-vdm config: " + "; ".join(problems))

    def resolved(self, settings: VANSSettings) -> SFTVDMConfig:
        """This config with every None taken from the checkpoint's settings."""
        names = (
            "num_reference_frames",
            "reference_video_frames",
            "num_frames",
            "height",
            "width",
            "flow_shift",
        )
        filled = {n: getattr(settings, n) for n in names if getattr(self, n) is None}
        return dataclasses.replace(self, **filled)


# --------------------------------------------------------------------------- the math


def shift_sigmas(u: torch.Tensor, shift: float) -> torch.Tensor:
    """`shift * u / (1 + (shift - 1) * u)`: the timestep shift of Wan's flow schedulers."""
    return shift * u / (1 + (shift - 1) * u)


def sample_sigma(
    generator: torch.Generator,
    shift: float,
    rule: Literal["uniform", "logit_normal"] = "uniform",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
) -> torch.Tensor:
    """One noise level in [0, 1) drawn from `generator` (a float32 scalar tensor)."""
    if rule == "uniform":
        u = torch.rand((), generator=generator)
    elif rule == "logit_normal":
        u = torch.sigmoid(logit_mean + logit_std * torch.randn((), generator=generator))
    else:
        raise ValueError(f"unknown timestep sampling rule {rule!r}")
    return shift_sigmas(u, shift)


def noisy_latents(x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """`(1 - sigma) * x0 + sigma * noise` with one sigma per sample (B,)."""
    s = sigmas.view(-1, *([1] * (x0.ndim - 1)))
    return (1 - s) * x0 + s * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """`noise - x0`: d x_sigma / d sigma, what the DiT predicts and the sampler integrates."""
    return noise - x0


# --------------------------------------------------------------------------- the task


class SFTVDMTask:
    """The `TrainTask` of `vans train sft-vdm`; see the module docstring."""

    def __init__(
        self,
        config: SFTVDMConfig,
        renderer: Renderer,
        settings: VANSSettings,
        start: Path,
        train_samples: Sequence[VNEPSample],
        eval_samples: Sequence[VNEPSample] | None,
    ) -> None:
        self.config = config = config.resolved(settings)
        self.renderer = renderer
        self.settings = settings
        self.start = start
        self._check_sizes()
        self.model: torch.nn.Module = renderer.trainable_transformer(config.gradient_checkpointing)
        if config.train_text_encoder:
            renderer.text_encoder.requires_grad_(True)
            self.model = torch.nn.ModuleDict(
                {"transformer": renderer.transformer, "text_encoder": renderer.text_encoder}
            )
        self.num_train_timesteps = int(renderer.scheduler.config.num_train_timesteps)
        self.latent_shape = (
            renderer.latent_channels,
            renderer.num_latent_frames(config.num_frames),
            config.height // renderer.spatial_scale,
            config.width // renderer.spatial_scale,
        )
        self.negative_prompt = settings.negative_prompt
        # Text-to-video pretraining draws input clips too, at the target's frame count.
        input_frames = (
            config.num_frames if config.clips == "descriptions" else config.reference_video_frames
        )
        self.views = VideoViews.for_renderer(
            input_frames, config.num_frames, (config.height, config.width)
        )
        self._negative_embeds: torch.Tensor | None = None
        self._train = self._items(train_samples)
        self._eval = None if eval_samples is None else self._items(eval_samples)

    def _check_sizes(self) -> None:
        c, r = self.config, self.renderer
        multiple = r.spatial_scale * r.transformer.config.patch_size[1]
        problems = []
        for name in ("num_frames", "reference_video_frames"):
            if (getattr(c, name) - 1) % r.temporal_scale:
                problems.append(f"{name} must be {r.temporal_scale}k+1, got {getattr(c, name)}")
        for name in ("height", "width"):
            if getattr(c, name) % multiple:
                problems.append(f"{name} must be a multiple of {multiple}, got {getattr(c, name)}")
        if problems:
            raise ConfigError("invalid sft-vdm config: " + "; ".join(problems))

    def _items(self, samples: Sequence[VNEPSample]) -> Sequence[dict[str, Any]]:
        """One item per sample ("answer") or per (sample, clip) ("descriptions": its target
        clip, then its input clip), with the frames and caption it is trained on."""
        dataset = VNEPDataset(samples, self.views)
        kinds = CLIP_CAPTIONS[self.config.clips]
        for sample in samples:
            missing = [key for key in kinds.values() if key != "answer" if key not in sample.extra]
            if missing:
                raise ConfigError(
                    f"sample {sample.id}: clips: {self.config.clips} needs extra[{missing[0]!r}] "
                    "(the toy world's clip descriptions)"
                )
        order = list(kinds)

        def build(index: int) -> dict[str, Any]:
            sample = samples[index // len(order)]
            kind = order[index % len(order)]
            item = dataset[index // len(order)]
            key = kinds[kind]
            caption = item["answer"] if key == "answer" else sample.extra[key]
            frames = {
                "id": item["id"] if len(order) == 1 else f"{item['id']}/{kind}",
                "caption": caption,
                "reference_frames": item["vdm_frames"],
                "target_frames": item["target_frames" if kind == "target" else "vdm_frames"],
            }
            if not self.config.cache_latents:
                return frames
            # A trained text encoder changes its embeddings every step: only latents cache.
            captions = None if self.config.train_text_encoder else [caption]
            latents = self.encode(
                frames["reference_frames"][None], frames["target_frames"][None], captions
            )
            cached = {"id": frames["id"], **{k: v[0].cpu() for k, v in latents.items()}}
            if captions is None:
                cached["caption"] = caption
            return cached

        return LazyItems(len(samples) * len(order), build, cache=self.config.cache_latents)

    def train_dataset(self) -> Sequence[dict[str, Any]]:
        return self._train

    def eval_dataset(self) -> Sequence[dict[str, Any]] | None:
        return self._eval

    # ------------------------------------------------------------------ frozen encoders

    @torch.no_grad()
    def encode(
        self,
        reference_frames: torch.Tensor,
        target_frames: torch.Tensor,
        captions: Sequence[str] | None,
    ) -> dict[str, torch.Tensor]:
        """Frozen-encoder outputs of a batch: `target_latents` (B, C, T', h, w),
        `reference_latents` (B, C, n, h, w; absent for n = 0) and `prompt_embeds`
        (B, 512, D; absent for captions None), in float32 with autocast off, on the VAE's
        device."""
        r, n = self.renderer, self.config.num_reference_frames
        device = next(r.vae.parameters()).device
        with _no_autocast(device):
            out = {"target_latents": r.encode_video(target_frames)}
            if captions is not None:
                out["prompt_embeds"] = r.encode_prompts(list(captions)).to(device)
            if n > 0:
                out["reference_latents"] = torch.cat(
                    [
                        r.prepare_reference(f, n, self.config.height, self.config.width)
                        for f in reference_frames
                    ]
                )
        return out

    def negative_embeds(self) -> torch.Tensor:
        """Text embeddings (512, D) of the negative prompt, computed once, on CPU."""
        if self._negative_embeds is None:
            r = self.renderer
            with _no_autocast(next(r.text_encoder.parameters()).device):
                self._negative_embeds = r.encode_prompts([self.negative_prompt])[0].cpu()
        return self._negative_embeds

    def _place_encoders(self, device: torch.device) -> None:
        for module in (self.renderer.vae, self.renderer.text_encoder):
            if next(module.parameters()).device != device:
                module.to(device)

    # ------------------------------------------------------------------ batches and loss

    def draw(self, seed: int) -> tuple[torch.Tensor, bool, torch.Tensor]:
        """A sample's random choices from its seed: (sigma, caption dropped, noise)."""
        c = self.config
        g = torch.Generator().manual_seed(int(seed))
        dropped = bool(torch.rand((), generator=g) < c.caption_dropout)
        sigma = sample_sigma(g, c.flow_shift, c.timestep_sampling, c.logit_mean, c.logit_std)
        noise = torch.randn(self.latent_shape, generator=g)
        return sigma, dropped, noise

    def collate(self, items: Sequence[dict[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
        """Stack the items and draw each sample's noise level, caption dropout and noise
        from its seed. A dropped caption becomes the negative prompt (or its embeddings)."""
        if len(items) != len(seeds):
            raise ValueError(f"{len(items)} items for {len(seeds)} seeds")
        draws = [self.draw(seed) for seed in seeds]
        batch: dict[str, Any] = {
            "sigmas": torch.stack([d[0] for d in draws]),
            "noise": torch.stack([d[2] for d in draws]),
        }
        if "prompt_embeds" in items[0]:
            batch["prompt_embeds"] = torch.stack(
                [
                    self.negative_embeds() if d[1] else item["prompt_embeds"]
                    for item, d in zip(items, draws, strict=True)
                ]
            )
        else:
            batch["captions"] = [
                self.negative_prompt if d[1] else item["caption"]
                for item, d in zip(items, draws, strict=True)
            ]
        if self.config.cache_latents:
            keys = ["target_latents"] + ["reference_latents"] * (
                self.config.num_reference_frames > 0
            )
        else:
            keys = ["target_frames", "reference_frames"]
        for key in keys:
            batch[key] = torch.stack([item[key] for item in items])
        return batch

    def sample_losses(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Per-sample mean squared velocity error on the generated frames, (B,)."""
        noise = batch["noise"]
        trained_text = isinstance(model, torch.nn.ModuleDict)
        if "target_latents" in batch:
            encoded = dict(batch)
        else:
            self._place_encoders(noise.device)
            frozen_captions = None if trained_text else batch["captions"]
            encoded = self.encode(
                batch["reference_frames"], batch["target_frames"], frozen_captions
            )
        if trained_text:
            encoded["prompt_embeds"] = self.renderer.prompt_embeddings(
                batch["captions"], longest=True
            )
        x0 = encoded["target_latents"].to(noise.device)
        sigmas = batch["sigmas"]
        prediction = conditional_velocity(
            model["transformer"] if trained_text else model,
            noisy_latents(x0, noise, sigmas),
            sigmas * self.num_train_timesteps,
            encoded["prompt_embeds"],
            encoded.get("reference_latents"),
        )
        error = prediction - velocity_target(x0, noise)
        return error.square().mean(dim=tuple(range(1, error.ndim)))

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"loss": self.sample_losses(model, batch).mean()}

    def save_pretrained(self, model: torch.nn.Module, out: Path) -> None:
        """A full VANS checkpoint: the trained DiT (and text encoder, if it trained) with the
        unchanged VAE, tokenizer and scheduler, the starting checkpoint's vlm/ copied, and
        its settings with the reference conditioning trained with."""
        if model is not self.model:
            raise ValueError("save_pretrained expects the task's (unwrapped) model")
        settings = dataclasses.replace(
            self.settings,
            num_reference_frames=self.config.num_reference_frames,
            reference_video_frames=self.config.reference_video_frames,
        )
        save_checkpoint(out, CopiedPart(self.start / "vlm"), self.renderer, settings)


@contextmanager
def _no_autocast(device: torch.device) -> Iterator[None]:
    """Frozen encoders run in their own dtype even inside the loop's bf16 autocast, so
    cached and freshly computed latents are the same numbers."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def build_sft_vdm_task(config: SFTVDMConfig) -> SFTVDMTask:
    """Load the renderer of `config.checkpoint` (the reasoner is not loaded: it is copied
    unchanged when saving) and the manifests."""
    start, settings = load_start(config.checkpoint)
    renderer = Renderer.from_pretrained(start / "vdm")
    train_samples = load_manifest(config.train_manifest)
    eval_samples = load_manifest(config.eval_manifest) if config.eval_manifest else None
    return SFTVDMTask(config, renderer, settings, start, train_samples, eval_samples)
