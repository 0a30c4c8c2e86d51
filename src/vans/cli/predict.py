"""`vans init-tiny` and `vans predict`: make a checkpoint, answer questions with videos."""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from vans.cli.apps import PROFILE_HELP, SEEDS
from vans.cli.loading import parse_dtype, quiet_model_libraries
from vans.devices import resolve_device
from vans.io import write_json
from vans.outputs import claim_output, mark_output
from vans.progress import progress_bar
from vans.timing import Timings

console = Console(soft_wrap=True)


def init_tiny(
    out: Annotated[Path, typer.Option(help="Checkpoint directory to write.")],
    seed: Annotated[int, typer.Option(**SEEDS, help="Seed of the random weights.")] = 0,
    preset: Annotated[
        str,
        typer.Option(help="Renderer sizes: tiny (tests, fastest) or toy (learns the toy world)."),
    ] = "tiny",
    overwrite: Annotated[bool, typer.Option(help="Replace whatever --out holds.")] = False,
) -> None:
    """Write a tiny random VANS checkpoint (real Qwen2.5-VL + Wan2.1 classes, toy tokenizers)."""
    settings = {"seed": seed, "preset": preset}
    claim_output(out, "init-tiny", settings, resumable=False, overwrite=overwrite)
    quiet_model_libraries()
    from vans.models.checkpoint import init_tiny as write_tiny_checkpoint

    with console.status("training tokenizers and building tiny models"):
        path = write_tiny_checkpoint(out, seed=seed, preset=preset)
    mark_output(path, "init-tiny", settings)
    console.print(f"tiny checkpoint: {path}", markup=False, highlight=False)


def predict(
    checkpoint: Annotated[Path, typer.Option(help="VANS checkpoint directory.")],
    question: Annotated[
        list[str], typer.Option(help="A question; repeat for several futures of one video.")
    ],
    out: Annotated[Path, typer.Option(help="Output directory.")],
    video: Annotated[Path | None, typer.Option(help="Input video.")] = None,
    image: Annotated[
        Path | None, typer.Option(help="Input image, treated as a static clip.")
    ] = None,
    seed: Annotated[int, typer.Option(**SEEDS, help="Seed for sampling and noise.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    dtype: Annotated[
        str, typer.Option(help="float32, or bfloat16 on a GPU (the VAE stays float32).")
    ] = "float32",
    profile: Annotated[str | None, typer.Option(help=PROFILE_HELP)] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace whatever --out holds.")] = False,
) -> None:
    """Predict what happens next: reasoning, a caption and a video per question."""
    quiet_model_libraries()
    from vans.data.video import write_mp4
    from vans.models.pipeline import VANSPipeline, check_questions, load_input
    from vans.models.profiles import check_profile

    questions = check_questions(question)
    resolve_device(device)  # before --out is made: a typo must not leave a folder behind
    if profile is not None:
        check_profile(profile)
    claim_output(
        out,
        "predict",
        {
            "checkpoint": checkpoint,
            "video": video,
            "image": image,
            "questions": questions,
            "profile": profile,
        },
        resumable=False,
        overwrite=overwrite,
    )
    timings = Timings()
    with timings.stage("load"):
        pipe = VANSPipeline.from_checkpoint(
            checkpoint, device=device, dtype=parse_dtype(dtype), profile=profile
        )
    with timings.stage("decode"):
        clip = load_input(pipe.settings, video=video, image=image)
    progress = progress_bar(console)
    with progress:
        task = progress.add_task("denoising", total=pipe.settings.steps)
        answers = pipe(
            questions,
            clip=clip,
            seed=seed,
            timings=timings,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    records = []
    for i, (q, a) in enumerate(zip(questions, answers, strict=True), 1):
        path = write_mp4(out / f"answer_{i}_{_slug(q)}.mp4", a.video, pipe.settings.output_fps)
        records.append(
            {
                "question": q,
                "think": a.think,
                "caption": a.caption,
                "well_formed": a.well_formed,
                "video": path.name,
            }
        )
        console.print(f"[bold]Q{i}[/] {escape(q)}", highlight=False)
        console.print(f"  [Think] {a.think}", markup=False, highlight=False)
        console.print(f"  [Ans] {a.caption}", markup=False, highlight=False)
        console.print(f"  video: {path}", markup=False, highlight=False)
    report = {
        "checkpoint": str(checkpoint),
        "input": str(video if video is not None else image),
        "seed": seed,
        "profile": profile,
        "answers": records,
        "settings": asdict(pipe.settings),
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
    }
    write_json(out / "prediction.json", report)
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in timings.items())
    console.print(f"timings: {stages}\nreport: {out / 'prediction.json'}", markup=False)


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "question"
