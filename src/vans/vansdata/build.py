"""`vans data build`: annotated videos -> a VNEP manifest and its report, every step
resumable (docs/vansdata.md).

    annotations ─parse─> videos + steps ─cut─> clips/ ─caption─> captions (usable?)
      ─pair─> adjacent usable steps ─write─> question, reasoning, answer
      ─leak check (predictive)─> manifest.jsonl + report.json

What makes a killed run (SIGKILL at any point) resume to the very manifest an uninterrupted
run writes: a clip file exists only complete (atomic writes; the temporary files a kill
leaves are removed when the next run starts), every model reply is in the SQLite cache
(`cache.sqlite`, transactions) the moment its chunk returns, every step's output is a pure
function of the annotations, the clips and the cached replies, and the manifest and report
are written last, atomically. A rerun therefore cuts nothing and calls nothing that is
done: only failed calls are made again. While any call failed, the samples go to
`manifest.partial.jsonl` instead (the report says `"complete": false`), so an incomplete
manifest never passes for the finished one.

The inputs (`load_inputs`) are parsed and checked before anything is written, so a typo
in a path or a bad annotation fails without claiming or touching the output folder.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vans.chat import CallStats, ChatBackend, ReplyCache
from vans.data.manifest import write_manifest
from vans.data.probe import VIDEO_ERRORS, video_duration
from vans.data.schema import TaskType, VideoRef, VNEPSample, check_sample_id
from vans.errors import VansError
from vans.io import write_json
from vans.vansdata.annotations import (
    TASKS,
    AnnotatedVideo,
    Format,
    PairRow,
    check_videos_folder,
    find_video,
    load_pairs,
    load_task_names,
    load_videos,
    resolve_pair_path,
    video_index,
)
from vans.vansdata.caption import caption_clips
from vans.vansdata.cut import cut_clips
from vans.vansdata.pairing import pair_steps, unusable
from vans.vansdata.prompts import Prompts
from vans.vansdata.records import Caption, Clip, Pair, Rejections, safe_name
from vans.vansdata.report import PAPER_SECONDS, duration_stats
from vans.vansdata.writing import Calls, Written, check_leaks, write_pairs

Progress = Callable[[str, int | None, int], None]
"""progress(phase, total or None to keep it, advance): the CLI's bar."""


