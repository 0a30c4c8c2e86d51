"""VANSPipeline: a video (or an image) and questions in; per question the reasoning, the
caption of the next event and a video of it out.

    input video ──1 fps──> Reasoner (Qwen2.5-VL) ──> [Think]…[/Think][Ans]caption[/Ans]
         │                                                      │ caption only
         └──N frames──> Renderer (Wan2.1): VAE reference latents + caption ──> answer video

Several questions about one video (multi-future prediction) run as one batch in both
models, and the input video is encoded once by each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vans.data.video import read_video
from vans.errors import VansError
from vans.models.checkpoint import VANSSettings, load_checkpoint
from vans.models.profiles import apply_profile
from vans.models.vdm import Renderer
from vans.models.video_processing import MAX_ASPECT_RATIO
from vans.models.vlm import Reasoner
from vans.timing import Timings


class InputError(VansError):
    """A bad prediction input: empty question, unreadable image, no input at all."""


@dataclass
class Answer:
    """The system's answer to one question."""

    question: str
    think: str
    """The reasoning the reasoner wrote inside [Think]."""
    caption: str
    """The next event as text: what the renderer was asked to show."""
    well_formed: bool
    """False when the reasoner broke the [Think]/[Ans] template (the caption is then a guess)."""
    video: torch.Tensor
    """uint8 (T, H, W, 3): the next event."""


@dataclass
class InputClip:
    """The input seen two ways: by the reasoner (at its fps, or its number of frames) and by
    the renderer's VAE."""

    vlm_frames: torch.Tensor
    vdm_frames: torch.Tensor


def load_input(
    settings: VANSSettings,
    *,
    video: str | Path | None = None,
    image: str | Path | None = None,
    start: float | None = None,
    end: float | None = None,
) -> InputClip:
    """Read the input video (optionally its `start`..`end` window in seconds), or a single
    image as a static clip (reasoning image-to-video)."""
    if (video is None) == (image is None):
        raise InputError("give exactly one input: a video or an image")
    if video is not None:
        window = {"start": start, "end": end}
        clip = InputClip(
            vlm_frames=read_video(video, **reasoner_sampling(settings), **window).frames,
            vdm_frames=read_video(
                video, num_frames=settings.reference_video_frames, **window
            ).frames,
        )
        _check_shape(video, clip.vlm_frames)
        return clip
    try:
        with Image.open(image) as im:
            frame = torch.from_numpy(np.asarray(im.convert("RGB")).copy())
    except FileNotFoundError:
        raise InputError(f"{image}: image file not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{image}: cannot read the image: {exc}") from None
    _check_shape(image, frame[None])
    # A still image is a clip in which nothing moves: two frames fill one temporal patch of
    # the reasoner; the VAE sees the usual number of frames.
    return InputClip(
        vlm_frames=frame.expand(2, -1, -1, -1).contiguous(),
        vdm_frames=frame.expand(settings.reference_video_frames, -1, -1, -1).contiguous(),
    )


def reasoner_sampling(settings: VANSSettings) -> dict[str, float | int]:
    """How the reasoner's frames are read (`read_video`'s fps or num_frames)."""
    if settings.vlm_frames is not None:
        return {"num_frames": settings.vlm_frames}
    return {"fps": settings.vlm_fps}


def _check_shape(path: str | Path, frames: torch.Tensor) -> None:
    height, width = frames.shape[1:3]
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise InputError(
            f"{path}: {height}x{width} frames are too elongated for the reasoner (Qwen2-VL "
            f"takes up to {MAX_ASPECT_RATIO}:1); crop the input"
        )


def check_questions(questions: str | Sequence[str]) -> list[str]:
    questions = [questions] if isinstance(questions, str) else list(questions)
    if not questions:
        raise InputError("give at least one question")
    for i, q in enumerate(questions, 1):
        if not isinstance(q, str) or not q.strip():
            raise InputError(f"question {i} is empty; ask what should happen next")
        try:
            q.encode("utf-8")
        except UnicodeEncodeError:  # bytes the terminal's encoding could not decode
            raise InputError(f"question {i} is not valid text (UTF-8): {q!r}") from None
    return questions


class VANSPipeline:
    """The reasoner and the renderer with the checkpoint's settings."""

    def __init__(self, reasoner: Reasoner, renderer: Renderer, settings: VANSSettings) -> None:
        self.reasoner = reasoner
        self.renderer = renderer
        self.settings = settings
        # How the reasoner watches is the settings' (a profile may change them after loading).
        reasoner.fps = float(settings.vlm_fps)
        if settings.system_prompt is not None:
            reasoner.system_prompt = settings.system_prompt

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        profile: str | None = None,
    ) -> VANSPipeline:
        """The checkpoint's models and settings; `profile` (`vans.models.profiles`) replaces
        how it answers."""
        reasoner, renderer, settings = load_checkpoint(path, device=device, dtype=dtype)
        if profile is not None:
            settings = apply_profile(settings, profile)
        return cls(reasoner, renderer, settings)

    def __call__(
        self,
        questions: str | Sequence[str],
        *,
        video: str | Path | None = None,
        image: str | Path | None = None,
        clip: InputClip | None = None,
        seed: int = 0,
        progress: Callable[[int, int], None] | None = None,
        timings: Timings | None = None,
    ) -> list[Answer]:
        """Answer every question about one input (a path, an image, or decoded `clip`).

        `progress(done, total)` follows the denoising steps; `timings` receives the seconds
        of each stage (decode, reason, text_encode, vae_encode, denoise, vae_decode).
        """
        questions = check_questions(questions)
        timings = Timings() if timings is None else timings
        s = self.settings
        if clip is None:
            with timings.stage("decode"):
                clip = load_input(s, video=video, image=image)
        with timings.stage("reason"):
            parsed = self.reasoner.predict(clip.vlm_frames, questions, s.sampling, seed=seed)
        videos = self.renderer.render(
            [p.caption for p in parsed],
            settings=s,
            reference_frames=clip.vdm_frames,
            seed=seed,
            progress=progress,
            timings=timings,
        )
        return [
            Answer(q, p.think, p.caption, p.well_formed, v)
            for q, p, v in zip(questions, parsed, videos, strict=True)
        ]
