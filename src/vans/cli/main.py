"""Entry point of the `vans` command: one sub-app per concept."""

from __future__ import annotations

import os
import sys

# Weights and tokenizers load from local paths only; never wait on a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import typer
from rich.console import Console

from vans.cli.data import data_app
from vans.cli.demo import demo
from vans.cli.embedder import train_embedder
from vans.cli.eval import eval_command
from vans.cli.predict import init_tiny, predict
from vans.cli.reproduce import reproduce_app
from vans.cli.train import train_app
from vans.errors import VansError

app = typer.Typer(
    name="vans",
    help="Video-as-Answer: predict the next event of a video and show it as a video.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(reproduce_app, name="reproduce")
train_app.command("embedder")(train_embedder)
app.command()(demo)
app.command("init-tiny")(init_tiny)
app.command()(predict)
app.command("eval")(eval_command)
err_console = Console(stderr=True)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` and return the exit code.

    User errors (`VansError`) become one red line on stderr and exit code 2, never a
    traceback; the tests call this directly instead of spawning a process.
    """
    try:
        app(args=argv, prog_name="vans")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except VansError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    return 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":  # `python -m vans.cli.main`: the recipes' stage subprocesses
    main()
