"""Check of the toy renderer base (configs/toy/base_renderer_vae.yaml, base_renderer_t2v.yaml)
on held-out toy clips, next to the untrained model it started from:

* VAE: PSNR of 17-frame reconstructions (target clips, and input clips resampled to 17
  frames) and the colour-visible rate: the share of objects (`extra["target_objects"]`,
  `extra["objects"]`: each clip's last frame) whose colour the reconstruction's last frame
  shows where the facts put it;
* T2V: clips sampled from held-out target descriptions with no reference frames (CFG, the
  checkpoint's negative prompt), and for the described objects (`target_objects`): the
  colour rate (the colour is somewhere in the last frame) and the position rate (it is
  where the truth's last frame has the object).

Colour check: `src/vans/evaluation/toy_truth.py` (its `colours_visible`) is not committed
yet, so this script measures on its own, the same way: every pixel takes its nearest colour
of the toy palette (object colours, background, floor, scenery) if it is within half the
smallest distance between two palette colours; an object is visible when at least
`MIN_PIXELS` of the last frame's pixels within `POSITION_TOLERANCE` of its position (in x and
in y, canvas units) have its colour. The ground-truth clips themselves score the ceiling.

Run: `python benchmarks/base_renderer_check.py` (defaults: runs/base_renderer/...). `--base`
may also be a step-N checkpoint of the T2V run (checks a run that is still training).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file

from vans.data.dataset import VideoViews, VNEPDataset
from vans.data.manifest import load_manifest
from vans.data.toyworld.render import BACKGROUND, COLORS, FLOOR, SCENERY
from vans.models.checkpoint import VANSSettings, load_settings
from vans.models.vdm import Renderer, video_to_uint8, video_to_unit
from vans.training.vae import psnr

PALETTE = np.array([*COLORS.values(), BACKGROUND, FLOOR, SCENERY], dtype=np.float64)
CUTOFF = 0.5 * min(float(np.linalg.norm(a - b)) for a, b in itertools.combinations(PALETTE, 2))
POSITION_TOLERANCE = 0.12
MIN_PIXELS = 3


def colour_labels(frame: np.ndarray) -> np.ndarray:
    """Palette index of every pixel of a uint8 (H, W, 3) frame; -1 beyond `CUTOFF`."""
    distance = np.linalg.norm(frame[:, :, None, :].astype(np.float64) - PALETTE, axis=-1)
    labels = distance.argmin(axis=-1)
    return np.where(distance.min(axis=-1) <= CUTOFF, labels, -1)


def visible(
    frames: torch.Tensor, objects: Sequence[Mapping[str, Any]], tolerance: float
) -> list[bool]:
    """Whether each object's colour covers MIN_PIXELS of the last frame within `tolerance`."""
    labels = colour_labels(frames[-1].numpy())
    h, w = labels.shape
    ys, xs = (np.arange(h)[:, None] + 0.5) / h, (np.arange(w)[None, :] + 0.5) / w
    out = []
    for o in objects:
        x, y = o["position"]
        near = (np.abs(xs - x) <= tolerance) & (np.abs(ys - y) <= tolerance)
        colour = list(COLORS).index(o["color"])
        out.append(bool(np.count_nonzero((labels == colour) & near) >= MIN_PIXELS))
    return out


def load_renderer(path: Path) -> tuple[Renderer, VANSSettings]:
    """The renderer and settings of a VANS checkpoint, or of a training checkpoint of the
    T2V run (its trainable DiT and text encoder on top of the run's starting checkpoint)."""
    if not (path / "trainable.safetensors").exists():
        return Renderer.from_pretrained(path / "vdm"), load_settings(path)
    start = Path(yaml.safe_load((path / "config.yaml").read_text())["checkpoint"])
    renderer = Renderer.from_pretrained(start / "vdm")
    modules = torch.nn.ModuleDict(
        {"transformer": renderer.transformer, "text_encoder": renderer.text_encoder}
    )
    missing, unexpected = modules.load_state_dict(
        load_file(path / "trainable.safetensors"), strict=False
    )
    if unexpected or any(not k.startswith("text_encoder.encoder.embed") for k in missing):
        raise SystemExit(f"{path}: not a checkpoint of the T2V run ({unexpected or missing})")
    return renderer, dataclasses.replace(load_settings(start), num_reference_frames=0)


