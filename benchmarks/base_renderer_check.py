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

The figures are `vans.evaluation.bases`' (what base.json records), here side by side with
the untrained model and any other checkpoint; the ground-truth clips score the ceiling.

Run: `python benchmarks/base_renderer_check.py` (defaults: the paths of `vans reproduce
toybases --out runs/toybases`). `--base` may also be a step-N checkpoint of the T2V run
(checks a run that is still training).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from vans.data.manifest import load_manifest
from vans.evaluation.bases import renderer_clips, t2v_figures, vae_figures
from vans.models.checkpoint import VANSSettings, load_settings
from vans.models.vdm import Renderer


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, default=Path("runs/toybases/renderer_t2v/final"))
    parser.add_argument("--untrained", type=Path, default=Path("runs/toybases/init"))
    parser.add_argument(
        "--heldout", type=Path, default=Path("runs/toybases/data/val/manifest.jsonl")
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
    rows = {}
    models = {"untrained": args.untrained, "base": args.base, **{p.name: p for p in args.also}}
    for name, path in models.items():
        renderer, settings = load_renderer(path)
        clips = renderer_clips(samples[: args.clips], settings)
        began = time.perf_counter()
        figures = vae_figures(renderer, clips)
        figures |= t2v_figures(renderer, settings, samples[: args.prompts], args.steps)
        figures["seconds"] = time.perf_counter() - began
        rows[name] = figures
    print(f"{len(clips)} held-out clips, {min(args.prompts, len(samples))} descriptions")

    labels = {
        "vae_psnr": "VAE PSNR (dB)",
        "vae_colour_visible": "VAE colour-visible (%)",
        "clip_colour_visible": "clips' own colour-visible (%)",
        "t2v_colour": "T2V colour in last frame (%)",
        "t2v_position": "T2V colour at position (%)",
    }
    print(f"{'':32s}" + "".join(f"{name:>12s}" for name in rows))
    for key, label in labels.items():
        scale = 1 if key == "vae_psnr" else 100
        print(f"{label:32s}" + "".join(f"{scale * row[key]:12.1f}" for row in rows.values()))
    print(f"{'check time (s)':32s}" + "".join(f"{row['seconds']:12.1f}" for row in rows.values()))


if __name__ == "__main__":
    main()
