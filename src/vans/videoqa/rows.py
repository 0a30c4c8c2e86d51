"""Video-QA rows in the public formats, read as they are published (docs/videop2r.md#data).

Video-R1 (training files and the `eval_<benchmark>.json` files) and VideoP2R share one row::

    {"problem_id": 7, "problem": "How many cups ...?", "data_type": "video",
     "problem_type": "multiple choice", "options": ["A. 2", "B. 3"],
     "solution": "<answer>B</answer>", "path": "./LLaVA-Video-178K/x.mp4",
     "data_source": "LLaVA-Video-178K"}

VideoP2R adds the trace's segments: `observation` (perception), `process` (reasoning) and
`output` (the whole trace), plus pipeline fields we keep in `extra`. Its RL file stores
every value as a string, `options` included ("['A. 2', 'B. 3']"), and both VideoP2R files
are gzip JSON lists split into parts (`name.part1of3.json.gz`, ...) that concatenate in
order. A file here is a JSON list (`.json`, `.json.gz`) or JSON lines (`.jsonl`).

Validation reads every row and reports every problem at once, by file, row index (0-based,
as in the list) and field, as the VNEP manifests do.
"""

from __future__ import annotations

import ast
import gzip
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vans.data.manifest import ManifestError, Problem

PROBLEM_TYPES = ("multiple choice", "numerical", "OCR", "free-form", "regression")
"""Video-R1's answer kinds; each has its own accuracy rule (`vans.videoqa.accuracy`)."""
DATA_TYPES = ("video", "image")
TRACE_FIELDS = ("observation", "process", "output")
"""VideoP2R's trace: the perception segment, the reasoning segment and the whole output."""
_KNOWN = {"problem_id", "problem", "options", "solution", "answer", "problem_type"}
_KNOWN |= {"data_type", "path", "data_source", *TRACE_FIELDS}
_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
_PART = re.compile(r"^(?P<stem>.+)\.part(?P<i>\d+)of(?P<n>\d+)(?P<ext>\.json(?:l|\.gz)?)$")


@dataclass(frozen=True)
class QARow:
    """One question about a video (or an image), its answer and, from VideoP2R, its trace."""

    id: str
    """`problem_id` when the row has one, else `<file stem>-<index>`."""
    problem: str
    """The question, without the options."""
    problem_type: str
    """One of `PROBLEM_TYPES`."""
    data_type: str
    """"video" or "image"."""
    path: Path
    """The video or image, resolved against the video root."""
    answer: str
    """The ground-truth answer: the inside of the solution's `<answer>` tags (a letter for
    multiple choice)."""
    options: tuple[str, ...] = ()
    """The choices as published ("A. two cups", ...); empty unless multiple choice."""
    data_source: str = ""
    """The data set the row came from (a benchmark's task for evaluation files)."""
    observation: str | None = None
    """VideoP2R's perception segment, when the row has a trace."""
    process: str | None = None
    """VideoP2R's reasoning segment, when the row has a trace."""
    output: str | None = None
    """VideoP2R's whole trace as the teacher wrote it, when the row has one."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Every other field of the row, as read."""


class QADataError(ManifestError):
    """Video-QA files that are missing or have invalid rows; lists every problem found,
    by row index ("train.json: row 3: options: ...")."""

    row_label = " row "


def expand_parts(paths: Sequence[str | Path]) -> list[Path]:
    """The files to read, in order: a file named `x.part<i>of<n>.<ext>` stands for all n
    parts, which must all exist and are read in part order (each part once)."""
    out: list[Path] = []
    for path in map(Path, paths):
        match = _PART.match(path.name)
        if match is None:
            out.append(path)
            continue
        stem, n, ext = match["stem"], int(match["n"]), match["ext"]
        parts = [path.with_name(f"{stem}.part{i}of{n}{ext}") for i in range(1, n + 1)]
        missing = [p.name for p in parts if not p.is_file()]
        if missing:
            reason = f"part of a {n}-part file, but {', '.join(missing)} missing"
            raise QADataError(path, [Problem(None, None, reason)])
        out.extend(p for p in parts if p not in out)
    return out


def validate_rows(
    paths: Sequence[str | Path],
    video_root: str | Path | None = None,
    *,
    require_trace: bool = False,
    check_files: bool = False,
) -> tuple[list[QARow], list[QADataError]]:
    """Every valid row of the files (parts expanded, in order) and one error per file that
    has problems, listing them all. Paths resolve against `video_root` (default: each file's
    folder); `check_files` also requires each video to exist; `require_trace` requires
    VideoP2R's `observation` and `process` (for SFT on traces)."""
    rows: list[QARow] = []
    errors: list[QADataError] = []
    seen: dict[str, tuple[Path, int]] = {}
    for path in expand_parts(paths):
        items = _read(path)
        root = Path(video_root) if video_root is not None else path.absolute().parent
        problems: list[Problem] = []
        for index, item in enumerate(items):
            row, found = parse_row(item, index, path, root, require_trace, check_files)
            if row is not None and row.id in seen:
                first = seen[row.id]
                where = f"row {first[1]}" + ("" if first[0] == path else f" of {first[0]}")
                found.append(Problem(index, "problem_id", f"duplicate id {row.id!r} ({where})"))
            elif row is not None:
                seen[row.id] = (path, index)
            problems.extend(found)
            if row is not None and not found:
                rows.append(row)
        if not items:
            problems.append(Problem(None, None, "has no rows"))
        if problems:
            errors.append(QADataError(path, problems, len(items)))
    return rows, errors


