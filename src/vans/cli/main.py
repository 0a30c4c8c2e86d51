"""Entry point of the `vans` command: one sub-app per concept."""

from __future__ import annotations

import os
import sys

# Weights and tokenizers load from local paths only; never wait on a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import importlib
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from vans.cli.apps import command_group
from vans.errors import VansError

COMMANDS: dict[str, tuple[str, str, str]] = {
    "data": ("vans.cli.data", "data_app", "Data sets: validate, toy world, build from videos."),
    "train": ("vans.cli.train", "train_app", "Train a stage from a YAML config."),
    "reproduce": ("vans.cli.reproduce", "reproduce_app", "The toy-world recipes."),
    "demo": ("vans.cli.demo", "demo", "Answer fresh toy-world videos with the trained model."),
    "init-tiny": ("vans.cli.predict", "init_tiny", "Write a tiny random VANS checkpoint."),
    "predict": ("vans.cli.predict", "predict", "Predict what happens next, as a video."),
    "convert-official": (
        "vans.cli.convert",
        "convert_official",
        "The VANS authors' released weights as a VANS checkpoint.",
    ),
    "eval": ("vans.cli.eval", "eval_command", "Score a checkpoint or saved answers."),
    "serve": ("vans.cli.serve", "serve", "The web demo: upload a video, ask, watch the answers."),
    "qa": ("vans.cli.qa", "qa_app", "Video QA (VideoP2R): data files, rewards, evaluation."),
}
"""Each command: the module and name of its Typer app or function, and its line in `vans
--help`. A command's module is imported only when it runs, so `vans --help` and the commands
that load no model start at once (the model stack takes seconds to import)."""


class _LazyGroup(TyperGroup):
    """The `vans` group: lists `COMMANDS` from their help lines (plain help, not rich's,
    which would import every command to draw its panel), imports one to run it."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, name: str) -> Any:
        if name not in COMMANDS:
            return None
        module, attr, line = COMMANDS[name]
        target = getattr(importlib.import_module(module), attr)
        if not isinstance(target, typer.Typer):
            single = command_group()
            single.command(name)(target)
            target = single
        command = typer.main.get_command(target)
        command.name = name
        command.help = command.help or line
        return command

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, line) for name, (_, _, line) in COMMANDS.items()])


cli = _LazyGroup(
    name="vans",
    help="Video-as-Answer: predict the next event of a video and show it as a video.",
    epilog="vans --debug COMMAND ... shows the traceback of an error.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
err_console = Console(stderr=True)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` and return the exit code.

    User errors (`VansError`) become one red line on stderr and exit code 2, never a
    traceback, unless the first argument is `--debug`; the tests call this directly instead
    of spawning a process.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = argv[:1] == ["--debug"]
    try:
        cli.main(args=argv[debug:], prog_name="vans")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except VansError as exc:
        if debug:
            raise
        # escaped: the message quotes user input (paths, questions) that may hold [markup]
        message = "[bold red]error:[/] " + escape(str(exc))
        err_console.print(message, highlight=False, soft_wrap=True)
        return 2
    return 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":  # `python -m vans.cli.main`: the recipes' stage subprocesses
    main()
