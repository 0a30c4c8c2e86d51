"""User-facing errors.

Every error a user can cause (bad file, bad manifest row, bad option) derives from
`VansError`; the CLI prints these as one clear message and exits non-zero without a
traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Sequence


class VansError(Exception):
    """An error caused by the user's input, reported without a traceback."""


class ConfigError(VansError):
    """A config file, a command-line override or a config value that cannot run; names the
    file, override or dotted field."""


class GRPOError(VansError, ValueError):
    """Inputs to the GRPO math that do not fit together (shapes, options, segments)."""


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    """Raise `GRPOError` unless `value` is one of `choices`."""
    if value not in choices:
        raise GRPOError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def one_line(exc: BaseException) -> str:
    """A library exception as one line for a `VansError` message: its first non-empty line
    (torch and transformers explain on many), or its type when it says nothing."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
