"""What a video file declares about itself, read from its container without decoding (PyAV
only: `vans data validate` checks windows against it without importing torch)."""

from __future__ import annotations

import functools
from fractions import Fraction
from pathlib import Path

import av

VIDEO_ERRORS = (av.FFmpegError, OSError, UnicodeDecodeError)
"""What PyAV raises for unreadable or corrupt input (av.FFmpegError is not an OSError)."""


def declared_ends(container: av.container.InputContainer) -> tuple[float | None, float | None]:
    """The end time (seconds) the first video stream declares and the container's, each None
    when undeclared. Only the stream's can reveal truncation: the container's may include a
    longer audio track."""
    stream = container.streams.video[0]
    tb = stream.time_base
    stream_end = None
    if stream.duration is not None and tb is not None:
        stream_end = float((stream.duration + (stream.start_time or 0)) * tb)
    container_end = None if container.duration is None else container.duration / av.time_base
    return stream_end, container_end


def declared_rate(stream: av.video.stream.VideoStream) -> Fraction | None:
    """The frame rate a video stream declares (its average rate, else FFmpeg's guess), None
    when it declares neither."""
    return stream.average_rate or stream.guessed_rate or None


@functools.lru_cache(maxsize=4096)
def probe_video(path: Path) -> tuple[float | None, float | None] | None:
    """The duration `path` declares (its video stream's, else its container's) and its frame
    rate (`declared_rate`), each None when undeclared; None when it has no video stream.
    Cached: manifests refer to one video many times. Raises `VIDEO_ERRORS` when the file
    cannot be opened."""
    with av.open(str(path), metadata_errors="replace") as container:
        if not container.streams.video:
            return None
        stream_end, container_end = declared_ends(container)
        rate = declared_rate(container.streams.video[0])
        duration = stream_end if stream_end is not None else container_end
        return duration, None if rate is None else float(rate)


def video_duration(path: Path) -> float | None:
    """The duration `path` declares (`probe_video`), None when it has no video stream or
    declares none."""
    probed = probe_video(path)
    return None if probed is None else probed[0]
