"""`vans data ...`: data-set commands."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vans.cli.apps import SEEDS, command_group
from vans.data.manifest import load_manifest, validate_manifest
from vans.data.schema import TaskType
from vans.data.toyworld import FAMILY_NAMES, ToyWorldConfig
from vans.errors import VansError
from vans.outputs import claim_output
from vans.progress import progress_bar

data_app = command_group()  # its help line is in vans.cli.main.COMMANDS
console = Console()
_TOY = ToyWorldConfig()  # CLI defaults come from the config's
PREVIEW_SAMPLES = 12
err_console = Console(stderr=True)


@data_app.command()
def validate(
    manifest: Annotated[Path, typer.Argument(help="JSON-lines manifest of VNEP samples.")],
    check_files: Annotated[
        bool,
        typer.Option("--check-files/--no-check-files", help="Check that every video file exists."),
    ] = True,
) -> None:
    """Check every row of a manifest and list all problems (exit code 1 if any)."""
    report = validate_manifest(manifest, check_files=check_files)
    error = report.error()
    if error is not None:
        # markup off: messages quote user data (paths, JSON) that may contain [brackets];
        # soft_wrap keeps one problem per line whatever the terminal width.
        err_console.print(str(error), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    count = len(report.samples)
    tasks = Counter(sample.task for sample in report.samples)
    by_task = ", ".join(f"{tasks[task]} {task.value}" for task in TaskType)
    console.print(
        f"{manifest}: {count} sample{'s' * (count != 1)} OK ({by_task})",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def parse_size(text: str) -> tuple[int, int]:
    """ "352x640" -> (352, 640)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise VansError(f"--size must look like HxW (e.g. 64x64), got {text!r}") from None
    return h, w


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@data_app.command()
def toyworld(
    out: Annotated[Path, typer.Option(help="Output directory (manifest.jsonl, videos/).")],
    num: Annotated[int, typer.Option(min=1, help="Number of samples (manifest rows).")] = _TOY.num,
    seed: Annotated[
        int, typer.Option(**SEEDS, help="Random seed: same seed, same data.")
    ] = _TOY.seed,
    size: Annotated[
        str, typer.Option(help="Canvas HxW, square or landscape, up to 352x640.")
    ] = "x".join(map(str, _TOY.size)),
    fps: Annotated[float, typer.Option(help="Frame rate of the clips.")] = _TOY.fps,
    input_frames: Annotated[int, typer.Option(help="Frames per input clip.")] = _TOY.input_frames,
    target_frames: Annotated[
        int, typer.Option(help="Frames per target clip.")
    ] = _TOY.target_frames,
    families: Annotated[
        str, typer.Option(help=f"Comma-separated event families, from: {', '.join(FAMILY_NAMES)}.")
    ] = ",".join(_TOY.families),
    multi_future: Annotated[
        float, typer.Option(help="Chance a scene also emits its hypothetical-question future.")
    ] = _TOY.multi_future,
    held_out: Annotated[
        str, typer.Option(help='Comma-separated colour-shape pairs, e.g. "red circle,blue square".')
    ] = ",".join(_TOY.held_out),
    held_out_mode: Annotated[
        str, typer.Option(help="exclude: never use held-out pairs; only: answers always use one.")
    ] = _TOY.held_out_mode,
    overwrite: Annotated[bool, typer.Option(help="Replace whatever --out holds.")] = False,
) -> None:
    """Generate a deterministic toy-world VNEP data set (no downloads, known ground truth)."""
    config = ToyWorldConfig(
        num=num,
        seed=seed,
        size=parse_size(size),
        fps=fps,
        input_frames=input_frames,
        target_frames=target_frames,
        families=_split(families),
        multi_future=multi_future,
        held_out=_split(held_out),
        held_out_mode=held_out_mode,
    )
    claim_output(out, "data toyworld", config.to_dict(), resumable=False, overwrite=overwrite)
    from vans.data.toyworld import write_toyworld  # torch and PyAV: only when generating

    progress = progress_bar(console)
    with progress:
        task = progress.add_task("toy world", total=num)
        manifest = write_toyworld(config, out, on_sample=lambda _: progress.advance(task))
    console.print(f"wrote {num} samples: {manifest}", markup=False, highlight=False, soft_wrap=True)


@data_app.command()
def preview(
    manifest: Annotated[Path, typer.Argument(help="JSON-lines manifest of VNEP samples.")],
    out: Annotated[Path, typer.Option(help="Output directory for grid.gif and index.html.")],
    max_samples: Annotated[int, typer.Option(min=1, help="Samples to show.")] = PREVIEW_SAMPLES,
    overwrite: Annotated[bool, typer.Option(help="Replace whatever --out holds.")] = False,
) -> None:
    """Write an animated GIF grid (input then target) and an HTML page of a data set."""
    samples = load_manifest(manifest)
    settings = {"manifest": manifest.resolve(), "max_samples": max_samples}
    claim_output(out, "data preview", settings, resumable=False, overwrite=overwrite)
    from vans.data.preview import write_preview  # torch and PyAV: only when drawing

    page = write_preview(samples, out, max_samples=max_samples)
    console.print(f"preview: {page}", markup=False, highlight=False, soft_wrap=True)