@dataclass(frozen=True)
class BuildSettings:
    """What decides the output (the CLI's options; recorded in the output folder)."""

    annotations: Path
    format: Format
    videos: Path
    source: str | None = None
    """The manifest's `source` (default: the format's name)."""
    task_names: Path | None = None
    """CSV of `id,name` naming the videos' task ids (YouCook2's `label_foodtype.csv`)."""
    clip_fps: float | None = 16.0
    min_seconds: float = 1.0
    max_skipped: int = 1
    max_overlap_s: float = 1.0
    chunk: int = 32
    """Requests sent (and cached) together: a killed run loses at most one chunk's replies."""

    def __post_init__(self) -> None:
        if self.clip_fps is not None and not (math.isfinite(self.clip_fps) and self.clip_fps > 0):
            raise VansError(f"--clip-fps must be a positive number, got {self.clip_fps:g}")
        for name, value in (
            ("--min-seconds", self.min_seconds),
            ("--max-overlap", self.max_overlap_s),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise VansError(f"{name} must be a number >= 0, got {value:g}")
        if self.max_skipped < 0 or self.chunk < 1:
            raise VansError("--max-skipped must be >= 0 and --chunk >= 1")
        if self.source is not None and (why := check_sample_id(self.source)) is not None:
            raise VansError(f"--source {why} (it starts every sample id and clip name)")
        if self.task_names is not None and self.format in ("activitynet", "pairs"):
            raise VansError(
                f"--task-names names the recipe types of coin or youcook2 videos; "
                f"--format {self.format} has none"
            )


@dataclass(frozen=True)
class Inputs:
    """The parsed annotations: the videos and their files, or a pairs table's rows."""

    videos: list[AnnotatedVideo]
    files: dict[str, Path | None]
    rows: list[PairRow]


def load_inputs(settings: BuildSettings) -> Inputs:
    """Parse and check the annotations and the video folder (nothing is written)."""
    check_videos_folder(settings.videos)
    if settings.format == "pairs":
        rows = load_pairs(settings.annotations)
        written = (p for r in rows for p in (r.input, r.target))
        _distinct_names(written, _table_name, "pairs-table clips")
        return Inputs([], {}, rows)
    names = load_task_names(settings.task_names) if settings.task_names is not None else None
    videos = load_videos(settings.annotations, settings.format, names)
    _distinct_names((v.id for v in videos), safe_name, "video ids")
    index = video_index(settings.videos)
    return Inputs(videos, {v.id: find_video(index, v.id) for v in videos}, [])


def _distinct_names(ids: Iterable[str], name_of: Callable[[str], str], what: str) -> None:
    """Refuse two ids that would share a clip name (one's clips would stand for the
    other's): `safe_name` leaves only files differing in their suffix, or a hash collision."""
    seen: dict[str, str] = {}
    for given in ids:
        other = seen.setdefault(name_of(given), given)
        if other != given:
            raise VansError(
                f"{what} {other!r} and {given!r} both give the clip name {name_of(given)!r}; "
                "rename one of them"
            )


def _table_name(written: str) -> str:
    """A pairs-table clip's name: its path as written, without the suffix."""
    return safe_name(Path(written).with_suffix("").as_posix())


def build(
    settings: BuildSettings,
    out: Path,
    captioner: ChatBackend,
    writer: ChatBackend,
    prompts: Prompts | None = None,
    progress: Progress | None = None,
    inputs: Inputs | None = None,
) -> dict[str, Any]:
    """Run every step into `out` (manifest.jsonl or manifest.partial.jsonl, report.json,
    clips/, steps/, cache.sqlite) from `inputs` (default: `load_inputs(settings)`); returns
    the report."""
    prompts = prompts or Prompts()
    inputs = inputs or load_inputs(settings)
    tick = progress or (lambda phase, total, n: None)
    source = settings.source or settings.format
    task = TASKS[settings.format]
    for folder in (out, out / "clips", out / "steps"):
        # what a killed run was writing (`vans.io.atomic_file`): never complete, never used
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
    cache = ReplyCache(out / "cache.sqlite")
    rejections = Rejections()
    stats = {"captioner": CallStats(), "writer": CallStats()}

    # 1. Clips
    videos = inputs.videos
    if settings.format == "pairs":
        clips, table = _table_clips(inputs.rows, settings.videos, source, rejections)
        counts = {"rows": len(inputs.rows)}
    else:
        counts = {"videos": len(videos), "steps": sum(len(v.steps) for v in videos)}
        tick("cut", counts["steps"], 0)
        cut = cut_clips(
            videos,
            inputs.files,
            source,
            out / "clips",
            rejections,
            fps=settings.clip_fps,
            min_seconds=settings.min_seconds,
            on_steps=lambda n: tick("cut", None, n),
        )
        clips = list(cut.values())

    # 2. Captions
    tick("caption", len(clips), 0)
    captions, failed = caption_clips(
        clips,
        captioner,
        prompts,
        cache,
        rejections,
        stats["captioner"],
        chunk=settings.chunk,
        on_done=lambda n: tick("caption", None, n),
    )
    unusable(captions, rejections)

    # 3. Pairs
    if settings.format == "pairs":
        pairs = _table_pairs(table, captions, rejections, source)
    else:
        pairs = pair_steps(
            videos,
            source,
            captions,
            failed,
            rejections,
            max_skipped=settings.max_skipped,
            max_overlap_s=settings.max_overlap_s,
        )

    # 4-5. Question, reasoning, answer; the leak check
    calls = Calls(
        writer, prompts, cache, stats["writer"], settings.chunk, lambda n: tick("write", None, n)
    )
    tick("write", len(pairs), 0)
    written = write_pairs(pairs, task, calls, rejections)
    n_written = len(written)
    if task is TaskType.PREDICTIVE:
        tick("leak check", len(written), 0)
        calls.on_done = lambda n: tick("leak check", None, n)
        written = check_leaks(written, calls, rejections)

    # 6. Manifest and report
    samples = [_sample(w, task, source) for w in written]
    _check_ids(samples)
    complete = not any(s.failed for s in stats.values())
    _write_steps(out, captions, pairs, written)
    name, other = ("manifest.jsonl", "manifest.partial.jsonl")[:: 1 if complete else -1]
    write_manifest(out / name, samples)
    (out / other).unlink(missing_ok=True)  # an earlier run's: this one supersedes it
    input_seconds = [w.pair.input.clip.duration for w in written]
    target_seconds = [w.pair.target.clip.duration for w in written]
    report = {
        "complete": complete,
        "counts": {
            **counts,
            "clips": len(clips),
            "captioned": len(captions),
            "usable": sum(c.usable for c in captions.values()),
            "pairs": len(pairs),
            "written": n_written,
            "samples": len(samples),
        },
        "rejections": rejections.items,
        "calls": {role: s.__dict__ for role, s in stats.items()},
        "durations": {
            "input": duration_stats(input_seconds, PAPER_SECONDS["input"]),
            "target": duration_stats(target_seconds, PAPER_SECONDS["target"]),
        },
    }
    write_json(out / "report.json", report)
    return report


def _check_ids(samples: list[VNEPSample]) -> None:
    """Refuse to write a manifest whose ids are invalid or repeated (`vans data validate`
    would reject it)."""
    seen: set[str] = set()
    for sample in samples:
        why = check_sample_id(sample.id)
        if why is not None:
            raise VansError(f"sample id: {why}; pass a shorter --source")
        if sample.id in seen:
            raise VansError(f"two samples have the id {sample.id!r}; rename one of their videos")
        seen.add(sample.id)


def _table_clips(
    rows: list[PairRow], root: Path, source: str, rejections: Rejections
) -> tuple[list[Clip], list[tuple[PairRow, Clip | None, Clip | None]]]:
    """Each distinct clip of a pairs table, used in place (no cutting), and each row's two."""
    by_path: dict[str, Clip | None] = {}
    for row in rows:
        for written in (row.input, row.target):
            if written in by_path:
                continue
            path = resolve_pair_path(root, written)
            duration = None
            if path is not None:
                try:
                    duration = video_duration(path)
                except VIDEO_ERRORS as exc:
                    rejections.add("cut", f"clip {written}", f"cannot read {path}: {exc}")
                    by_path[written] = None
                    continue
            if path is None or duration is None:
                why = "not found under --videos" if path is None else "declares no duration"
                rejections.add("cut", f"clip {written}", why)
                by_path[written] = None
                continue
            cid = f"{source}-{_table_name(written)}"
            by_path[written] = Clip(cid, written, -1, path, None, None, duration)
    clips = list(dict.fromkeys(c for c in by_path.values() if c is not None))
    return clips, [(r, by_path[r.input], by_path[r.target]) for r in rows]


def _table_pairs(
    table: list[tuple[PairRow, Clip | None, Clip | None]],
    captions: dict[str, Caption],
    rejections: Rejections,
    source: str,
) -> list[Pair]:
    pairs = []
    for row, first, second in table:
        item = f"line {row.line}"
        got = [captions.get(c.id) if c is not None else None for c in (first, second)]
        if got[0] is None or got[1] is None:
            rejections.add("pair", item, "a clip of the row was rejected earlier")
        elif not (got[0].usable and got[1].usable):
            rejections.add("pair", item, "a clip of the row is unusable")
        else:
            pairs.append(Pair(f"{source}-row{row.line:05d}", got[0], got[1]))
    return pairs


def _sample(w: Written, task: TaskType, source: str) -> VNEPSample:
    pair = w.pair
    extra = {
        "videos": [pair.input.clip.video, pair.target.clip.video],
        "steps": [pair.input.clip.step, pair.target.clip.step],
        "windows": [pair.input.clip.window, pair.target.clip.window],
        "labels": [pair.input.clip.label, pair.target.clip.label],
        "skipped": list(pair.skipped),
        "task_name": pair.task_name,
        "completed": list(pair.completed),
        "input_caption": pair.input.caption,
        "target_caption": pair.target.caption,
        "provenance": {
            "caption_input": pair.input.provenance,
            "caption_target": pair.target.provenance,
            **w.provenance,
        },
    }
    return VNEPSample(
        pair.id,
        VideoRef(pair.input.clip.path),
        w.question,
        w.answer,
        VideoRef(pair.target.clip.path),
        w.reasoning,
        task,
        source,
        extra,
    )


def _write_steps(
    out: Path, captions: dict[str, Caption], pairs: list[Pair], written: list[Written]
) -> None:
    """Each step's results, for reading (the manifest does not depend on them)."""
    steps = out / "steps"
    caption_rows = [
        {"clip": c.clip.id, "caption": c.caption, "usable": c.usable, "reason": c.reason}
        for _, c in sorted(captions.items())
    ]
    pair_rows = [
        {
            "pair": p.id,
            "input": p.input.clip.id,
            "target": p.target.clip.id,
            "skipped": list(p.skipped),
        }
        for p in pairs
    ]
    for name, rows in (("captions", caption_rows), ("pairs", pair_rows)):
        write_json(steps / f"{name}.json", rows)
    write_json(
        steps / "written.json",
        [
            {
                "pair": w.pair.id,
                "question": w.question,
                "reasoning": w.reasoning,
                "answer": w.answer,
            }
            for w in written
        ],
    )
