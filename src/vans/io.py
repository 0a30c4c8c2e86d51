"""Atomic file and directory writes: readers never see half an output, and a crash or a
failed write leaves no debris (at worst a hidden temporary sibling, never a partial result)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the body succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A random name rather than mkstemp, so the file gets the usual umask-derived
    # permissions instead of mkstemp's 0600.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it replaces `path` (and whatever was there)
    only if the body succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would make the result private
    try:
        yield tmp
        _usual_permissions(tmp, umask)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _usual_permissions(root: Path, umask: int) -> None:
    """Give everything under `root` the permissions a plain write would (libraries that
    write through temporary files, as transformers' and diffusers' `save_pretrained` do,
    leave weights at 0600: unreadable to the others sharing a checkpoint)."""
    for path in root.rglob("*"):
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    """Write `data` as indented JSON to `path` atomically."""
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_appended_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file a run appends to as it goes (resumable outputs).
    A line a killed run was still writing is dropped from the file, so the next append
    starts on a fresh line; its record is simply made again."""
    path = Path(path)
    if not path.exists():
        return []
    records, lines = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
            lines.append(line + "\n")
    write_text(path, "".join(lines))
    return records
