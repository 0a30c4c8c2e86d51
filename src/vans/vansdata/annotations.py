"""The annotation formats VANS-Data is built from, as their authors publish them.

- COIN (`COIN.json`): {"database": {video id: {"recipe_type": int, "class": str,
  "annotation": [{"segment": [start, end], "label": str}, ...]}}}: procedural.
- YouCook2 (`youcookii_annotations_trainval.json`): the same shape with the list under
  `annotations` and steps in `sentence`; `recipe_type` is a number there, named by the
  dataset's `label_foodtype.csv` (rows `id,name`, no header; `load_task_names`):
  procedural.
- ActivityNet Captions (`train.json`): {video id: {"duration": s, "timestamps": [[start,
  end], ...], "sentences": [...]}}: predictive (open-domain events).
- A pairs table (TSV with `video1_path`, `video2_path` columns, as the authors' predictive
  pipeline ships): each row is an input clip and the clip that follows it.

A file is checked whole: every problem is listed (file, video id or line, field), then one
`AnnotationError` is raised with all of them, as manifests are validated.

A video's steps are put in time order (by start, then end); a step's index everywhere after
parsing (clip names, the manifest's `extra.steps`, `--truth` files) is its position in that
order, which is the annotation's own order when the file lists them in time order, as the
published ones do.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vans.data.schema import TaskType
from vans.errors import VansError

Format = Literal["coin", "youcook2", "activitynet", "pairs"]
FORMATS: tuple[Format, ...] = ("coin", "youcook2", "activitynet", "pairs")
TASKS: dict[Format, TaskType] = {
    "coin": TaskType.PROCEDURAL,
    "youcook2": TaskType.PROCEDURAL,
    "activitynet": TaskType.PREDICTIVE,
    "pairs": TaskType.PREDICTIVE,
}
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi")


class AnnotationError(VansError):
    """An annotation file that cannot be read or has bad entries: one line per problem,
    each naming the file, the video id (or table row) and the field."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {p}" for p in problems))


@dataclass(frozen=True)
class Step:
    """One annotated step or event of a video (seconds; end exclusive)."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class AnnotatedVideo:
    """A video and its steps, in time order (a step's index is its position here)."""

    id: str
    steps: tuple[Step, ...]
    task_name: str | None = None
    """What the procedure is (COIN's class, else its recipe type); None for open-domain
    videos."""


@dataclass(frozen=True)
class PairRow:
    """One row of a pairs table: the input clip and the clip after it, as written."""

    line: int
    """The row's line in the file (1 is the header)."""
    input: str
    target: str


def load_videos(
    path: str | Path, fmt: Format, task_names: dict[str, str] | None = None
) -> list[AnnotatedVideo]:
    """The annotated videos of a COIN, YouCook2 or ActivityNet Captions file. A video's task
    is `task_names[recipe_type]` when given (every recipe type it lacks is a problem), else
    COIN's `class`, else the recipe type."""
    path = Path(path)
    if fmt == "pairs":
        raise ValueError("a pairs table has rows, not videos: use load_pairs")
    data = _json(path)
    problems: list[str] = []
    if fmt == "activitynet":
        if task_names is not None:
            raise ValueError("ActivityNet Captions videos have no task to name")
        videos = _activitynet(data, problems)
    elif fmt == "coin":
        videos = _database(data, "annotation", "label", task_names, problems)
    else:
        videos = _database(data, "annotations", "sentence", task_names, problems)
    if not problems and not videos:
        problems.append("no annotated videos")
    if problems:
        raise AnnotationError(path, problems)
    return videos


def _read(path: Path) -> str:
    """The text of an annotation file, or one `AnnotationError` saying why it has none."""
    try:
        return path.read_text(encoding="utf-8-sig")  # tolerate a BOM from Windows editors
    except FileNotFoundError:
        reason = "annotation file not found"
    except IsADirectoryError:
        reason = "is a directory, not an annotation file"
    except PermissionError:
        reason = "cannot read the annotation file (permission denied)"
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text (byte {exc.start})"
    except OSError as exc:
        reason = f"cannot read the annotation file: {exc.strerror or exc}"
    raise AnnotationError(path, [reason])


def _json(path: Path) -> Any:
    text = _read(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        reason = f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    raise AnnotationError(path, [reason])


def _database(
    data: Any,
    list_key: str,
    text_key: str,
    task_names: dict[str, str] | None,
    problems: list[str],
) -> list[AnnotatedVideo]:
    """COIN and YouCook2: `database` -> video id -> a list of steps under `list_key`."""
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        problems.append("database: required object (video id -> entry) is missing")
        return []
    videos = []
    for vid, entry in database.items():
        where = f"video {vid}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be an object")
            continue
        annotation = entry.get(list_key)
        if not isinstance(annotation, list) or not annotation:
            problems.append(f"{where}: {list_key}: must be a non-empty list of steps")
            continue
        steps = []
        for i, item in enumerate(annotation):
            if not isinstance(item, dict):
                problems.append(f"{where}: {list_key}[{i}]: must be an object")
                continue
            step = _step(
                item.get("segment"),
                item.get(text_key),
                f"{where}: {list_key}[{i}]",
                text_key,
                problems,
            )
            if step is not None:
                steps.append(step)
        recipe = entry.get("recipe_type")
        if task_names is None:
            task = _task_name(entry.get("class", recipe))
        elif (task := task_names.get(str(recipe))) is None:
            problems.append(f"{where}: recipe_type: {recipe!r} is not in --task-names")
        videos.append(AnnotatedVideo(str(vid), _in_order(steps), task))
    return videos


def _activitynet(data: Any, problems: list[str]) -> list[AnnotatedVideo]:
    if not isinstance(data, dict):
        problems.append("must be an object (video id -> entry)")
        return []
    videos = []
    for vid, entry in data.items():
        where = f"video {vid}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be an object")
            continue
        stamps, sentences = entry.get("timestamps"), entry.get("sentences")
        if not isinstance(stamps, list) or not stamps:
            problems.append(f"{where}: timestamps: must be a non-empty list of [start, end]")
            continue
        if not isinstance(sentences, list) or len(sentences) != len(stamps):
            problems.append(
                f"{where}: sentences: must be a list as long as timestamps ({len(stamps)})"
            )
            continue
        steps = [
            _step(s, t, f"{where}: timestamps[{i}]", "sentences", problems)
            for i, (s, t) in enumerate(zip(stamps, sentences, strict=True))
        ]
        videos.append(AnnotatedVideo(str(vid), _in_order([s for s in steps if s])))
    return videos  # any problem above raises: partial videos never leave this module


