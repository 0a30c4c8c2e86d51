"""The output-folder rule of every `vans` command that writes a folder (`--out`).

A command owns the folders it made: each gets `OUTPUT_RECORD`, the command's name and the
settings that decide what it writes. Before writing, `claim_output` applies one rule:

- a missing or empty folder is created and claimed;
- a folder that holds files but no record (a user's files, another tool's output), or
  another command's output, is refused: writing into it could destroy what it holds;
- this command's own output is, for a command that resumes (`vans eval`, the recipes),
  resumed only when the recorded settings equal the current ones, otherwise refused with the
  settings that changed (mixing two set-ups' results would corrupt them silently); for one
  that does not resume, it is replaced;
- `overwrite=True` (`--overwrite`) empties any folder first and claims it anew.

Paths that are files, or folders that cannot be created or written, are errors that name
them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vans.errors import VansError
from vans.io import write_json

OUTPUT_RECORD = "vans-output.json"
"""The record in every folder a command claimed: {"command": ..., "settings": {...}}."""


class OutputError(VansError):
    """An output folder a command must not or cannot write into; names it and says why."""


def claim_output(
    out: str | Path,
    command: str,
    settings: Mapping[str, Any],
    *,
    resumable: bool,
    overwrite: bool = False,
) -> bool:
    """Apply the rule of the module docstring to `out` for `command` with `settings` (JSON
    values). Returns True when `out` holds this command's output with these settings, which
    a resumable command continues."""
    out = Path(out)
    current = json.loads(json.dumps(dict(settings), default=str))
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: is a file, not a folder; pass a folder path")
    held = out.is_dir() and any(out.iterdir())
    if held and overwrite:
        _empty(out)
        held = False
    if held:
        record = _read_record(out)
        if record is None:
            raise OutputError(
                f"--out {out}: holds files that no vans {command} wrote; pass an empty or new "
                "folder, or --overwrite to replace them"
            )
        if record.get("command") != command:
            raise OutputError(
                f"--out {out}: holds the output of vans {record.get('command')}, not of vans "
                f"{command}; pass another folder, or --overwrite to replace it"
            )
        previous = record.get("settings", {})
        if resumable:
            if previous == current:
                return True
            changed = sorted(k for k in {*current, *previous} if previous.get(k) != current.get(k))
            raise OutputError(
                f"--out {out}: holds a vans {command} run with other settings (changed: "
                f"{', '.join(changed)}); pass a new folder, or --overwrite to start again"
            )
        _empty(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        mark_output(out, command, current)
    except OSError as exc:
        raise OutputError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    return False


def mark_output(out: str | Path, command: str, settings: Mapping[str, Any]) -> None:
    """Record `command` as the owner of `out` after writing it whole in one step (a
    checkpoint written by `atomic_dir`, which replaces the folder and its record)."""
    current = json.loads(json.dumps(dict(settings), default=str))
    write_json(Path(out) / OUTPUT_RECORD, {"command": command, "settings": current})


def _read_record(out: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((out / OUTPUT_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _empty(out: Path) -> None:
    if not os.access(out, os.W_OK):
        raise OutputError(f"--out {out}: cannot write there (permission denied)")
    for child in out.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
