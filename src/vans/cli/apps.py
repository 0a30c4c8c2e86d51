"""The Typer apps `vans` is made of, built one way."""

from __future__ import annotations

import typer


def command_group(help: str | None = None) -> typer.Typer:
    """A group of `vans` commands: no shell-completion options (the root has none) and no
    pretty tracebacks (`vans.cli.main.run` turns user errors into one line)."""
    return typer.Typer(
        help=help, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
    )


SEEDS = {"min": 0, "max": 2**32 - 1}
"""The range of every seed option: what numpy's and torch's generators all accept."""

PROFILE_HELP = (
    "Inference profile over the checkpoint's vans.yaml: paper or official (the VANS authors' "
    "released inference; docs/official.md). Default: vans.yaml as it is."
)
