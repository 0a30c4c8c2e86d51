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
`Renderer.initial_noise(1, ..., seed)` for the group's `seed` (`shared_noise`), which is the noise
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
from dataclasses import dataclass, replace

import torch

from vans.models.checkpoint import VANSSettings
from vans.models.vdm import Renderer, clean_prompt
from vans.rl.config import RewardVideoConfig
from vans.timing import Timings


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
    render = replace(settings, steps=config.steps)
    renderer.check_inputs(captions, None, render)  # before de-duplication takes them apart
    texts, prompts, index = deduplicate(captions, config.empty_caption)
    unique = renderer.render(
        texts,
        settings=render,
        reference_frames=reference_frames,
        seed=seed,
        shared_noise=True,
        batch_size=config.batch_size,
        timings=timings,
    )
    return RewardVideos(
        videos=unique[torch.tensor(index)],
        index=index,
        prompts=prompts,
        seconds=time.perf_counter() - start,
    )
