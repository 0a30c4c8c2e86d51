"""The figures a toy base is accepted on (docs/toybases.md): does the reasoner perceive, does
the renderer draw?

* Reasoner: accuracy on the perception multiple-choice questions of held-out toy clips
  (`extra["perception_mcq"]`: which object of a shape appears, which object moves, how one
  moves, which shape an object of a colour has), overall and per kind. An option is the
  model's answer when it finds its sentence the most likely (`mcq_scores`,
  lm-eval-harness's `acc`), so nothing depends on decoding.
* Renderer VAE: PSNR of reconstructions of held-out clips (target clips and input clips,
  each at the renderer's frame count and size) and the share of objects whose colour the
  reconstruction's last frame shows where the facts put it (`toy_truth.colours_visible`,
  the truth metric's pixel check). The clips themselves score the ceiling, also reported.
* Renderer T2V: videos sampled from held-out target descriptions with no reference frames;
  the share of described objects whose colour is somewhere in the last frame, and where the
  truth's last frame has it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vans.data.dataset import VideoViews, VNEPDataset
from vans.data.schema import VNEPSample
from vans.data.toyworld.perception import option_sentence
from vans.evaluation.toy_truth import OBJECT_COLOURS, colours_visible
from vans.evaluation.video_metrics import psnr
from vans.models.checkpoint import VANSSettings, load_checkpoint
from vans.models.prompting import ASSISTANT_PROMPT
from vans.models.vdm import Renderer, video_to_uint8, video_to_unit
from vans.models.vlm import Reasoner

MCQ_KINDS = ("appearance", "mover", "motion", "shape")


@torch.no_grad()
def mcq_scores(
    reasoner: Reasoner, frames: torch.Tensor, question: str, options: list[str]
) -> torch.Tensor:
    """Log-likelihood of each option sentence as the answer (summed over its tokens and the
    end token), (N,): how multiple choice is scored (lm-eval-harness's `acc`)."""
    logprobs, mask = reasoner.completion_logprobs(frames, question, options)
    return (logprobs * mask).sum(dim=1)


def mcq_accuracy(correct: Mapping[str, Sequence[bool]]) -> dict[str, float]:
    """Share right overall (`mcq_accuracy`) and per kind (`mcq_accuracy/<kind>`; NaN for a
    kind with no question)."""
    every = [c for kind in MCQ_KINDS for c in correct.get(kind, ())]
    out = {"mcq_accuracy": _share(every)}
    for kind in MCQ_KINDS:
        out[f"mcq_accuracy/{kind}"] = _share(correct.get(kind, ()))
    return out


def reasoner_figures(reasoner: Reasoner, samples: Sequence[VNEPSample]) -> dict[str, float]:
    """Multiple-choice accuracy on every perception question of `samples` (toy-world rows),
    with the reasoner's own frame rate and system prompt."""
    views = VideoViews(
        vlm_fps=reasoner.fps, vdm_num_frames=1, vdm_size=(8, 8), target_num_frames=1,
        target_size=(8, 8),
    )  # fmt: skip
    correct: dict[str, list[bool]] = {kind: [] for kind in MCQ_KINDS}
    for sample, item in zip(samples, VNEPDataset(samples, views), strict=True):
        for m in (sample.extra or {})["perception_mcq"]:
            options = [option_sentence(m, i) for i in range(len(m["options"]))]
            scores = mcq_scores(reasoner, item["vlm_frames"], m["question"], options)
            correct[m["kind"]].append(int(scores.argmax()) == m["answer"])
    return mcq_accuracy(correct)


def coloured(objects: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The facts of objects drawn in an object colour (not the scenery's own colours)."""
    return [o for o in objects if o["color"] in OBJECT_COLOURS]


def renderer_clips(
    samples: Sequence[VNEPSample], settings: VANSSettings
) -> list[tuple[torch.Tensor, list[Mapping[str, Any]]]]:
    """Each sample's target and input clip at the renderer's frame count and size, uint8
    (T, H, W, 3), with the facts of its last frame."""
    size = (settings.height, settings.width)
    views = VideoViews.for_renderer(settings.num_frames, settings.num_frames, size)
    clips = []
    for sample, item in zip(samples, VNEPDataset(samples, views), strict=True):
        extra = sample.extra or {}
        clips.append((item["target_frames"], coloured(extra["target_objects"])))
        clips.append((item["vdm_frames"], coloured(extra["objects"])))
    return clips


@torch.no_grad()
def vae_figures(
    renderer: Renderer, clips: Sequence[tuple[torch.Tensor, Sequence[Mapping[str, Any]]]]
) -> dict[str, float]:
    """Mean PSNR (dB) of the VAE's reconstructions and the share of objects whose colour
    each reconstruction shows in place; `clip_colour_visible` is the clips' own rate."""
    psnrs: list[float] = []
    seen: list[bool] = []
    truth: list[bool] = []
    for start in range(0, len(clips), 8):
        chunk = clips[start : start + 8]
        frames = torch.stack([c[0] for c in chunk])
        recon = renderer.decode_latents(renderer.encode_video(frames))
        psnrs += psnr(recon, video_to_unit(frames)).tolist()
        for video, (clip, objects) in zip(video_to_uint8(recon), chunk, strict=True):
            seen += colours_visible(video, objects)
            truth += colours_visible(clip, objects)
    return {
        "vae_psnr": float(np.mean(psnrs)),
        "vae_colour_visible": _share(seen),
        "clip_colour_visible": _share(truth),
    }


@torch.no_grad()
def t2v_figures(
    renderer: Renderer, settings: VANSSettings, samples: Sequence[VNEPSample], steps: int
) -> dict[str, float]:
    """Share of the objects of each held-out target description whose colour a video
    sampled from it (no reference frames, seed = its index) shows anywhere in its last
    frame (`t2v_colour`) and where the truth has it (`t2v_position`)."""
    anywhere: list[bool] = []
    placed: list[bool] = []
    for i, sample in enumerate(samples):
        extra = sample.extra or {}
        objects = coloured(extra["target_objects"])
        video = renderer.render(
            [extra["target_description"]],
            num_reference_frames=0,
            num_frames=settings.num_frames,
            height=settings.height,
            width=settings.width,
            steps=steps,
            guidance_scale=settings.guidance_scale,
            negative_prompt=settings.negative_prompt,
            seed=i,
        )[0]
        anywhere += colours_visible(video, objects, tolerance=1.0)
        placed += colours_visible(video, objects)
    return {"t2v_colour": _share(anywhere), "t2v_position": _share(placed)}


def base_figures(
    checkpoint: str | Path, samples: Sequence[VNEPSample], *, t2v_samples: int = 32
) -> dict[str, float]:
    """Every figure above for a base checkpoint on held-out toy samples: the reasoner with
    the assistant prompt it was pretrained with, the VAE on every clip of `samples`, T2V on
    the first `t2v_samples` target descriptions with the checkpoint's sampling steps."""
    reasoner, renderer, settings = load_checkpoint(checkpoint)
    reasoner.system_prompt = ASSISTANT_PROMPT
    figures = reasoner_figures(reasoner, samples)
    figures |= vae_figures(renderer, renderer_clips(samples, settings))
    figures |= t2v_figures(renderer, settings, samples[:t2v_samples], settings.steps)
    return figures


def _share(values: Sequence[bool]) -> float:
    return sum(values) / len(values) if len(values) else float("nan")
