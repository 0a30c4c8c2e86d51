"""`vans eval`: the paper's table (BLEU@4, ROUGE-L, FVD, CLIP-V, CLIP-T) for a model, and
the truth checks of its answers on toy-world samples (`evaluation/toy_truth.py`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vans.cli.apps import PROFILE_HELP, SEEDS
from vans.cli.loading import parse_dtype, quiet_model_libraries
from vans.errors import VansError
from vans.progress import progress_bar

console = Console(soft_wrap=True)


def eval_command(
    manifest: Annotated[Path, typer.Option(help="Manifest of the samples to evaluate.")],
    out: Annotated[Path, typer.Option(help="Output directory (rerun it to resume).")],
    checkpoint: Annotated[
        Path | None, typer.Option(help="VANS checkpoint to run over the manifest.")
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(help="Score saved outputs instead: a dir with predictions.jsonl."),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated subset of bleu4,rouge_l,fvd,clip_v,clip_t "
            "(default: every metric the given models allow)."
        ),
    ] = None,
    embedder: Annotated[
        Path | None,
        typer.Option(help="CLIP (ViT-B/32) dir or toy-world embedder dir for CLIP-V/CLIP-T."),
    ] = None,
    i3d: Annotated[
        Path | None, typer.Option(help="TorchScript I3D (i3d_torchscript.pt) for FVD.")
    ] = None,
    rouge_variant: Annotated[
        str, typer.Option(help="ROUGE-L in the table: coco (beta 1.2) or rouge-score (F1).")
    ] = "coco",
    name: Annotated[str | None, typer.Option(help="Row name in the table.")] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N samples.")] = None,
    seed: Annotated[
        int, typer.Option(**SEEDS, help="Base seed (each sample's depends on its id).")
    ] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32, or bfloat16 on a GPU.")] = "float32",
    profile: Annotated[str | None, typer.Option(help=PROFILE_HELP)] = None,
) -> None:
    """Evaluate a checkpoint (or saved predictions) on a manifest; resumable. Toy-world
    samples are also checked against their ground truth (objects, event, where the movers
    end), so a checkpoint renders their answer videos even when no video metric is asked."""
    from vans.data.manifest import validate_manifest
    from vans.devices import resolve_device
    from vans.evaluation.embedders import load_embedder
    from vans.evaluation.fvd import I3D
    from vans.evaluation.report import results_markdown
    from vans.evaluation.runner import (
        METRICS,
        EvalSettings,
        PipelinePredictor,
        SavedPredictions,
        check_metrics,
        evaluate,
    )
    from vans.evaluation.toy_truth import is_toy_sample

    if (checkpoint is None) == (predictions is None):
        raise VansError("give exactly one of --checkpoint and --predictions")
    if profile is not None:
        if checkpoint is None:
            raise VansError("--profile applies to --checkpoint (saved predictions are answered)")
        from vans.models.profiles import check_profile

        check_profile(profile)
    if limit is not None and limit < 1:
        raise VansError(f"--limit must be >= 1, got {limit}")
    device = str(resolve_device(device))
    report = validate_manifest(manifest)
    by_row: dict[str, list[str]] = {}
    for p in report.problems:
        by_row.setdefault(f"{manifest}:{p.line}", []).append(f"{p.field}: {p.message}")
    failures = [{"id": row, "error": "; ".join(problems)} for row, problems in by_row.items()]
    for failure in failures:
        console.print(f"skipping row {failure['id']}: {failure['error']}", markup=False)
    samples = report.samples[:limit] if limit is not None else report.samples
    emb = load_embedder(embedder, device=device) if embedder is not None else None
    detector = I3D.from_file(i3d, device=device) if i3d is not None else None
    if metrics is None:
        chosen = [m for m in METRICS if _available(m, emb is not None, detector is not None)]
        skipped = [m for m in METRICS if m not in chosen]
        if skipped:
            console.print(f"not computing {', '.join(skipped)}: pass --embedder / --i3d")
    else:
        chosen = [m.strip() for m in metrics.split(",") if m.strip()]
    chosen_metrics = check_metrics(chosen, embedder=emb, i3d=detector)
    source = checkpoint if checkpoint is not None else predictions
    settings = EvalSettings(
        metrics=chosen_metrics,
        rouge_variant=rouge_variant,
        source=str(Path(source).resolve()),
        embedder=str(embedder.resolve()) if embedder is not None else None,
        i3d=str(i3d.resolve()) if i3d is not None else None,
        seed=seed,
        profile=profile,
    )
    if checkpoint is not None:
        quiet_model_libraries()
        from vans.models.pipeline import VANSPipeline

        pipe = VANSPipeline.from_checkpoint(
            checkpoint, device=device, dtype=parse_dtype(dtype), profile=profile
        )
        wants_video = any(m in ("fvd", "clip_v", "clip_t") for m in chosen_metrics)
        wants_video |= any(is_toy_sample(s.extra) for s in samples)  # for the truth checks
        predictor = PipelinePredictor(pipe, seed=seed, videos=wants_video)
    else:
        predictor = SavedPredictions(predictions)
    counts: Counter[str] = Counter()
    progress = progress_bar(console)
    with progress:
        task = progress.add_task("evaluating", total=len(samples))

        def on_sample(sample_id: str, status: str) -> None:
            counts[status] += 1
            progress.advance(task)
            if status == "failed":
                progress.console.print(f"failed: {sample_id} (see failures.jsonl)", markup=False)

        result = evaluate(
            samples,
            predictor,
            out,
            settings,
            embedder=emb,
            i3d=detector,
            name=name or Path(source).resolve().name,
            failures=failures,
            on_sample=on_sample,
        )
    failed = counts["failed"] + len(failures)
    console.print(
        f"{counts['done']} scored, {counts['skipped']} already done, {failed} failed",
        markup=False,
    )
    if counts["done"] + counts["skipped"] == 0:
        raise VansError(f"{out}: no sample could be scored; the reasons are in failures.jsonl")
    console.print(results_markdown([result]), markup=False, highlight=False)
    console.print(f"results: {out / 'results.md'}, {out / 'results.json'}", markup=False)
    if failed:
        # The table stands for the scored samples only: a script must not take it for all.
        raise typer.Exit(1)


def _available(metric: str, has_embedder: bool, has_i3d: bool) -> bool:
    if metric in ("clip_v", "clip_t"):
        return has_embedder
    if metric == "fvd":
        return has_embedder or has_i3d
    return True