@data_app.command()
def build(
    annotations: Annotated[
        Path,
        typer.Option(help="The annotation file (COIN / YouCook2 / ActivityNet JSON, pairs TSV)."),
    ],
    fmt: Annotated[str, typer.Option("--format", help="coin, youcook2, activitynet or pairs.")],
    videos: Annotated[Path, typer.Option(help="Folder of the videos (searched recursively).")],
    out: Annotated[Path, typer.Option(help="Output folder (manifest.jsonl, report.json, clips/).")],
    captioner: Annotated[
        str,
        typer.Option(help="offline, local:DIR (Qwen2.5-VL) or http(s)://host:port/v1#model."),
    ] = "offline",
    writer: Annotated[
        str, typer.Option(help="offline, local:DIR (a causal LM) or http(s)://host:port/v1#model.")
    ] = "offline",
    truth: Annotated[
        Path | None,
        typer.Option(help="Ground-truth captions for the offline captioner (toy videos)."),
    ] = None,
    prompts: Annotated[
        Path | None, typer.Option(help="Folder of prompt files replacing ours by name.")
    ] = None,
    source: Annotated[
        str | None, typer.Option(help="The manifest's source (default: --format).")
    ] = None,
    task_names: Annotated[
        Path | None,
        typer.Option(help="CSV of id,name rows naming task ids (YouCook2's label_foodtype.csv)."),
    ] = None,
    clip_fps: Annotated[
        float, typer.Option(help="Clips are resampled to at most this rate (> 0).")
    ] = 16.0,
    min_seconds: Annotated[float, typer.Option(min=0, help="Shorter steps are not cut.")] = 1.0,
    max_skipped: Annotated[
        int, typer.Option(min=0, help="Unusable steps a pair may jump over.")
    ] = 1,
    max_overlap: Annotated[
        float,
        typer.Option(
            min=0, help="Seconds a target may start before its input ends (later ones are tried)."
        ),
    ] = 1.0,
    chunk: Annotated[
        int,
        typer.Option(min=1, help="Model requests sent and cached together (a kill loses one)."),
    ] = 32,
    concurrency: Annotated[int, typer.Option(min=1, help="HTTP requests in flight.")] = 16,
    timeout: Annotated[float, typer.Option(help="Seconds per HTTP request.")] = 120.0,
    retries: Annotated[int, typer.Option(min=0, help="Retries of a failed HTTP request.")] = 3,
    api_key_env: Annotated[
        str, typer.Option(help="Environment variable holding the HTTP key.")
    ] = "OPENAI_API_KEY",
    overwrite: Annotated[bool, typer.Option(help="Replace whatever --out holds.")] = False,
) -> None:
    """Build a VNEP manifest from annotated videos: cut, caption, pair, write, check leaks;
    resumable (a rerun calls nothing it has done)."""
    from vans.vansdata.annotations import FORMATS

    if fmt not in FORMATS:
        raise VansError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    # PyAV, torch and httpx: only when building
    from vans.vansdata.backends import build_backend
    from vans.vansdata.build import BuildSettings, load_inputs
    from vans.vansdata.build import build as run_build
    from vans.vansdata.prompts import Prompts
    from vans.vansdata.report import rejection_counts, summary_lines

    config = BuildSettings(
        annotations,
        fmt,  # type: ignore[arg-type]
        videos,
        source=source,
        task_names=task_names,
        clip_fps=clip_fps,
        min_seconds=min_seconds,
        max_skipped=max_skipped,
        max_overlap_s=max_overlap,
        chunk=chunk,
    )
    # Every input is checked before --out is claimed: a typo must not lock the folder to it.
    inputs = load_inputs(config)
    options = dict(
        truth=truth,
        concurrency=concurrency,
        timeout_s=timeout,
        retries=retries,
        api_key_env=api_key_env or None,
    )
    backends = {
        role: build_backend(spec, role, **options)
        for role, spec in (("captioner", captioner), ("writer", writer))
    }
    prompt_files = Prompts(prompts)
    settings = {
        "annotations": annotations.resolve(),
        "format": fmt,
        "videos": videos.resolve(),
        "source": source,
        "task_names": task_names.resolve() if task_names is not None else None,
        "clip_fps": clip_fps,
        "min_seconds": min_seconds,
        "max_skipped": max_skipped,
        "max_overlap_s": max_overlap,
    }
    resumed = claim_output(out, "data build", settings, resumable=True, overwrite=overwrite)
    if resumed:
        console.print(f"resuming {out}", markup=False, highlight=False)
    progress = progress_bar(console)
    tasks: dict[str, int] = {}

    def tick(phase: str, total: int | None, advance: int) -> None:
        if phase not in tasks:
            tasks[phase] = progress.add_task(phase, total=total or 0)
        elif total is not None:
            progress.update(tasks[phase], total=total)
        progress.advance(tasks[phase], advance)

    with progress:
        report = run_build(
            config, out, backends["captioner"], backends["writer"], prompt_files, tick, inputs
        )
    for line in summary_lines(report):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    manifest = out / ("manifest.jsonl" if report["complete"] else "manifest.partial.jsonl")
    console.print(
        f"wrote {manifest} and {out / 'report.json'}", markup=False, highlight=False, soft_wrap=True
    )
    failed = sum(calls["failed"] for calls in report["calls"].values())
    if failed:
        reasons = sorted({r["reason"].partition("call failed: ")[2] for r in report["rejections"]})
        reasons = [r for r in reasons if r]
        # the manifest lacks what those calls would have given: say so in the exit code
        err_console.print(
            f"{failed} model calls failed ({'; '.join(reasons)}): {manifest} is incomplete; "
            "run the same command again to retry them (nothing done is repeated)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    if not report["counts"]["samples"]:
        err_console.print(
            f"no samples: every item was rejected ({rejection_counts(report)}); "
            f"{out / 'report.json'} gives each reason",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
