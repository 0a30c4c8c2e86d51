"""`vans train ...`: training stages, each from a YAML config plus KEY=VALUE overrides.

vans train sft-vdm --config configs/toy/sft_vdm.yaml train.steps=20 train.lr=1e-4
torchrun --nproc_per_node 2 -m vans train sft-vdm --config ...     (several processes)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from vans.cli.loading import quiet_model_libraries

train_app = typer.Typer(
    help=(
        "Train: SFT of the reasoner (VLM) and of the renderer (VDM), Joint-GRPO; a toy "
        "renderer's VAE; the toy-world embedder."
    ),
    no_args_is_help=True,
)
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


def run_stage(
    config_cls: type[Any],
    build_task: Callable[[Any], Any],
    config_file: Path | None,
    overrides: list[str] | None,
    resume: bool,
) -> Any:
    """Load the stage's config (file, then overrides), build its task and train it; the
    resolved config is saved with the run. Returns the `TrainResult`."""
    from vans.training.config import config_to_dict, load_config
    from vans.training.loop import train

    config = load_config(config_cls, config_file, overrides or [])
    task = build_task(config)
    return train(
        task, config.train, resume=resume, console=console, run_config=config_to_dict(config)
    )


@train_app.command("sft-vlm")
def sft_vlm(overrides: Overrides = None, config: ConfigFile = None, resume: Resume = False) -> None:
    """SFT of the reasoner: LoRA on Qwen2.5-VL's language model (paper: 10K steps, lr 5e-5)."""
    quiet_model_libraries()
    from vans.training.sft_vlm import SFTVLMConfig, build_sft_vlm_task

    run_stage(SFTVLMConfig, build_sft_vlm_task, config, overrides, resume)


@train_app.command("sft-vdm")
def sft_vdm(overrides: Overrides = None, config: ConfigFile = None, resume: Resume = False) -> None:
    """SFT of the renderer: flow matching on all Wan2.1 DiT blocks (paper: 20K steps, lr 5e-5)."""
    quiet_model_libraries()
    from vans.training.sft_vdm import SFTVDMConfig, build_sft_vdm_task

    run_stage(SFTVDMConfig, build_sft_vdm_task, config, overrides, resume)


@train_app.command("vae")
def vae(overrides: Overrides = None, config: ConfigFile = None, resume: Resume = False) -> None:
    """Train a toy renderer's VAE as an autoencoder of the clips it will render (the real
    Wan2.1 VAE comes pretrained; VANS does not train it)."""
    quiet_model_libraries()
    from vans.training.vae import VAEConfig, build_vae_task

    run_stage(VAEConfig, build_vae_task, config, overrides, resume)


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
    quiet_model_libraries()
    if stage == 1:
        from vans.training.joint_grpo_vlm import JointGRPOVLMConfig, build_joint_grpo_vlm_task

        run_stage(JointGRPOVLMConfig, build_joint_grpo_vlm_task, config, overrides, resume)
    else:
        from vans.training.joint_grpo_vdm import JointGRPOVDMConfig, build_joint_grpo_vdm_task

        run_stage(JointGRPOVDMConfig, build_joint_grpo_vdm_task, config, overrides, resume)