def rate(values: list[bool]) -> float:
    return 100 * sum(values) / max(1, len(values))


def shapes_only(objects: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [o for o in objects if o["color"] in COLORS]


@torch.no_grad()
def vae_figures(renderer: Renderer, clips: list[tuple[torch.Tensor, list]]) -> dict[str, float]:
    psnrs, seen = [], []
    for start in range(0, len(clips), 8):
        chunk = clips[start : start + 8]
        frames = torch.stack([c[0] for c in chunk])
        recon = renderer.decode_latents(renderer.encode_video(frames))
        psnrs += psnr(recon, video_to_unit(frames)).tolist()
        for video, (_, objects) in zip(video_to_uint8(recon), chunk, strict=True):
            seen += visible(video, objects, POSITION_TOLERANCE)
    return {"psnr": float(np.mean(psnrs)), "colour": rate(seen)}


@torch.no_grad()
def t2v_figures(
    renderer: Renderer, prompts: list[tuple[str, list]], steps: int, guidance: float, negative: str
) -> dict[str, float]:
    anywhere, placed = [], []
    for i, (caption, objects) in enumerate(prompts):
        video = renderer.render(
            [caption],
            num_reference=0,
            num_frames=17,
            height=64,
            width=64,
            steps=steps,
            guidance_scale=guidance,
            negative_prompt=negative,
            seed=i,
        )[0]
        anywhere += visible(video, objects, 1.0)
        placed += visible(video, objects, POSITION_TOLERANCE)
    return {"t2v_colour": rate(anywhere), "t2v_position": rate(placed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, default=Path("runs/base_renderer/t2v/final"))
    parser.add_argument("--untrained", type=Path, default=Path("runs/base_renderer/init"))
    parser.add_argument(
        "--heldout", type=Path, default=Path("runs/base_renderer/data/heldout/manifest.jsonl")
    )
    parser.add_argument(
        "--also",
        type=Path,
        action="append",
        default=[],
        help="another checkpoint for a column of its own, e.g. src/vans/assets/toyworld (the "
        "toy preset's 14K-parameter VAE; its DiT draws with reference frames, so its T2V "
        "figures are only indicative)",
    )
    parser.add_argument("--clips", type=int, default=64, help="held-out samples for the VAE")
    parser.add_argument("--prompts", type=int, default=32, help="held-out descriptions for T2V")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps of T2V samples")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    samples = load_manifest(args.heldout)
    dataset = VNEPDataset(samples[: args.clips], VideoViews.for_renderer(17, 17, (64, 64)))
    clips, truth = [], []
    for sample, item in zip(samples, dataset, strict=False):
        clips.append((item["target_frames"], shapes_only(sample.extra["target_objects"])))
        clips.append((item["vdm_frames"], shapes_only(sample.extra["objects"])))
    for frames, objects in clips:
        truth += visible(frames, objects, POSITION_TOLERANCE)
    prompts = [
        (s.extra["target_description"], shapes_only(s.extra["target_objects"]))
        for s in samples[: args.prompts]
    ]
    print(
        f"{len(clips)} held-out clips ({sum(len(o) for _, o in clips)} objects; the clips "
        f"themselves: colour-visible {rate(truth):.1f}%), {len(prompts)} descriptions"
    )

    rows = {}
    models = {"untrained": args.untrained, "base": args.base, **{p.name: p for p in args.also}}
    for name, path in models.items():
        renderer, settings = load_renderer(path)
        began = time.perf_counter()
        figures = vae_figures(renderer, clips)
        figures |= t2v_figures(
            renderer, prompts, args.steps, settings.guidance_scale, settings.negative_prompt
        )
        figures["seconds"] = time.perf_counter() - began
        rows[name] = figures

    labels = {
        "psnr": "VAE PSNR (dB)",
        "colour": "VAE colour-visible (%)",
        "t2v_colour": "T2V colour in last frame (%)",
        "t2v_position": "T2V colour at position (%)",
        "seconds": "check time (s)",
    }
    print(f"{'':32s}" + "".join(f"{name:>12s}" for name in rows))
    for key, label in labels.items():
        print(f"{label:32s}" + "".join(f"{row[key]:12.1f}" for row in rows.values()))


if __name__ == "__main__":
    main()
