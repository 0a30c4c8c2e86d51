"""`vans qa`: video question answering with VideoP2R's perception-then-reasoning traces."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vans.cli.apps import command_group

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
