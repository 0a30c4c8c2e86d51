"""Reward videos of Joint-GRPO Stage 1: the frozen renderer's video of every caption of a group.

Rendering these videos is what Stage 1 costs (peers render them one by one:
docs/paper_facts.md#pitfalls-seen-in-other-implementations). A group of G captions written
for one prompt is rendered

- de-duplicated: captions equal after `clean_prompt` (what the text encoder actually sees)
  are rendered once and the video is scattered back to each of them. An SFT policy often
  writes the same caption several times in a group of 8;
- in batches of `batch_size` unique captions: one transformer call per batch and step (two
  with classifier-free guidance), one VAE decode per batch;
- with the input video VAE-encoded once for the whole group;
- with `steps` denoising steps, fewer than evaluation's 50 (Flow-GRPO trains with 10).

Seed rule: every caption of a group starts from the same noise,
`Renderer.initial_noise(1, ..., seed)` for the group's `seed`, which is the noise
`Renderer.render([caption], seed=seed)` draws. So reward video i is
`renderer.render([captions[i]], seed=seed, steps=config.steps, <settings>)` (up to float
round-off of batched matrix products, at most 1 uint8 level); a caption gets the same video
wherever it sits in the group, so de-duplication changes nothing; and the rewards of a
group differ because their captions differ, not because their noise draws do (common random
numbers, which lowers the variance of the group-relative advantages). The trainer gives
every group its own seed (e.g. from its seed, the step and the prompt's index).

Empty captions (after cleaning) are rendered as the empty prompt, i.e. generated from the
reference frames alone, as WanPipeline renders "" (all empty captions of a group share one
video); with `empty_caption` set they are rendered from that text instead.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vans.models.checkpoint import VANSSettings
from vans.models.vdm import Renderer, clean_prompt, video_to_uint8
from vans.timing import Timings, maybe_stage
from vans.training.config import ConfigError


@dataclass(frozen=True)
class RewardVideoConfig:
    """How Stage 1 renders its reward videos; the size, reference frames, CFG and negative
    prompt are the checkpoint's `VANSSettings`."""

    steps: int = 10
    """Denoising steps per reward video (evaluation uses the settings' steps, 50 in the
    paper; Flow-GRPO trains with 10). Not stated for VANS's reward videos."""
    batch_size: int = 8
    """Unique captions rendered together (one transformer call per step holds this many
    videos; 8 = one group of the paper's G=8). Lower it when memory is short."""
    empty_caption: str | None = None
    """Text rendered for a caption that is empty after cleaning; None renders the empty
    prompt (reference frames only). The rewards already punish an empty answer through r_f
    and r_t1."""

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be >= 1, got {getattr(self, name)}"
            for name in ("steps", "batch_size")
            if getattr(self, name) < 1
        ]
        if problems:
            raise ConfigError("invalid reward-video config: " + "; ".join(problems))


@dataclass
class RewardVideos:
    """The videos of one group and what it took to render them."""

    videos: torch.Tensor
    """uint8 (G, T, H, W, 3): videos[i] shows captions[i]."""
    index: list[int]
    """Per caption, its position in `prompts` (captions with the same index share a video)."""
    prompts: list[str]
    """The unique cleaned prompts that were rendered, in order of first appearance."""
    seconds: float
    """Wall-clock seconds of the whole call."""

    @property
    def num_unique(self) -> int:
        return len(self.prompts)


def deduplicate(
    captions: Sequence[str], empty_caption: str | None = None
) -> tuple[list[str], list[str], list[int]]:
    """Group captions by their cleaned text.

    Returns (texts, prompts, index): per unique cleaned prompt, the text to render (the
    first caption that cleans to it, or `empty_caption`) and the prompt itself, plus each
    caption's position among them. The raw text is rendered rather than the cleaned one
    because the renderer cleans again, and cleaning is not idempotent (it unescapes HTML
    twice).
    """
    texts: list[str] = []
    slots: dict[str, int] = {}
    index = []
    for caption in captions:
        prompt = clean_prompt(caption)
        if not prompt and empty_caption is not None:
            caption, prompt = empty_caption, clean_prompt(empty_caption)
        if prompt not in slots:
            slots[prompt] = len(texts)
            texts.append(caption)
        index.append(slots[prompt])
    return texts, list(slots), index


@torch.no_grad()
def render_reward_videos(
    renderer: Renderer,
    captions: Sequence[str],
    *,
    reference_frames: torch.Tensor | None,
    settings: VANSSettings,
    config: RewardVideoConfig | None = None,
    seed: int = 0,
    timings: Timings | None = None,
) -> RewardVideos:
    """Render one video per caption of a group, batched and de-duplicated (module docstring).

    `reference_frames` is the prompt's input video, uint8 (T, H, W, 3) of any size (resized
    and center-cropped like `Renderer.render` does); None renders text-to-video. `timings`
    receives text_encode, vae_encode, denoise and vae_decode seconds.
    """
    start = time.perf_counter()
    config = config or RewardVideoConfig()
    s = settings
    renderer.check_render_args(
        captions, s.num_reference_frames, s.num_frames, s.height, s.width, config.steps
    )
    texts, prompts, index = deduplicate(captions, config.empty_caption)
    with maybe_stage(timings, "text_encode"):
        negative = None
        if s.guidance_scale > 1.0:
            negative = renderer.encode_prompts([s.negative_prompt])
    with maybe_stage(timings, "vae_encode"):
        reference = renderer.prepare_reference(
            reference_frames, s.num_reference_frames, s.height, s.width
        )
    noise = renderer.initial_noise(1, s.num_frames, s.height, s.width, seed)
    unique = []
    for i in range(0, len(texts), config.batch_size):
        batch = texts[i : i + config.batch_size]
        with maybe_stage(timings, "text_encode"):
            embeds = renderer.encode_prompts(batch)
        with maybe_stage(timings, "denoise"):
            latents = renderer.denoise(
                noise.repeat(len(batch), 1, 1, 1, 1),
                embeds,
                negative,
                steps=config.steps,
                guidance_scale=s.guidance_scale,
                reference=reference,
            )
        with maybe_stage(timings, "vae_decode"):
            unique.append(video_to_uint8(renderer.decode_latents(latents)))
    videos = torch.cat(unique)[torch.tensor(index)]
    return RewardVideos(
        videos=videos, index=index, prompts=prompts, seconds=time.perf_counter() - start
    )