def load_rows(
    paths: Sequence[str | Path],
    video_root: str | Path | None = None,
    *,
    require_trace: bool = False,
    check_files: bool = False,
) -> list[QARow]:
    """`validate_rows`, raising the first file's `QADataError` (every problem of that file)
    if any file has problems."""
    rows, errors = validate_rows(
        paths, video_root, require_trace=require_trace, check_files=check_files
    )
    if errors:
        raise errors[0]
    return rows


def parse_row(
    item: object,
    index: int,
    source: Path,
    root: Path,
    require_trace: bool = False,
    check_files: bool = False,
) -> tuple[QARow | None, list[Problem]]:
    """One published row as a `QARow` (None when it cannot be one) and its problems."""
    if not isinstance(item, dict):
        return None, [Problem(index, None, f"must be a JSON object, got {type(item).__name__}")]
    problems: list[Problem] = []

    def text(name: str, required: bool = True) -> str | None:
        value = item.get(name)
        if value is None:
            if required:
                problems.append(Problem(index, name, "missing"))
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            problems.append(Problem(index, name, f"must be a string, got {type(value).__name__}"))
            return None
        value = str(value)
        if required and not value.strip():
            problems.append(Problem(index, name, "is empty"))
            return None
        return value

    problem = text("problem")
    problem_type = text("problem_type")
    if problem_type is not None and problem_type not in PROBLEM_TYPES:
        known = ", ".join(repr(t) for t in PROBLEM_TYPES)
        problems.append(Problem(index, "problem_type", f"{problem_type!r} is not one of {known}"))
    data_type = text("data_type")
    if data_type is not None and data_type not in DATA_TYPES:
        problems.append(Problem(index, "data_type", f"{data_type!r} is not 'video' or 'image'"))
    path_text = text("path")
    answer = _answer(item, index, problems)
    options = _options(item.get("options"), index, problems)
    if problem_type == "multiple choice" and options == ():
        problems.append(Problem(index, "options", "a multiple-choice row needs its options"))
    trace = {name: text(name, required=require_trace) for name in ("observation", "process")}
    output = text("output", required=False)
    path = None
    if path_text is not None:
        path = (
            (root / path_text).resolve() if not Path(path_text).is_absolute() else Path(path_text)
        )
        if check_files and not path.is_file():
            problems.append(Problem(index, "path", f"{path}: file not found"))
    row_id = text("problem_id", required=False) or f"{source.name.split('.')[0]}-{index}"
    if problems or None in (problem, problem_type, data_type, path, answer, options):
        return None, problems
    return (
        QARow(
            id=row_id,
            problem=problem,
            problem_type=problem_type,
            data_type=data_type,
            path=path,
            answer=answer,
            options=options or (),
            data_source=text("data_source", required=False) or "",
            observation=trace["observation"],
            process=trace["process"],
            output=output,
            extra={k: v for k, v in item.items() if k not in _KNOWN},
        ),
        problems,
    )


def answer_of(solution: str) -> str | None:
    """The inside of a solution's `<answer>` tags, stripped; None without them."""
    match = _ANSWER.search(solution)
    return match.group(1).strip() if match else None


def _answer(item: dict[str, Any], index: int, problems: list[Problem]) -> str | None:
    solution = item.get("solution")
    if not isinstance(solution, str):
        what = "missing" if solution is None else f"must be a string, got {type(solution).__name__}"
        problems.append(Problem(index, "solution", what))
        return None
    answer = answer_of(solution)
    if not answer:
        problems.append(
            Problem(index, "solution", f"has no <answer>...</answer>: {solution[:60]!r}")
        )
    return answer


def _options(value: object, index: int, problems: list[Problem]) -> tuple[str, ...] | None:
    """A list of strings, or the RL file's string of one ("['A. 2', 'B. 3']"); absent,
    null and "" mean no options; None (reported) when it is neither."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        try:  # a Python literal (single quotes) as the RL file writes it; never evaluated
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            problems.append(Problem(index, "options", f"not a list of options: {value[:60]!r}"))
            return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        problems.append(Problem(index, "options", "must be a list of strings"))
        return None
    return tuple(value)


def _read(path: Path) -> list[Any]:
    """The file's rows: a JSON list (gzip-compressed for `.gz`) or JSON lines."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        text = raw.decode("utf-8-sig")
        if path.suffix == ".jsonl":
            items = []
            for line_no, line in enumerate(text.split("\n"), start=1):
                if line.strip():
                    try:
                        items.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        reason = f"line {line_no}: invalid JSON: {exc.msg} (column {exc.colno})"
                        raise QADataError(path, [Problem(None, None, reason)]) from None
            return items
        items = json.loads(text)
    except FileNotFoundError:
        reason = "file not found"
    except IsADirectoryError:
        reason = "is a directory, not a data file"
    except (gzip.BadGzipFile, EOFError) as exc:
        reason = f"not a complete gzip file ({exc})"
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text (byte {exc.start})"
    except json.JSONDecodeError as exc:
        reason = f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    except OSError as exc:
        reason = f"cannot read: {exc.strerror}"
    else:
        if isinstance(items, list):
            return items
        reason = f"must hold a JSON list of rows, got {type(items).__name__}"
    raise QADataError(path, [Problem(None, None, reason)])
