"""The VNEP sample: an input clip and a question in; reasoning, an answer and a target clip out.

On disk a sample is one JSON object (a manifest row)::

    {"id": "cook-0001",
     "input": {"path": "videos/a.mp4", "start": 0.0, "end": 4.0},
     "question": "What happens next?", "answer": "She cracks an egg into the bowl.",
     "target": "videos/b.mp4",
     "reasoning": "The bowl is ready and she holds an egg.",
     "task": "procedural", "source": "youcook2", "extra": {}}

`input`/`target` are a path string or an object with `path` and optional `start`/`end`
(seconds); relative paths are relative to the manifest's directory. `reasoning` (string or
null) and `extra` (free-form object) are optional; every other field is required.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, NamedTuple

from vans.errors import VansError


class TaskType(str, Enum):
    """The two VNEP task families of VANS-Data-100K."""

    PROCEDURAL = "procedural"
    """Instructional videos: the next step of a procedure (YouCook2, COIN)."""
    PREDICTIVE = "predictive"
    """Open-domain videos: what happens next (ActivityNet, Video-Holmes, web videos)."""


@dataclass(frozen=True)
class VideoRef:
    """A video file, optionally restricted to a time window."""

    path: Path
    """The video file; absolute once loaded (resolved against the manifest's directory)."""
    start: float | None = None
    """First second of the clip; None means the beginning of the file."""
    end: float | None = None
    """Last second of the clip (exclusive); None means the end of the file."""


@dataclass(frozen=True)
class VNEPSample:
    """One video-next-event-prediction example."""

    id: str
    """Unique within its manifest."""
    input: VideoRef
    """The video the model watches."""
    question: str
    """The user's instruction about what comes next."""
    answer: str
    """Ground-truth caption of the next event (what the VLM must say inside [Ans])."""
    target: VideoRef
    """Ground-truth video of the next event (what the VDM must generate)."""
    reasoning: str | None
    """Optional reasoning trace (inside [Think]); None when the data set has none."""
    task: TaskType
    """Procedural or predictive."""
    source: str
    """Data set the sample comes from, e.g. "coin" or "toyworld"."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form, source-specific data (toy-world facts, multiple-choice options, ...)."""


class FieldProblem(NamedTuple):
    """One thing wrong with one field of a row; `field` is dotted for nested keys."""

    field: str
    message: str


class SchemaError(VansError):
    """A row does not describe a valid sample; lists every problem found."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))


FIELDS = ("id", "input", "question", "answer", "target", "reasoning", "task", "source", "extra")
"""Top-level keys of a row, in the order they are written."""
_REF_KEYS = ("path", "start", "end")


def sample_to_row(sample: VNEPSample, root: Path) -> dict[str, Any]:
    """Convert `sample` to its JSON row, writing paths inside `root` relative to it."""
    return {
        "id": sample.id,
        "input": _ref_to_row(sample.input, root),
        "question": sample.question,
        "answer": sample.answer,
        "target": _ref_to_row(sample.target, root),
        "reasoning": sample.reasoning,
        "task": sample.task.value,
        "source": sample.source,
        "extra": sample.extra,
    }


def sample_from_row(row: object, root: Path) -> VNEPSample:
    """Build a sample from a JSON row, resolving relative paths against `root`.

    Raises `SchemaError` listing every problem when the row is invalid.
    """
    sample, problems = parse_row(row, root)
    if sample is None:
        raise SchemaError(problems)
    return sample


def parse_row(
    row: object, root: Path, *, check_files: bool = False
) -> tuple[VNEPSample | None, list[FieldProblem]]:
    """Validate a row and build its sample; returns (None, problems) when anything is wrong.

    Every field is checked even after a failure so that one pass reports all problems.
    With `check_files`, missing video files are problems too.
    """
    if not isinstance(row, dict):
        return None, [FieldProblem("row", f"must be a JSON object, got {_json_type(row)}")]
    problems: list[FieldProblem] = [
        FieldProblem(key, "unknown field; free-form fields go in `extra`")
        for key in row
        if key not in FIELDS
    ]
    root = Path(os.path.abspath(root))
    values = {
        "id": _sample_id(row, problems),
        "input": _ref(row, "input", root, problems, check_files),
        "question": _text(row, "question", problems),
        "answer": _text(row, "answer", problems),
        "target": _ref(row, "target", root, problems, check_files),
        "reasoning": _text(row, "reasoning", problems, optional=True),
        "task": _task(row, problems),
        "source": _text(row, "source", problems),
        "extra": _extra(row, problems),
    }
    if problems:
        return None, problems
    return VNEPSample(**values), []


def _ref_to_row(ref: VideoRef, root: Path) -> dict[str, Any]:
    # abspath, not resolve(): following symlinks would turn paths the user wrote inside
    # the manifest's directory into paths outside it.
    path = Path(os.path.abspath(ref.path))
    root = Path(os.path.abspath(root))
    out: dict[str, Any] = {
        "path": (path.relative_to(root) if path.is_relative_to(root) else path).as_posix()
    }
    if ref.start is not None:
        out["start"] = ref.start
    if ref.end is not None:
        out["end"] = ref.end
    return out


def _json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _absent(mapping: dict[str, Any], key: str) -> str:
    """Message for a required `key` whose value is None: missing or an explicit null."""
    return "must not be null" if key in mapping else "required field is missing"


SAMPLE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
"""What a sample id may be: a file name on every system (outputs name files and folders
after it), so never a path ("a/b", "..", "/abs")."""


def check_sample_id(value: str) -> str | None:
    """Why `value` cannot be a sample id, or None when it can."""
    if SAMPLE_ID.fullmatch(value):
        return None
    return (
        f"must be 1-200 letters, digits, '.', '_' or '-', starting with a letter or digit "
        f"(it names output files), got {value!r}"
    )


def _sample_id(row: dict[str, Any], problems: list[FieldProblem]) -> str | None:
    value = _text(row, "id", problems)
    why = None if value is None else check_sample_id(value)
    if why is not None:
        problems.append(FieldProblem("id", why))
        return None
    return value


def _text(
    mapping: dict[str, Any],
    key: str,
    problems: list[FieldProblem],
    *,
    prefix: str = "",
    optional: bool = False,
) -> str | None:
    value = mapping.get(key)
    name = prefix + key
    if value is None:
        if not optional:
            problems.append(FieldProblem(name, _absent(mapping, key)))
        return None
    if not isinstance(value, str):
        problems.append(FieldProblem(name, f"must be a string, got {_json_type(value)}"))
        return None
    if not value.strip():
        # An empty reasoning would teach the model to emit an empty [Think] block.
        hint = "; use null or omit it when there is none" if optional else ""
        problems.append(FieldProblem(name, f"must not be empty{hint}"))
        return None
    return value


def _task(row: dict[str, Any], problems: list[FieldProblem]) -> TaskType | None:
    value = row.get("task")
    allowed = ", ".join(repr(t.value) for t in TaskType)
    if value is None:
        problems.append(FieldProblem("task", f"{_absent(row, 'task')} (one of {allowed})"))
        return None
    try:
        return TaskType(value)
    except ValueError:
        problems.append(FieldProblem("task", f"must be one of {allowed}, got {value!r}"))
        return None


def _extra(row: dict[str, Any], problems: list[FieldProblem]) -> dict[str, Any] | None:
    value = row.get("extra", {})
    if not isinstance(value, dict):
        problems.append(FieldProblem("extra", f"must be an object, got {_json_type(value)}"))
        return None
    return value


def _file_problems(path: Path, start: float | None, end: float | None) -> list[tuple[str, str]]:
    """What is wrong with a referenced video file and its window, by field."""
    if not path.is_file():
        return [("path", f"video file not found: {path}")]
    if path.stat().st_size == 0:
        return [("path", f"video file is empty (0 bytes): {path}")]
    from vans.data.probe import VIDEO_ERRORS, video_duration  # PyAV: when files are checked

    try:
        length = video_duration(path)
    except VIDEO_ERRORS as exc:
        return [("path", f"cannot be opened as a video: {exc}")]
    if length is None:
        return []
    problems = []
    if start is not None and start >= length:
        problems.append(("start", f"{start:g} s is past the end of the video ({length:.3f} s)"))
    if end is not None and end > length + _WINDOW_SLACK:
        problems.append(("end", f"{end:g} s is past the end of the video ({length:.3f} s)"))
    return problems


_WINDOW_SLACK = 0.05
"""Seconds an `end` may exceed a video's declared duration (containers round it)."""


def _ref(
    row: dict[str, Any],
    key: str,
    root: Path,
    problems: list[FieldProblem],
    check_files: bool,
) -> VideoRef | None:
    value = row.get(key)
    if value is None:
        problems.append(FieldProblem(key, _absent(row, key)))
        return None
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict):
        problems.append(
            FieldProblem(
                key,
                "must be a path string or an object with `path` and optional `start`/`end`, "
                f"got {_json_type(value)}",
            )
        )
        return None
    before = len(problems)
    problems.extend(
        FieldProblem(f"{key}.{k}", f"unknown field; allowed: {', '.join(_REF_KEYS)}")
        for k in value
        if k not in _REF_KEYS
    )
    raw_path = _text(value, "path", problems, prefix=f"{key}.")
    start = _seconds(value, "start", problems, prefix=f"{key}.")
    end = _seconds(value, "end", problems, prefix=f"{key}.")
    if start is not None and end is not None and start >= end:
        problems.append(FieldProblem(f"{key}.start", f"must be before end ({start:g} >= {end:g})"))
    if raw_path is None:
        return None
    path = Path(os.path.abspath(root / raw_path))
    if check_files:
        # a window already reported as wrong is not compared with the file as well
        window = (start, end) if len(problems) == before else (None, None)
        problems.extend(
            FieldProblem(f"{key}.{field}", why) for field, why in _file_problems(path, *window)
        )
    if len(problems) > before:
        return None
    return VideoRef(path=path, start=start, end=end)


def _seconds(
    ref: dict[str, Any], key: str, problems: list[FieldProblem], *, prefix: str
) -> float | None:
    value = ref.get(key)
    name = prefix + key
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(FieldProblem(name, f"must be a number of seconds, got {_json_type(value)}"))
        return None
    if not math.isfinite(value) or value < 0:
        problems.append(FieldProblem(name, f"must be a finite number >= 0, got {value}"))
        return None
    return float(value)
