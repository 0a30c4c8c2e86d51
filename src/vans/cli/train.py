"""`vans train ...`: training stages, each from a YAML config plus KEY=VALUE overrides.

vans train sft-vdm --config configs/toy/sft_vdm.yaml train.steps=20 train.lr=1e-4
torchrun --nproc_per_node 2 -m vans train sft-vdm --config ...     (several processes)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vans.cli.apps import command_group
from vans.cli.embedder import train_embedder
from vans.cli.loading import quiet_model_libraries

train_app = command_group(
    "Train: SFT of the reasoner (VLM) and of the renderer (VDM), Joint-GRPO; VideoP2R's "
    "PA-GRPO; a toy renderer's VAE; the toy-world embedder."
)
train_app.command("embedder")(train_embedder)
console = Console(soft_wrap=True)

ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config", help="YAML config (see configs/toy/, configs/paper/); defaults if omitted."
    ),
]
Overrides = Annotated[
    list[str] | None,
    typer.Argument(
        help="Field overrides KEY=VALUE, dotted for nested fields (train.lr=1e-4).",
        show_default=False,
    ),
]
Resume = Annotated[
    bool, typer.Option("--resume", help="Continue from the newest checkpoint in train.out_dir.")
]


@train_app.command("sft-vlm")
def sft_vlm(overrides: Overrides = None, config: ConfigFile = None, resume: Resume = False) -> None:
    """SFT of the reasoner: LoRA on Qwen2.5-VL's language model (paper: 10K steps, lr 5e-5)."""
    _run("sft-vlm", config, overrides, resume)


@train_app.command("sft-vdm")
def sft_vdm(overrides: Overrides = None, config: ConfigFile = None, resume: Resume = False) -> None:
    """SFT of the renderer: flow matching on all Wan2.1 DiT blocks (paper: 20K steps, lr 5e-5)."""
    _run("sft-vdm", config, overrides, resume)


@train_app.command("vae")
def vae(overrides: Overrides = None, config: ConfigFile = None, resume: Resume = False) -> None:
    """Train a toy renderer's VAE as an autoencoder of the clips it will render (the real
    Wan2.1 VAE comes pretrained; VANS does not train it)."""
    _run("vae", config, overrides, resume)


@train_app.command("base-reasoner")
def base_reasoner(
    overrides: Overrides = None, config: ConfigFile = None, resume: Resume = False
) -> None:
    """Pretrain a toy reasoner to perceive the toy world, all parameters (the toy analogue
    of Qwen2.5-VL's pretraining; real runs start from the pretrained model instead)."""
    _run("base-reasoner", config, overrides, resume)


@train_app.command("sft-cot")
def sft_cot(overrides: Overrides = None, config: ConfigFile = None, resume: Resume = False) -> None:
    """SFT of a video-QA reasoner on VideoP2R's observation / reasoning / answer traces."""
    _run("sft-cot", config, overrides, resume)


@train_app.command("pa-grpo")
def pa_grpo(overrides: Overrides = None, config: ConfigFile = None, resume: Resume = False) -> None:
    """VideoP2R's process-aware GRPO on video QA (paper: 1000 steps, batch 56, 8 rollouts);
    `advantage=sequence` is the GRPO baseline."""
    _run("pa-grpo", config, overrides, resume)


@train_app.command("joint-grpo")
def joint_grpo(
    stage: Annotated[
        int,
        typer.Option(
            "--stage",
            min=1,
            max=2,
            help="1: GRPO on the reasoner with video rewards (renderer frozen); "
            "2: Flow-GRPO on the renderer with anchor captions (reasoner frozen).",
        ),
    ],
    overrides: Overrides = None,
    config: ConfigFile = None,
    resume: Resume = False,
) -> None:
    """Joint-GRPO (paper: Stage 1 800 steps, Stage 2 1K steps; G 8, lr 5e-5, beta 0.004)."""
    _run(f"joint-grpo-{stage}", config, overrides, resume)


def _run(stage: str, config: Path | None, overrides: list[str] | None, resume: bool) -> None:
    quiet_model_libraries()
    from vans.training.stages import run_stage

    run_stage(stage, config, overrides or [], resume=resume, console=console)
