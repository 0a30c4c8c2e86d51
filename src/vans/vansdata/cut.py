"""Step 1: cut each annotated step out of its video (PyAV, no system ffmpeg).

Clips are re-encoded, not copied: `vans.data.video.read_video` keeps the frames whose
timestamps fall in [start, end) (frame-exact, whatever the keyframes) and `write_mp4`
writes them as H.264 yuv420p, one encoder thread, so the same cut gives the same bytes and
every clip's cache keys hold across runs. Clips are resampled to `fps` when the video's rate
is higher (Wan2.1 generates 16 fps), which also bounds the frames held in memory per step.
A clip file exists only once complete (`write_mp4` writes atomically), so a clip on disk is
a finished cut: a rerun skips it. Its name holds a hash of everything the cut depends on
(the video file's size and modification time, the window, the rate), so an annotation or a
video changed in place gives a new file instead of reusing a stale one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from vans.data.probe import VIDEO_ERRORS, probe_video
from vans.data.video import VideoError, read_video, write_mp4
from vans.vansdata.annotations import AnnotatedVideo, Step
from vans.vansdata.records import Clip, Rejections, clip_id


def cut_clips(
    videos: list[AnnotatedVideo],
    files: dict[str, Path | None],
    source: str,
    out_dir: Path,
    rejections: Rejections,
    *,
    fps: float | None = 16.0,
    min_seconds: float = 1.0,
    on_steps: Callable[[int], None] = lambda n: None,
) -> dict[tuple[str, int], Clip]:
    """The clip of every step that can be cut, by (video id, step index); the others are
    listed in `rejections` ("cut"). `on_steps(n)` is told as n more steps are done."""
    clips: dict[tuple[str, int], Clip] = {}
    for video in videos:
        path = files.get(video.id)
        if path is None:
            rejections.add("cut", f"video {video.id}", "video file not found under --videos")
            on_steps(len(video.steps))
            continue
        try:
            probed = probe_video(path)
        except VIDEO_ERRORS as exc:
            probed, why = None, f"cannot read {path}: {exc}"
        else:
            why = f"{path}: no video stream" if probed is None else f"{path}: declares no duration"
        if probed is None or probed[0] is None:
            rejections.add("cut", f"video {video.id}", why)
            on_steps(len(video.steps))
            continue
        duration, native_fps = probed
        for index, step in enumerate(video.steps):
            clip = _cut(
                video.id,
                index,
                step,
                path,
                duration,
                native_fps,
                source,
                out_dir,
                rejections,
                fps,
                min_seconds,
            )
            if clip is not None:
                clips[(video.id, index)] = clip
            on_steps(1)
    return clips


def _cut(
    video_id: str,
    index: int,
    step: Step,
    path: Path,
    duration: float,
    native_fps: float | None,
    source: str,
    out_dir: Path,
    rejections: Rejections,
    fps: float | None,
    min_seconds: float,
) -> Clip | None:
    item = f"video {video_id} step {index}"
    end = min(step.end, duration)  # annotations often run a little past the file's end
    if end - step.start < min_seconds:
        why = (
            f"starts at {step.start:g} s, after the video ends ({duration:g} s)"
            if step.start >= duration
            else f"{end - step.start:.2f} s long, shorter than {min_seconds:g} s"
        )
        rejections.add("cut", item, why)
        return None
    cid = clip_id(source, video_id, index)
    # No declared rate (rare): resample to `fps`, which bounds memory all the same.
    rate = fps if fps is not None and (native_fps is None or fps < native_fps) else None
    file = path.stat()
    made_of = [file.st_size, file.st_mtime_ns, step.start, end, rate]
    target = out_dir / f"{cid}-{hashlib.sha256(json.dumps(made_of).encode()).hexdigest()[:8]}.mp4"
    if not target.is_file():
        try:
            clip = read_video(path, start=step.start, end=end, fps=rate)
        except VideoError as exc:
            rejections.add("cut", item, exc.reason)
            return None
        write_mp4(target, clip.frames, clip.fps)
    return Clip(cid, video_id, index, target, step.text, (step.start, end), end - step.start)
