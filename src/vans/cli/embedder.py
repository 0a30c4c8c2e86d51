"""`vans train embedder`: train the toy-world video-text embedder (CLIP-V/CLIP-T stand-in)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vans.cli.apps import SEEDS
from vans.progress import progress_bar
from vans.training import embedder as training
from vans.training.embedder import EmbedderProgress, EmbedderTrainConfig

console = Console()
_DEFAULTS = EmbedderTrainConfig()  # CLI defaults come from the config's


def train_embedder(
    data: Annotated[
        Path, typer.Option(help="Data set directory (manifest.jsonl) or a manifest file.")
    ],
    out: Annotated[Path, typer.Option(help="Output directory for the trained embedder.")],
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = _DEFAULTS.steps,
    batch_size: Annotated[
        int, typer.Option(help="(clip, caption) pairs per step.")
    ] = _DEFAULTS.batch_size,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, cosine).")] = _DEFAULTS.lr,
    embed_dim: Annotated[
        int, typer.Option(help="Size of the shared embedding space.")
    ] = _DEFAULTS.embed_dim,
    val_fraction: Annotated[
        float, typer.Option(help="Fraction of scenes held out for the retrieval figure.")
    ] = _DEFAULTS.val_fraction,
    clip_frames: Annotated[
        int, typer.Option(help="Frames decoded per target clip.")
    ] = _DEFAULTS.clip_frames,
    frames_per_sample: Annotated[
        int, typer.Option(help="Random frames per clip at each training step.")
    ] = _DEFAULTS.frames_per_sample,
    seed: Annotated[
        int, typer.Option(**SEEDS, help="Seed: split, initialisation, order.")
    ] = _DEFAULTS.seed,
) -> None:
    """Train the toy-world video-text embedder and report its held-out caption retrieval."""
    config = EmbedderTrainConfig(
        data_dir=str(data),
        out_dir=str(out),
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        embed_dim=embed_dim,
        val_fraction=val_fraction,
        clip_frames=clip_frames,
        frames_per_sample=frames_per_sample,
        seed=seed,
    )
    progress = progress_bar(console)
    tasks: dict[str, int] = {}

    def report(update: EmbedderProgress) -> None:
        if update.stage not in tasks:
            label = "reading clips" if update.stage == "read" else "training"
            tasks[update.stage] = progress.add_task(label, total=update.total)
        description = None if update.loss is None else f"training (loss {update.loss:.3f})"
        progress.update(tasks[update.stage], completed=update.done, description=description)

    with progress:
        result = training.train_embedder(config, progress=report)
    console.print(
        f"held-out caption retrieval (top-1, {result.num_val} samples of unseen scenes): "
        f"video->text {result.video_to_text:.1%}, text->video {result.text_to_video:.1%} "
        f"(exact wording {result.video_to_text_exact:.1%}; untrained "
        f"{result.untrained_video_to_text:.1%}); {result.num_train} training samples, "
        f"{result.seconds:.0f} s\nsaved: {result.out_dir}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
