"""Video I/O with PyAV (no torchvision): read, sample, resize/crop, write MP4 and GIF.

Frames are always uint8 tensors of shape (T, H, W, 3) in RGB.

Sampling rules of `read_video` (all times in seconds, taken from the decoded frames'
presentation timestamps, so variable-frame-rate files are handled):

* The window keeps the frames whose timestamp t satisfies start <= t < end. It starts at
  the first kept frame (t_first) and ends at t_end = min(end, last kept frame's timestamp
  + its duration); without `end` that is the end of the video.
* No `fps` / `num_frames`: every frame in the window, at the native frame rate (the
  stream's average rate, or an estimate from the timestamps if the stream has none).
* `fps=r`: samples at t_k = t_first + k / r for k = 0, 1, ... while t_k < t_end, each
  taking the last frame with timestamp <= t_k (nearest preceding, so frames repeat when
  r exceeds the native rate). `Video.fps` is r.
* `num_frames=N`: of the M frames in the window, those at indices
  round(linspace(0, M - 1, N)). `Video.fps` is N / (t_end - t_first), i.e. N over the
  window duration (M / native fps for a constant-rate file), so the clip plays in the
  same wall-clock time as the original.

A file that stops decoding early (decoder error, or the decodable frames end before the
duration the container declares, which is what a truncated MP4 with its index at the
front looks like) raises `VideoError` rather than returning a silently shortened clip.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vans.data.probe import VIDEO_ERRORS, declared_ends, declared_rate
from vans.errors import VansError
from vans.io import atomic_file

PROTOCOL_SIZE: tuple[int, int] = (352, 640)
"""(height, width) every method outputs in the VANS evaluation protocol."""

# Tolerance (seconds) for comparing frame timestamps with requested times, so float
# round-off never moves a frame that sits exactly on a boundary to the other side.
_EPS = 1e-6
# Frames per interpolate call: bounds float32 memory to ~100 MB at protocol size.
_RESIZE_CHUNK = 32
# "Same seed, same bytes" covers every MP4 vans writes. One encoder thread: x264's threaded
# rate control and lookahead may decide differently from run to run.
_MP4_OPTIONS = {"crf": "18", "preset": "fast", "threads": "1"}


@functools.cache
def _mp4_options() -> dict[str, str]:
    """`_MP4_OPTIONS`, with x264's AVX-512 code left out on a CPU that has it.

    With AVX-512, libx264 (PyAV's build) encodes the same frames to different bytes from
    run to run, depending on what the process did before (in about one encode in ten after
    torch work, seen on AMD EPYC / Zen 4); turning off the macroblock tree or capping its
    assembly at AVX2 both make it repeatable, and the AVX2 output is the bytes AVX-512 gives
    in most runs. docs/reliability.md ("Why AVX-512 is left out") has the measurement.
    """
    if not _cpu_has_avx512():
        return _MP4_OPTIONS
    return {**_MP4_OPTIONS, "x264-params": "asm=AVX2"}  # x264's name for "up to AVX2"


def _cpu_has_avx512() -> bool:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: x264 detects the CPU itself
        return False
    return any(
        line.startswith("flags") and "avx512f" in line.split() for line in cpuinfo.splitlines()
    )


class VideoError(VansError):
    """A video could not be read or written; names the path and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class Video:
    """Decoded frames (T, H, W, 3) uint8 and the frame rate they are sampled at."""

    frames: torch.Tensor
    fps: float


def read_video(
    path: str | Path,
    *,
    start: float | None = None,
    end: float | None = None,
    fps: float | None = None,
    num_frames: int | None = None,
    size: tuple[int, int] | None = None,
) -> Video:
    """Decode the video stream of `path`, optionally windowed, resampled and resized.

    See the module docstring for the exact sampling rules. `size=(H, W)` applies
    `resize_center_crop`. Raises `VideoError` for anything wrong with the file or the
    window, `ValueError` for contradictory arguments (both `fps` and `num_frames`).
    """
    path = Path(path)
    if fps is not None and num_frames is not None:
        raise ValueError("fps and num_frames are mutually exclusive; pass at most one")
    if fps is not None:
        _check_fps(fps)
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    lo = 0.0 if start is None else float(start)
    hi = math.inf if end is None else float(end)
    if not lo >= 0:  # NaN too
        raise VideoError(path, f"invalid window: start must be >= 0, got {lo}")
    if not hi > lo:
        raise VideoError(path, f"invalid window: end ({hi}) must be greater than start ({lo})")
    window = "the video" if start is None and end is None else _describe_window(lo, hi)
    if fps is not None:
        at_rate = _AtRate(float(fps))
        _, _, t_end = _decode_window(path, lo, hi, at_rate)
        frames, out_fps = at_rate.finish(t_end), float(fps)
    elif num_frames is not None:
        frames, out_fps = _evenly(path, lo, hi, num_frames, window)
    else:
        every: list[torch.Tensor] = []
        _, out_fps, _ = _decode_window(path, lo, hi, lambda i, t, f: every.append(_rgb(f)))
        frames = every
    frames = torch.stack(frames)
    if size is not None:
        frames = resize_center_crop(frames, size)
    return Video(frames=frames, fps=out_fps)


# The frames a read returns are chosen as the decoder streams past them, so memory holds the
# frames the caller asked for, not the clip: 33 frames of a 40-second 1080p clip, not 1200.

_BUFFER_BYTES = 256 * 2**20
"""Decoded frames `num_frames` sampling holds in one pass; a longer window is decoded twice
(count, then keep the chosen frames) instead."""


def _rgb(frame: av.VideoFrame) -> torch.Tensor:
    return torch.from_numpy(frame.to_ndarray(format="rgb24"))


class _AtRate:
    """`fps=r` sampling, streaming: each time t_k = t_first + k / r takes the last frame at or
    before it, known once a later frame (or the window's end) passes t_k."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.t_first: float | None = None
        self.k = 0
        self.previous: av.VideoFrame | None = None
        self.previous_rgb: torch.Tensor | None = None
        self.frames: list[torch.Tensor] = []

    def _target(self) -> float:
        assert self.t_first is not None
        return self.t_first + self.k / self.fps

    def _take_previous(self) -> None:
        if self.previous_rgb is None:
            self.previous_rgb = _rgb(self.previous)
        self.frames.append(self.previous_rgb)
        self.k += 1

    def __call__(self, index: int, t: float, frame: av.VideoFrame) -> None:
        if self.t_first is None:
            self.t_first = t
        while self._target() + _EPS < t:
            self._take_previous()
        self.previous, self.previous_rgb = frame, None

    def finish(self, t_end: float) -> list[torch.Tensor]:
        while self._target() < t_end - _EPS:
            self._take_previous()
        return self.frames


def _evenly(
    path: Path, lo: float, hi: float, num_frames: int, window: str
) -> tuple[list[torch.Tensor], float]:
    """`num_frames=N` sampling: the frames at round(linspace(0, M - 1, N)) of the M in the
    window, and the rate N / (t_end - t_first)."""
    held: list[av.VideoFrame] = []
    size = 0

    def hold(index: int, t: float, frame: av.VideoFrame) -> None:
        nonlocal size
        if size <= _BUFFER_BYTES:
            held.append(frame)
            size += frame.width * frame.height * 3 // 2  # yuv420p
        elif held:
            held.clear()  # too long to hold: count now, decode the chosen frames again

    times, _, t_end = _decode_window(path, lo, hi, hold)
    if len(times) < num_frames:
        found = f"{len(times)} frame" + ("" if len(times) == 1 else "s")
        raise VideoError(path, f"{window} has only {found} but {num_frames} were requested")
    indices = np.rint(np.linspace(0, len(times) - 1, num_frames)).astype(int).tolist()
    rate = num_frames / (t_end - times[0])
    if len(held) == len(times):
        return [_rgb(held[i]) for i in indices], rate
    chosen: dict[int, torch.Tensor] = {}
    wanted = set(indices)

    def keep(index: int, t: float, frame: av.VideoFrame) -> None:
        if index in wanted:
            chosen[index] = _rgb(frame)

    again, _, _ = _decode_window(path, lo, hi, keep)
    if again != times:
        raise VideoError(path, "decoded differently on a second pass; cannot sample it")
    return [chosen[i] for i in indices], rate


def _decode_window(
    path: Path, lo: float, hi: float, on_frame: Callable[[int, float, av.VideoFrame], None]
) -> tuple[list[float], float, float]:
    """Decode the frames in [lo, hi), passing each to `on_frame(index in the window,
    timestamp, frame)`; return their timestamps, the native fps and the window end time."""
    if not path.exists():
        raise VideoError(path, "file not found")
    if path.is_dir():
        raise VideoError(path, "is a directory, not a video file")
    if path.stat().st_size == 0:
        raise VideoError(path, "file is empty (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="replace")
    except VIDEO_ERRORS as exc:
        raise VideoError(
            path, f"cannot be opened as a video (unrecognised format, or corrupt/truncated): {exc}"
        ) from exc
    with container:
        if not container.streams.video:
            raise VideoError(path, "has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = declared_rate(stream)
        tb = stream.time_base
        stream_end, container_end = declared_ends(container)

        times: list[float] = []
        last_t = last_dur = None
        reached_eof = True
        n_decoded = 0
        try:
            # Raw elementary streams declare no duration and carry no timestamps to seek
            # by; for them we decode from the beginning.
            if lo > 0 and (stream_end or container_end) and tb is not None:
                container.seek(int(lo / tb), stream=stream, backward=True)
            for frame in container.decode(stream):
                n_decoded += 1
                if frame.time is not None:
                    t = frame.time
                elif rate:
                    t = 0.0 if last_t is None else last_t + 1 / float(rate)
                else:
                    raise VideoError(path, "frames have no timestamps and no frame rate")
                if t >= hi - _EPS:
                    reached_eof = False
                    break
                last_t = t
                last_dur = float(frame.duration * tb) if frame.duration and tb else None
                if t >= lo - _EPS:
                    on_frame(len(times), t, frame)
                    times.append(t)
        except VIDEO_ERRORS as exc:
            raise VideoError(
                path, f"corrupt or truncated: decoding failed after {n_decoded} frames: {exc}"
            ) from exc

    if n_decoded == 0 and lo == 0:
        raise VideoError(path, "contains no decodable video frames")
    if not times:
        length = stream_end or container_end or last_t or 0.0
        raise VideoError(
            path, f"{_describe_window(lo, hi)} is empty; the video is {length:.3f} s long"
        )
    if rate:
        native_fps = float(rate)
    elif len(times) > 1:
        native_fps = (len(times) - 1) / (times[-1] - times[0])
    else:
        raise VideoError(path, "cannot determine the frame rate of a single-frame video")
    if last_dur is None:
        last_dur = 1 / native_fps
    decoded_end = times[-1] + last_dur
    if reached_eof and stream_end is not None and stream_end - decoded_end > last_dur:
        raise VideoError(
            path,
            f"corrupt or truncated: frames end at {decoded_end:.3f} s "
            f"but the video stream declares {stream_end:.3f} s",
        )
    return times, native_fps, min(hi, decoded_end)


def _describe_window(lo: float, hi: float) -> str:
    return f"the window [{lo:g} s, {'end' if math.isinf(hi) else f'{hi:g} s'})"


def resize_center_crop(
    frames: torch.Tensor, size: tuple[int, int], mode: str = "bilinear"
) -> torch.Tensor:
    """Scale (T, H, W, 3) uint8 frames to cover `size=(H, W)`, then center-crop to it.

    The scale is max(H / h, W / w) so no padding is ever needed; resizing uses `mode`
    ("bilinear" or "bicubic") with antialiasing in float32. Frames already of that size are
    returned unchanged.
    """
    _check_frames(frames)
    target_h, target_w = size
    if target_h < 1 or target_w < 1:
        raise ValueError(f"size must be positive (H, W), got {size}")
    h, w = frames.shape[1:3]
    if (h, w) == (target_h, target_w):
        return frames
    scale = max(target_h / h, target_w / w)
    # max() guards against round-off leaving the covering size one pixel short.
    new_h, new_w = max(target_h, round(h * scale)), max(target_w, round(w * scale))
    if (new_h, new_w) == (h, w):  # Only a crop is needed: keep pixels exact.
        resized = frames
    else:
        chunks = []
        for chunk in frames.split(_RESIZE_CHUNK):
            x = chunk.permute(0, 3, 1, 2).float()
            x = F.interpolate(
                x, size=(new_h, new_w), mode=mode, antialias=True, align_corners=False
            )
            chunks.append(x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1))
        resized = torch.cat(chunks)
    top, left = (new_h - target_h) // 2, (new_w - target_w) // 2
    return resized[:, top : top + target_h, left : left + target_w].contiguous()


def write_mp4(path: str | Path, frames: torch.Tensor, fps: float) -> Path:
    """Write frames as H.264 (libx264, yuv420p, crf 18) MP4, atomically; returns the path.

    yuv420p needs even dimensions, so odd sizes are cropped by one pixel at the
    bottom/right. Fractional rates (e.g. 23.976) are stored as exact fractions.
    """
    path = Path(path)
    _check_frames(frames)
    _check_fps(fps)
    frames = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2].contiguous()
    if frames.shape[1] == 0 or frames.shape[2] == 0:
        raise ValueError("frames must be at least 2x2 pixels for H.264 yuv420p")
    rate = Fraction(fps).limit_denominator(1001)
    with (
        _atomic_output(path) as tmp,
        av.open(str(tmp), "w", format="mp4", options={"movflags": "faststart"}) as out,
    ):
        stream = out.add_stream("libx264", rate=rate, options=_mp4_options())
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for i, frame in enumerate(frames.numpy()):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = i
            video_frame.time_base = 1 / rate
            out.mux(stream.encode(video_frame))
        out.mux(stream.encode())
    return path


def write_gif(path: str | Path, frames: torch.Tensor, fps: float) -> Path:
    """Write frames as a looping GIF with Pillow, atomically; returns the path.

    GIF stores delays in 10 ms steps, so the frame delay is round(1000 / fps) ms as
    Pillow rounds it, and colours are quantised to a 256-colour palette. Pillow merges
    identical consecutive frames into one longer frame (playback is unchanged).
    """
    path = Path(path)
    _check_frames(frames)
    _check_fps(fps)
    images = [Image.fromarray(frame) for frame in frames.numpy()]
    with _atomic_output(path) as tmp:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=round(1000 / fps),
            loop=0,
        )
    return path


@contextmanager
def _atomic_output(path: Path) -> Iterator[Path]:
    """`atomic_file`, with any failure to write reported as a VideoError naming `path`."""
    try:
        with atomic_file(path) as tmp:
            yield tmp
    except (OSError, *VIDEO_ERRORS) as exc:
        raise VideoError(path, f"cannot write: {exc}") from exc


def _check_frames(frames: torch.Tensor) -> None:
    if not isinstance(frames, torch.Tensor):
        raise ValueError(f"frames must be a torch.Tensor, got {type(frames).__name__}")
    if frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3), got {tuple(frames.shape)}")
    if min(frames.shape[:3]) < 1:
        raise ValueError(f"frames must be non-empty, got shape {tuple(frames.shape)}")


def _check_fps(fps: float) -> None:
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
