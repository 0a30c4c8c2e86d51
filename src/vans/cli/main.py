"""Entry point of the `vans` command: one sub-app per concept."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from vans.errors import VansError

app = typer.Typer(
    name="vans",
    help="Video-as-Answer: predict the next event of a video and show it as a video.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def main() -> None:
    """Run the CLI, turning user errors into one message and a non-zero exit."""
    try:
        app()
    except VansError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