def _step(segment: Any, text: Any, where: str, text_key: str, problems: list[str]) -> Step | None:
    ok = True
    if not (
        isinstance(segment, list)
        and len(segment) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in segment)
        and all(math.isfinite(v) for v in segment)
    ):
        problems.append(f"{where}: segment: must be [start, end] in seconds, got {segment!r}")
        ok = False
    elif not 0 <= segment[0] < segment[1]:
        problems.append(f"{where}: segment: needs 0 <= start < end, got {segment!r}")
        ok = False
    if not isinstance(text, str) or not text.strip():
        problems.append(f"{where}: {text_key}: must be a non-empty string")
        ok = False
    return Step(float(segment[0]), float(segment[1]), text.strip()) if ok else None


def _in_order(steps: list[Step]) -> tuple[Step, ...]:
    return tuple(sorted(steps, key=lambda s: (s.start, s.end)))


def _task_name(value: Any) -> str | None:
    return None if value is None else str(value)


def load_task_names(path: str | Path) -> dict[str, str]:
    """Task id -> name from a CSV of `id,name` rows without a header (YouCook2's
    `label_foodtype.csv`)."""
    path = Path(path)
    names: dict[str, str] = {}
    problems = []
    for line, row in enumerate(csv.reader(_read(path).splitlines()), start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            problems.append(f"line {line}: must be id,name, got {','.join(row)!r}")
        elif names.setdefault(row[0].strip(), row[1].strip()) != row[1].strip():
            problems.append(f"line {line}: id {row[0].strip()!r} is named twice")
    if not problems and not names:
        problems.append("no rows")
    if problems:
        raise AnnotationError(path, problems)
    return names


def load_pairs(path: str | Path) -> list[PairRow]:
    """The rows of a pairs table (TSV with `video1_path`, `video2_path` columns)."""
    path = Path(path)
    reader = csv.DictReader(_read(path).splitlines(), delimiter="\t")
    missing = [c for c in ("video1_path", "video2_path") if c not in (reader.fieldnames or [])]
    if missing:
        raise AnnotationError(path, [f"header: missing column {c}" for c in missing])
    rows, problems = [], []
    for record in reader:
        line = reader.line_num  # the file's line: blank lines are skipped, not rows
        values = {k: (record.get(k) or "").strip() for k in ("video1_path", "video2_path")}
        bad = [k for k, v in values.items() if not v]
        problems += [f"line {line}: {k}: must be a path" for k in bad]
        if not bad:
            rows.append(PairRow(line, values["video1_path"], values["video2_path"]))
    if not problems and not rows:
        problems.append("no rows")
    if problems:
        raise AnnotationError(path, problems)
    return rows


def check_videos_folder(root: Path) -> None:
    """Refuse a `--videos` that is not a folder (a typo would otherwise find no video and
    reject every one)."""
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise VansError(f"--videos {root}: {what}; pass the folder that holds the videos")


def video_index(root: Path) -> dict[str, Path]:
    """Every video file under `root` by its name without suffix (the annotation's video
    id), first in sorted order when two share one."""
    index: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
            index.setdefault(path.stem, path)
    return index


def find_video(index: dict[str, Path], video_id: str) -> Path | None:
    """The file of `video_id`: its name, or ActivityNet's id without its "v_" prefix (the
    files its download scripts write)."""
    return index.get(video_id) or index.get(video_id.removeprefix("v_"))


def resolve_pair_path(root: Path, written: str) -> Path | None:
    """A pairs-table path on this machine: `root/written`, else the file of that base name
    directly in `root` (tables written on the authors' `video_split_scene/...` tree, with the
    clips copied flat)."""
    for candidate in (root / written, root / Path(written).name):
        if candidate.is_file():
            return candidate
    return None
