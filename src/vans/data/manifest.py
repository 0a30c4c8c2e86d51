"""Manifests: JSON-lines files of VNEP samples (one row per line, see `vans.data.schema`).

Validation reads the whole file and reports every problem at once, each with its 1-based
physical line number, so a data set with many bad rows is fixed in one round instead of
one error per run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from vans.data.schema import VNEPSample, parse_row, sample_to_row
from vans.errors import VansError
from vans.io import write_text


class Problem(NamedTuple):
    """One problem in a manifest; `line` and `field` are None for whole-file problems."""

    line: int | None
    field: str | None
    message: str


class ManifestError(VansError):
    """A manifest is missing or has invalid rows; `.problems` lists every problem found."""

    row_label = ""
    """How a problem's `line` is shown after the path: a manifest's physical line
    ("m.jsonl:3:"); a subclass for JSON lists shows a row index (" row 3:")."""

    def __init__(self, path: Path, problems: list[Problem], rows: int | None = None) -> None:
        self.path = path
        self.problems = problems
        lines = [_format(path, p, self.row_label) for p in problems]
        if rows is not None:
            count = f"{len(problems)} problem{'s' * (len(problems) != 1)}"
            lines.insert(0, f"{count} in {rows} row{'s' * (rows != 1)} of {path}:")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class ManifestReport:
    """The outcome of validating a manifest."""

    path: Path
    """The manifest file."""
    rows: int
    """Number of non-blank lines."""
    samples: list[VNEPSample]
    """The valid rows' samples, in file order (all rows when `problems` is empty)."""
    problems: list[Problem]
    """Every problem found, in file order; empty when the manifest is valid."""

    def error(self) -> ManifestError | None:
        """The error listing all problems, or None when the manifest is valid."""
        return ManifestError(self.path, self.problems, self.rows) if self.problems else None


def validate_manifest(path: str | Path, *, check_files: bool = True) -> ManifestReport:
    """Check every row of the manifest at `path` and collect all problems without raising.

    Raises `ManifestError` only when the file itself cannot be read.
    """
    path = Path(path)
    text = _read(path)
    root = path.absolute().parent
    samples: list[VNEPSample] = []
    problems: list[Problem] = []
    first_line_of_id: dict[str, int] = {}
    rows = 0
    # split("\n"), not splitlines(): JSON strings may hold raw U+2028 and similar
    # characters that splitlines() treats as line breaks, shifting every line number.
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        rows += 1
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            message = f"invalid JSON: {exc.msg} (column {exc.colno})"
            problems.append(Problem(line_no, "json", message))
            continue
        sample, row_problems = parse_row(row, root, check_files=check_files)
        problems.extend(Problem(line_no, p.field, p.message) for p in row_problems)
        duplicate = _duplicate_id(row, line_no, first_line_of_id)
        if duplicate is not None:
            problems.append(duplicate)
        elif sample is not None:
            samples.append(sample)
    if rows == 0:
        problems.append(Problem(None, None, "manifest has no rows"))
    return ManifestReport(path=path, rows=rows, samples=samples, problems=problems)


def load_manifest(path: str | Path, *, check_files: bool = True) -> list[VNEPSample]:
    """Load every sample of a manifest; raises `ManifestError` listing all problems."""
    report = validate_manifest(path, check_files=check_files)
    error = report.error()
    if error is not None:
        raise error
    return report.samples


def write_manifest(path: str | Path, samples: Iterable[VNEPSample]) -> Path:
    """Write `samples` as a manifest, video paths relative to its directory; returns the path.

    The file is replaced atomically so an interrupted write never leaves half a manifest.
    """
    path = Path(path)
    root = path.absolute().parent
    root.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(sample_to_row(s, root), ensure_ascii=False) + "\n" for s in samples]
    return write_text(path, "".join(lines))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # tolerate a BOM from Windows editors
    except FileNotFoundError:
        reason = "manifest file not found"
    except IsADirectoryError:
        reason = "is a directory, not a manifest file"
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text (byte {exc.start})"
    except OSError as exc:
        reason = f"cannot read manifest: {exc.strerror}"
    raise ManifestError(path, [Problem(None, None, reason)])


def _duplicate_id(row: object, line_no: int, first_line_of_id: dict[str, int]) -> Problem | None:
    """Record the row's id and report it if an earlier row used it."""
    # Read the raw id so duplicates are caught even in rows with other problems.
    sample_id = row.get("id") if isinstance(row, dict) else None
    if not isinstance(sample_id, str) or not sample_id.strip():
        return None
    first = first_line_of_id.setdefault(sample_id, line_no)
    if first == line_no:
        return None
    return Problem(line_no, "id", f"duplicate id {sample_id!r} (first used on line {first})")


def _format(path: Path, problem: Problem, row_label: str = "") -> str:
    location = f"{path}:{row_label}{problem.line}" if problem.line is not None else str(path)
    field = f" {problem.field}:" if problem.field is not None else ""
    return f"{location}:{field} {problem.message}"
