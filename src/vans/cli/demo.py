"""`vans demo`: the main job of the README.

Until a trained checkpoint ships, the demo shows the data the system learns from: it
generates a small toy-world set (both task families, multi-future questions) and writes a
preview of inputs, targets, questions, reasoning and answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vans.data.manifest import load_manifest
from vans.data.preview import write_preview
from vans.data.toyworld import ToyWorldConfig, write_toyworld

console = Console(soft_wrap=True)  # long captions stay on one line: easy to copy and grep


def demo(
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("outputs/demo"),
    num: Annotated[int, typer.Option(help="Toy-world samples to generate.")] = 16,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Generate a small toy-world data set and write a GIF + HTML preview of it."""
    config = ToyWorldConfig(num=num, seed=seed, multi_future=0.5)
    with console.status("generating toy-world samples"):
        manifest = write_toyworld(config, out / "toyworld")
    samples = load_manifest(manifest)
    with console.status("writing preview"):
        page = write_preview(samples, out / "preview", max_samples=num)
    for s in samples[:4]:
        console.print(f"[bold]{s.id}[/] ({s.task.value}) Q: {s.question}", highlight=False)
        console.print(f"  [Think] {s.reasoning}", markup=False, highlight=False)
        console.print(f"  [Ans] {s.answer}", markup=False, highlight=False)
    console.print(
        f"data set: {manifest}\npreview:  {page}\ngrid:     {page.parent / 'grid.gif'}",
        markup=False,
        highlight=False,
    )
