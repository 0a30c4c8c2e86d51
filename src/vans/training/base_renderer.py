"""The toy renderer base from nothing (`vans train base-renderer`): the toy analogue of the
pretrained Wan2.1 that VANS starts from.

VANS fine-tunes a renderer that can already draw: Wan2.1's VAE reconstructs videos and its
DiT is a text-to-video model. A toy renderer built from a config can do neither, so its
SFT would have to learn the toy world's pictures and VANS's conditioning at once. The base
is made in four resumable steps, each skipped when its output exists:

1. the toy sets: training clips (`TRAIN_DATA`; every colour-shape composition, as a
   foundation model sees everything) and held-out clips (`HELDOUT_DATA`, another seed);
2. a random checkpoint with the "toy-base" renderer (`RENDERER_PRESETS`);
3. `vans train vae` with configs/toy/base_renderer_vae.yaml: the VAE as an autoencoder of
   toy clips, objects weighted (`VAEConfig.foreground_weight`);
4. `vans train sft-vdm` with configs/toy/base_renderer_t2v.yaml: text-to-video pretraining
   of the DiT and the text encoder on target and input clips with their descriptions
   (`SFTVDMConfig.clips`, `train_text_encoder`), no reference frames.

The result, the T2V run's `final/`, is a VANS checkpoint whose vdm/ is the base; VANS's
SFT-VDM starts from it with its 6 reference latents and a frozen text encoder.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from vans.data.toyworld import ToyWorldConfig, write_toyworld
from vans.models.checkpoint import (
    RENDERER_PRESETS,
    SETTINGS_FILE,
    init_tiny,
    load_settings,
    save_checkpoint,
)
from vans.models.vdm import Renderer
from vans.training.loop import FINAL_DIR
from vans.training.stage_io import CopiedPart
from vans.training.stages import run_stage, stage_config

TRAIN_DATA = ToyWorldConfig(num=4000, seed=1000)
"""The base's training clips: 4000 samples, 8000 clips (targets and inputs)."""
HELDOUT_DATA = ToyWorldConfig(num=200, seed=2000)
"""Held-out clips (eval losses, benchmarks/base_renderer_check.py)."""
VAE_CONFIG = Path("configs/toy/base_renderer_vae.yaml")
T2V_CONFIG = Path("configs/toy/base_renderer_t2v.yaml")
PRESET = "toy-base"


def init_renderer_base(path: str | Path, *, seed: int = 0) -> Path:
    """A random checkpoint with the "toy-base" renderer (and `init_tiny`'s toy reasoner,
    which the base never trains)."""
    with tempfile.TemporaryDirectory() as tmp:
        toy = init_tiny(Path(tmp) / "toy", seed=seed, preset="toy")
        tokenizer = Renderer.from_pretrained(toy / "vdm").tokenizer
        renderer = Renderer.random(tokenizer, seed=seed, **RENDERER_PRESETS[PRESET])
        return save_checkpoint(path, CopiedPart(toy / "vlm"), renderer, load_settings(toy))


def build_renderer_base(
    vae_config: Path = VAE_CONFIG,
    t2v_config: Path = T2V_CONFIG,
    vae_overrides: Sequence[str] = (),
    t2v_overrides: Sequence[str] = (),
    *,
    console: Console | None = None,
) -> Path:
    """Run the steps of the module docstring that have not run (an interrupted stage
    resumes from its newest checkpoint); returns the base's checkpoint directory. Paths
    (data, init checkpoint, runs) are the configs'."""
    vae = stage_config("vae", vae_config, vae_overrides)
    t2v = stage_config("sft-vdm", t2v_config, t2v_overrides)
    for manifest, data in ((vae.train_manifest, TRAIN_DATA), (vae.eval_manifest, HELDOUT_DATA)):
        if manifest is not None and not Path(manifest).exists():
            write_toyworld(data, Path(manifest).parent)
    if not (Path(vae.checkpoint) / SETTINGS_FILE).exists():
        init_renderer_base(vae.checkpoint)
    stages = (("vae", vae_config, vae_overrides, vae), ("sft-vdm", t2v_config, t2v_overrides, t2v))
    for name, file, overrides, config in stages:
        if not (Path(config.train.out_dir) / FINAL_DIR).exists():
            run_stage(name, file, overrides, resume=True, console=console)
    return Path(t2v.train.out_dir) / FINAL_DIR
