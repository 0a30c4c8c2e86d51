"""`vans qa`: video question answering with VideoP2R's perception-then-reasoning traces."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from vans.cli.apps import SEEDS, command_group
from vans.outputs import claim_output
from vans.progress import progress_bar

qa_app = command_group("Video QA (VideoP2R): Video-R1 / VideoP2R data files.")
console = Console()
err_console = Console(stderr=True)


@qa_app.callback()
def qa() -> None:
    """Video QA (VideoP2R): Video-R1 / VideoP2R data files."""  # a group, even of one command


@qa_app.command()
def validate(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Video-R1 or VideoP2R files (.json, .json.gz, .jsonl); one part of a "
            "name.partIofN file stands for all N."
        ),
    ],
    video_root: Annotated[
        Path | None,
        typer.Option(help="Folder the rows' paths are relative to (default: each file's)."),
    ] = None,
    require_trace: Annotated[
        bool, typer.Option(help="Require VideoP2R's observation and process (SFT on traces).")
    ] = False,
    check_files: Annotated[
        bool, typer.Option(help="Check that every row's video or image exists.")
    ] = False,
) -> None:
    """Check every row of the files and list all problems, by file, row and field (exit
    code 1 if any)."""
    from vans.videoqa.rows import validate_rows

    rows, errors = validate_rows(
        files, video_root, require_trace=require_trace, check_files=check_files
    )
    for error in errors:
        err_console.print(str(error), markup=False, highlight=False, soft_wrap=True)
    kinds = Counter(row.problem_type for row in rows)
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    console.print(
        f"{len(rows)} valid row{'s' * (len(rows) != 1)}" + (f" ({summary})" if rows else ""),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if errors:
        raise typer.Exit(1)


@qa_app.command()
def toy(
    out: Annotated[Path, typer.Option(help="Output folder: train/, test/, test_heldout/.")],
    train_num: Annotated[int, typer.Option(min=1, help="Toy samples of the train split.")] = 400,
    test_num: Annotated[int, typer.Option(min=1, help="Toy samples of each test split.")] = 100,
    seed: Annotated[int, typer.Option(**SEEDS, help="Same seed, same benchmark.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace whatever --out holds.")] = False,
) -> None:
    """Write the toy video-QA benchmark: per split the toy clips and rows.json (Video-R1
    rows with the toy teacher's VideoP2R traces and the facts the toy judge checks)."""
    from vans.videoqa.toy import toy_qa_splits

    splits = toy_qa_splits(train_num, test_num, seed)
    settings = {name: config.to_dict() for name, config in splits.items()}
    claim_output(out, "qa toy", settings, resumable=False, overwrite=overwrite)
    from vans.videoqa.rows import load_rows
    from vans.videoqa.toy import write_toy_benchmark

    progress = progress_bar(console)
    with progress:

        def bar(name: str, config: Any) -> Any:
            task = progress.add_task(name, total=config.num)
            return lambda _: progress.advance(task)

        files = write_toy_benchmark(out, splits, on_split=bar)
        for name, path in files.items():
            rows = load_rows([path], check_files=True, require_trace=True)
            kinds = Counter(row.problem_type for row in rows)
            summary = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
            progress.console.print(
                f"{name}: {len(rows)} questions ({summary}) in {out / name}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )


@qa_app.command("eval")
def eval_command(
    reasoner: Annotated[Path, typer.Option(help="The reasoner directory (Qwen2.5-VL).")],
    files: Annotated[
        list[Path],
        typer.Argument(help="Evaluation files (Video-R1's eval_<benchmark>.json, toy rows.json)."),
    ],
    out: Annotated[Path, typer.Option(help="Output folder (rerun to resume).")],
    video_root: Annotated[
        Path | None, typer.Option(help="Folder the rows' paths are relative to.")
    ] = None,
    fps: Annotated[float, typer.Option(min=0.01, help="Frames a second of video.")] = 2.0,
    min_frames: Annotated[int, typer.Option(min=1)] = 4,
    max_frames: Annotated[int, typer.Option(min=1, help="VideoP2R: 32 at inference.")] = 32,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 1024,
    numerical: Annotated[
        str, typer.Option(help="numerical answers: relative (the paper) or exact (Video-R1).")
    ] = "relative",
    overwrite: Annotated[bool, typer.Option(help="Replace whatever --out holds.")] = False,
) -> None:
    """Answer every row of the files (greedy) and score them per benchmark: accuracy by the
    problem type's rule, per type and per task; VSI-Bench's MRA. Writes results.md and
    results.json; a rerun answers only what is missing."""
    from vans.errors import VansError
    from vans.videoqa.accuracy import NUMERICAL_RULES

    if numerical not in NUMERICAL_RULES:
        raise VansError(f"--numerical must be one of {', '.join(NUMERICAL_RULES)}")
    if min_frames > max_frames:
        raise VansError(f"--min-frames {min_frames} is more than --max-frames {max_frames}")
    from vans.videoqa.rows import load_rows

    benchmarks = {
        path.name.split(".")[0]: load_rows([path], video_root, check_files=True) for path in files
    }
    settings = {
        "reasoner": reasoner.resolve(),
        "files": [f.resolve() for f in files],
        "fps": fps,
        "min_frames": min_frames,
        "max_frames": max_frames,
        "max_new_tokens": max_new_tokens,
        "numerical": numerical,
    }
    claim_output(out, "qa eval", settings, resumable=True, overwrite=overwrite)
    import json

    from vans.cli.loading import quiet_model_libraries
    from vans.io import write_text
    from vans.videoqa.evaluate import EvalSettings, answer_rows, results_table, score_rows

    quiet_model_libraries()
    from vans.models.vlm import Reasoner

    model = Reasoner.from_pretrained(reasoner)
    every = EvalSettings(fps, min_frames, max_frames, max_new_tokens, numerical)
    results = {}
    progress = progress_bar(console)
    with progress:
        for name, rows in benchmarks.items():
            task = progress.add_task(name, total=len(rows))
            outputs = answer_rows(
                model, rows, every, out / name, on_row=lambda task=task: progress.advance(task)
            )
            results[name] = score_rows(rows, outputs, numerical)
    write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    table = results_table(results)
    write_text(out / "results.md", table)
    console.print(table, markup=False, highlight=False, soft_wrap=True)


@qa_app.command()
def cot(
    files: Annotated[list[Path], typer.Argument(help="Video-R1 rows to give traces to.")],
    out: Annotated[Path, typer.Option(help="Output folder (rerun to resume).")],
    teacher: Annotated[
        str, typer.Option(help="toy (the toy world's truth) or a Qwen2.5-VL directory.")
    ] = "toy",
    judge: Annotated[str, typer.Option(help="toy, http or local (the sufficiency check).")] = "toy",
    judge_url: Annotated[str | None, typer.Option(help="An http judge's base URL.")] = None,
    judge_model: Annotated[str | None, typer.Option(help="An http judge's model.")] = None,
    judge_dir: Annotated[Path | None, typer.Option(help="A local judge's directory.")] = None,
    video_root: Annotated[
        Path | None, typer.Option(help="Folder the rows' paths are relative to.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace whatever --out holds.")] = False,
) -> None:
    """VideoP2R's 3-step CoT pipeline: the teacher writes each row's observation, then its
    reasoning; the judge answers from the observation alone and the row is kept only if
    right. Writes rows.json (VideoP2R rows), kept.jsonl and rejected.jsonl (step, reason)."""
    from vans.videoqa.judge import JudgeConfig
    from vans.videoqa.rows import load_rows

    config = JudgeConfig(
        kind=judge,
        url=judge_url,
        model=judge_model,
        directory=str(judge_dir) if judge_dir else None,
        cache=str(out / "judge_cache.db"),
    )
    rows = load_rows(files, video_root, check_files=True)
    settings = {"files": [f.resolve() for f in files], "teacher": teacher, "judge": config}
    claim_output(out, "qa cot", settings, resumable=True, overwrite=overwrite)
    from vans.cli.loading import quiet_model_libraries
    from vans.videoqa.cot import ModelTeacher, ToyTeacher, run_cot
    from vans.videoqa.judge import build_judge

    quiet_model_libraries()
    writer = ToyTeacher() if teacher == "toy" else ModelTeacher(teacher)
    progress = progress_bar(console)
    with progress:
        task = progress.add_task("traces", total=len(rows))
        decisions = run_cot(
            rows, writer, build_judge(config), out, on_row=lambda _: progress.advance(task)
        )
    kept = sum(d.kept for d in decisions)
    why = Counter(d.reason for d in decisions if not d.kept)
    lines = [f"kept {kept} of {len(decisions)} rows: {out / 'rows.json'}"]
    lines += [f"rejected {n}: {reason}" for reason, n in why.most_common()]  # by reason
    console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)
