"""`vans data build`: annotated videos -> a VNEP manifest and its report, every step
resumable (docs/vansdata.md).

    annotations ─parse─> videos + steps ─cut─> clips/ ─caption─> captions (usable?)
      ─pair─> adjacent usable steps ─write─> question, reasoning, answer
      ─leak check (predictive)─> manifest.jsonl + report.json

What makes a killed run (SIGKILL at any point) resume to the very manifest an uninterrupted
run writes: a clip file exists only complete (atomic writes), every model reply is in the
SQLite cache (`cache.sqlite`, transactions) the moment its chunk returns, every step's output
is a pure function of the annotations, the clips and the cached replies, and the manifest
and report are written last, atomically. A rerun therefore cuts nothing and calls nothing
that is done: only failed calls are made again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vans.chat import CallStats, ChatBackend, ReplyCache
from vans.data.manifest import write_manifest
from vans.data.probe import VIDEO_ERRORS, video_duration
from vans.data.schema import TaskType, VideoRef, VNEPSample
from vans.io import write_json
from vans.vansdata.annotations import (
    TASKS,
    AnnotatedVideo,
    Format,
    PairRow,
    find_video,
    load_pairs,
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
    clip_fps: float | None = 16.0
    min_seconds: float = 1.0
    max_skipped: int = 1
    max_overlap_s: float = 1.0
    chunk: int = 32
    """Requests sent (and cached) together: a killed run loses at most one chunk's replies."""


def build(
    settings: BuildSettings,
    out: Path,
    captioner: ChatBackend,
    writer: ChatBackend,
    prompts: Prompts | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run every step into `out` (manifest.jsonl, report.json, clips/, steps/, cache.sqlite);
    returns the report."""
    prompts = prompts or Prompts()
    tick = progress or (lambda phase, total, n: None)
    source = settings.source or settings.format
    task = TASKS[settings.format]
    cache = ReplyCache(out / "cache.sqlite")
    rejections = Rejections()
    stats = {"captioner": CallStats(), "writer": CallStats()}

    # 1. Inputs and clips
    if settings.format == "pairs":
        rows = load_pairs(settings.annotations)
        clips, table = _table_clips(rows, settings.videos, source, rejections)
        videos: list[AnnotatedVideo] = []
        counts = {"rows": len(rows)}
    else:
        videos = load_videos(settings.annotations, settings.format)
        index = video_index(settings.videos)
        files = {v.id: find_video(index, v.id) for v in videos}
        counts = {"videos": len(videos), "steps": sum(len(v.steps) for v in videos)}
        tick("cut", counts["steps"], 0)
        cut = cut_clips(
            videos,
            files,
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
    captions = caption_clips(
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
    _write_steps(out, captions, pairs, written)
    write_manifest(out / "manifest.jsonl", samples)
    inputs = [w.pair.input.clip.duration for w in written]
    targets = [w.pair.target.clip.duration for w in written]
    report = {
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
            "input": duration_stats(inputs, PAPER_SECONDS["input"]),
            "target": duration_stats(targets, PAPER_SECONDS["target"]),
        },
    }
    write_json(out / "report.json", report)
    return report


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
            cid = f"{source}-{safe_name(Path(written).with_suffix('').as_posix())}"
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
        item = f"row {row.line}"
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
