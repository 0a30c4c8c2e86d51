"""Tests for vans.data.video against the real clips and synthetic files made with PyAV."""

from __future__ import annotations

import math
from bisect import bisect_right
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from vans.data import video as video_module
from vans.data.video import (
    PROTOCOL_SIZE,
    Video,
    VideoError,
    read_video,
    resize_center_crop,
    write_gif,
    write_mp4,
)

CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real_clips"
ALL_CLIPS = sorted(CLIPS.glob("*.mp4"))
needs_clips = pytest.mark.skipif(not ALL_CLIPS, reason=f"real clips not found in {CLIPS}")
# 79 frames, 3.29 s: long enough for several 1 fps samples, small enough to decode fast.
CLIP = CLIPS / "93_172.mp4"
NATIVE_FPS = 1199 / 50  # 23.98, what these clips' streams declare


@cache
def full_decode(path: Path) -> tuple[torch.Tensor, tuple[float, ...]]:
    """Every frame and its timestamp, decoded with plain PyAV (the reference)."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    rgb = torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24")) for f in frames])
    return rgb, tuple(f.time for f in frames)


def count_video_packets(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for p in container.demux(video=0) if p.size > 0)


def gradient_frames(t: int, h: int, w: int) -> torch.Tensor:
    """Smooth, moving colour gradients: content H.264 reproduces closely."""
    y = torch.linspace(0, 1, h).view(1, h, 1)
    x = torch.linspace(0, 1, w).view(1, 1, w)
    phase = torch.arange(t).view(t, 1, 1) / max(t, 1)
    channels = [x * 200 + 30 * phase, y * 200 + 20, (x + y) * 100 + 40 * phase]
    frames = torch.stack(torch.broadcast_tensors(*channels), dim=-1)
    return frames.round().clamp(0, 255).to(torch.uint8)


def assert_video_error(exc_info: pytest.ExceptionInfo[VideoError], path: Path, phrase: str):
    assert type(exc_info.value) is VideoError
    assert str(path) in str(exc_info.value)
    assert phrase in exc_info.value.reason


# --- reading real clips --------------------------------------------------------------------


@needs_clips
@pytest.mark.parametrize("path", ALL_CLIPS, ids=lambda p: p.name)
def test_read_all_frames_of_real_clip(path: Path) -> None:
    video = read_video(path)
    assert isinstance(video, Video)
    assert video.frames.dtype == torch.uint8
    assert video.frames.shape == (count_video_packets(path), 338, 640, 3)
    assert video.fps == pytest.approx(23.976, abs=0.01)


@needs_clips
def test_read_all_frames_matches_reference_decode() -> None:
    reference, _ = full_decode(CLIP)
    assert torch.equal(read_video(CLIP).frames, reference)


@needs_clips
@pytest.mark.parametrize("fps", [1.0, 2.5, 60.0])
def test_fps_sampling_takes_nearest_preceding_frame(fps: float) -> None:
    reference, times = full_decode(CLIP)
    duration = len(times) / NATIVE_FPS
    video = read_video(CLIP, fps=fps)
    expected_count = math.ceil(duration * fps)
    assert video.frames.shape[0] == expected_count
    assert video.fps == fps
    indices = [bisect_right(times, k / fps + 1e-9) - 1 for k in range(expected_count)]
    assert torch.equal(video.frames, reference[indices])


@needs_clips
def test_fps_one_gives_floor_or_ceil_of_duration() -> None:
    _, times = full_decode(CLIP)
    duration = len(times) / NATIVE_FPS  # 3.29 s
    count = read_video(CLIP, fps=1).frames.shape[0]
    assert count in (math.floor(duration), math.ceil(duration))
    assert count == 4  # samples at 0, 1, 2, 3 s


@needs_clips
@pytest.mark.parametrize("n", [1, 8, 79])
def test_num_frames_uses_linspace_indices(n: int) -> None:
    reference, times = full_decode(CLIP)
    video = read_video(CLIP, num_frames=n)
    indices = [round(i) for i in np.linspace(0, len(times) - 1, n)]
    assert torch.equal(video.frames, reference[indices])
    assert video.fps == pytest.approx(n / (len(times) / NATIVE_FPS))


@needs_clips
def test_num_frames_more_than_available_is_an_error() -> None:
    with pytest.raises(VideoError) as exc_info:
        read_video(CLIP, num_frames=80)
    assert_video_error(exc_info, CLIP, "has only 79 frames but 80 were requested")


@needs_clips
@pytest.mark.parametrize(("start", "end"), [(1.0, 2.0), (0.5, None), (None, 1.25), (2.9, 99.0)])
def test_window_keeps_frames_with_timestamps_in_range(start, end) -> None:
    reference, times = full_decode(CLIP)
    lo, hi = start or 0.0, end or math.inf
    keep = [i for i, t in enumerate(times) if lo <= t < hi]
    video = read_video(CLIP, start=start, end=end)
    assert torch.equal(video.frames, reference[keep])
    assert video.fps == pytest.approx(NATIVE_FPS)


@needs_clips
def test_window_with_fps_starts_at_first_frame_in_window() -> None:
    reference, times = full_decode(CLIP)
    first = next(t for t in times if t >= 1.0)
    video = read_video(CLIP, start=1.0, end=3.0, fps=2)
    # Samples at first + 0, 0.5, 1.0, 1.5 (first + 2.0 > end).
    indices = [bisect_right(times, first + k / 2 + 1e-9) - 1 for k in range(4)]
    assert torch.equal(video.frames, reference[indices])


@needs_clips
def test_window_with_num_frames() -> None:
    reference, times = full_decode(CLIP)
    keep = [i for i, t in enumerate(times) if 1.0 <= t < 2.0]
    video = read_video(CLIP, start=1.0, end=2.0, num_frames=3)
    assert torch.equal(video.frames, reference[[keep[0], keep[len(keep) // 2], keep[-1]]])


@needs_clips
def test_window_past_the_end_is_empty() -> None:
    with pytest.raises(VideoError) as exc_info:
        read_video(CLIP, start=10.0)
    assert_video_error(exc_info, CLIP, "is empty; the video is 3.294 s long")


@needs_clips
@pytest.mark.parametrize(("start", "end"), [(-1.0, None), (2.0, 2.0), (2.0, 1.0), (None, 0.0)])
def test_invalid_window_is_an_error(start, end) -> None:
    with pytest.raises(VideoError) as exc_info:
        read_video(CLIP, start=start, end=end)
    assert_video_error(exc_info, CLIP, "invalid window")


@needs_clips
def test_fps_and_num_frames_are_exclusive() -> None:
    with pytest.raises(ValueError, match="mutually exclusive"):
        read_video(CLIP, fps=2, num_frames=4)


@needs_clips
def test_read_with_size_resizes_to_protocol() -> None:
    reference, _ = full_decode(CLIP)
    video = read_video(CLIP, num_frames=2, size=PROTOCOL_SIZE)
    assert video.frames.shape == (2, 352, 640, 3)
    assert torch.equal(video.frames, resize_center_crop(reference[[0, -1]], PROTOCOL_SIZE))


def test_variable_frame_rate_file(tmp_path: Path) -> None:
    path = tmp_path / "vfr.mp4"
    pts_ms = [0, 100, 200, 600, 700, 1500]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264")
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, pts in enumerate(pts_ms):
            frame = av.VideoFrame.from_ndarray(
                np.full((32, 32, 3), i * 50, np.uint8), format="rgb24"
            )
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())

    def levels(video: Video) -> list[int]:  # frame i is grey level 50 * i
        return [round(v / 50) for v in video.frames.float().mean(dim=(1, 2, 3)).tolist()]

    assert levels(read_video(path)) == [0, 1, 2, 3, 4, 5]
    # 10 fps: t = 0.0, 0.1, ..., 1.5 (the last frame starts at 1.5 s and lasts < 0.1 s).
    assert levels(read_video(path, fps=10)) == [0, 1, 2, 2, 2, 2, 3, 4, 4, 4, 4, 4, 4, 4, 4, 5]
    assert levels(read_video(path, start=0.5, end=1.0)) == [3, 4]


# --- resize_center_crop --------------------------------------------------------------------


def test_resize_real_aspect_to_protocol_size() -> None:
    frames = gradient_frames(2, 338, 640)
    out = resize_center_crop(frames, PROTOCOL_SIZE)
    assert out.shape == (2, 352, 640, 3)
    assert out.dtype == torch.uint8


def test_resize_constant_colour_stays_constant() -> None:
    frames = torch.empty(1, 338, 640, 3, dtype=torch.uint8)
    frames[..., :] = torch.tensor([12, 200, 77], dtype=torch.uint8)
    out = resize_center_crop(frames, (352, 640))
    assert torch.equal(out, torch.tensor([12, 200, 77], dtype=torch.uint8).expand(1, 352, 640, 3))


def test_resize_downscale_keeps_boundary_at_centre() -> None:
    frames = torch.zeros(1, 64, 128, 3, dtype=torch.uint8)
    frames[:, :, :64, 0] = 255  # left half red
    frames[:, :, 64:, 2] = 255  # right half blue
    out = resize_center_crop(frames, (32, 64))
    assert out.shape == (1, 32, 64, 3)
    assert torch.all(out[0, :, :31, 0] == 255) and torch.all(out[0, :, :31, 2] == 0)
    assert torch.all(out[0, :, 33:, 2] == 255) and torch.all(out[0, :, 33:, 0] == 0)
    # Antialiasing blends the two pixels either side of the boundary symmetrically.
    assert torch.equal(out[0, :, 31, 0], out[0, :, 32, 2])


def test_resize_tall_input_crops_centre_rows() -> None:
    # Width already matches: scale 1, so it is an exact crop of rows (100 - 60) // 2 = 20...
    frames = torch.arange(100, dtype=torch.uint8).view(1, 100, 1, 1).expand(1, 100, 40, 3)
    out = resize_center_crop(frames.contiguous(), (60, 40))
    assert torch.equal(out[0, :, 0, 0], torch.arange(20, 80, dtype=torch.uint8))
    # ... and an odd excess rounds the offset down: (101 - 60) // 2 = 20.
    frames = torch.arange(101, dtype=torch.uint8).view(1, 101, 1, 1).expand(1, 101, 40, 3)
    assert resize_center_crop(frames, (60, 40))[0, 0, 0, 0] == 20


def test_resize_same_size_is_unchanged() -> None:
    frames = gradient_frames(3, 20, 30)
    assert resize_center_crop(frames, (20, 30)) is frames


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (torch.zeros(1, 8, 8, 3), "must be uint8"),
        (torch.zeros(8, 8, 3, dtype=torch.uint8), r"shape \(T, H, W, 3\)"),
        (torch.zeros(1, 8, 8, 4, dtype=torch.uint8), r"shape \(T, H, W, 3\)"),
        (np.zeros((1, 8, 8, 3), np.uint8), "must be a torch.Tensor"),
    ],
)
def test_resize_rejects_bad_frames(frames, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resize_center_crop(frames, (4, 4))


# --- writing -------------------------------------------------------------------------------


def mp4_stream_info(path: Path) -> tuple[str, str, Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.name, stream.codec_context.pix_fmt, stream.average_rate


@pytest.mark.parametrize(("h", "w"), [(64, 64), (63, 65)])
def test_write_mp4_round_trip(tmp_path: Path, h: int, w: int) -> None:
    frames = gradient_frames(12, h, w)
    path = write_mp4(tmp_path / "sub" / "dir" / "out.mp4", frames, fps=8)
    assert path == tmp_path / "sub" / "dir" / "out.mp4"
    assert mp4_stream_info(path) == ("h264", "yuv420p", 8)
    video = read_video(path)
    even_h, even_w = h // 2 * 2, w // 2 * 2  # odd sizes lose the bottom row / right column
    assert video.frames.shape == (12, even_h, even_w, 3)
    assert video.fps == 8
    error = (video.frames.float() - frames[:, :even_h, :even_w].float()).abs().mean()
    assert error < 3
    assert [p.name for p in path.parent.iterdir()] == ["out.mp4"]  # no temp file left


def test_write_mp4_gives_the_same_bytes_every_time(tmp_path: Path) -> None:
    """Same frames, same bytes, whatever the process did before. With x264's AVX-512 code
    (an AVX-512 CPU, before `_mp4_options` capped it at AVX2), 1 to 4 of these 96 clips came
    out with other bytes on their second encode in each of 3 runs (docs/reliability.md)."""
    from vans.data.toyworld.long import write_long_videos

    videos = write_long_videos(tmp_path / "long", num_videos=2, steps=4).videos
    differing = []
    for _ in range(12):
        for name in ("toytower0-000", "toytower0-001"):
            for start in (0.5, 2.5, 4.5, 6.5):
                clip = read_video(videos / f"{name}.mp4", start=start, end=start + 1.5, fps=16)
                first, second = (
                    write_mp4(tmp_path / f"{i}.mp4", clip.frames, clip.fps).read_bytes()
                    for i in range(2)
                )
                if first != second:
                    differing.append((name, start))
    assert differing == []


def test_write_mp4_fractional_fps(tmp_path: Path) -> None:
    path = write_mp4(tmp_path / "out.mp4", gradient_frames(24, 32, 32), fps=23.976)
    assert mp4_stream_info(path)[2] == Fraction(2997, 125)
    video = read_video(path)
    assert video.frames.shape[0] == 24
    assert video.fps == pytest.approx(23.976)


def test_write_mp4_replaces_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    path.write_bytes(b"old")
    write_mp4(path, gradient_frames(2, 16, 16), fps=4)
    assert read_video(path).frames.shape == (2, 16, 16, 3)


@pytest.mark.parametrize(
    ("frames", "fps", "message"),
    [
        (torch.zeros(2, 8, 8, 3), 4, "must be uint8"),
        (torch.zeros(2, 8, 8, dtype=torch.uint8), 4, r"shape \(T, H, W, 3\)"),
        (torch.zeros(0, 8, 8, 3, dtype=torch.uint8), 4, "non-empty"),
        (torch.zeros(2, 1, 8, 3, dtype=torch.uint8), 4, "at least 2x2"),
        (torch.zeros(2, 8, 8, 3, dtype=torch.uint8), 0, "fps must be a positive"),
    ],
)
def test_write_mp4_rejects_bad_input(tmp_path: Path, frames, fps, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_mp4(tmp_path / "out.mp4", frames, fps)
    assert not (tmp_path / "out.mp4").exists()


def test_write_gif_round_trip(tmp_path: Path) -> None:
    frames = gradient_frames(5, 21, 34)
    path = write_gif(tmp_path / "anim" / "out.gif", frames, fps=10)
    with Image.open(path) as gif:
        assert gif.format == "GIF"
        assert gif.n_frames == 5
        assert gif.size == (34, 21)
        assert gif.info["duration"] == 100
        assert gif.info["loop"] == 0
        gif.seek(4)
        last = torch.from_numpy(np.array(gif.convert("RGB")))
    assert (last.float() - frames[4].float()).abs().mean() < 8
    assert [p.name for p in path.parent.iterdir()] == ["out.gif"]


def test_write_gif_rejects_bad_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be uint8"):
        write_gif(tmp_path / "out.gif", torch.zeros(1, 4, 4, 3), fps=5)


# --- errors on bad files -------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.mp4"
    with pytest.raises(VideoError) as exc_info:
        read_video(path)
    assert_video_error(exc_info, path, "file not found")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(VideoError) as exc_info:
        read_video(tmp_path)
    assert_video_error(exc_info, tmp_path, "is a directory")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.touch()
    with pytest.raises(VideoError) as exc_info:
        read_video(path)
    assert_video_error(exc_info, path, "file is empty (0 bytes)")


def test_garbage_bytes(tmp_path: Path) -> None:
    path = tmp_path / "garbage.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError) as exc_info:
        read_video(path)
    assert_video_error(exc_info, path, "cannot be opened as a video")


def test_audio_only_file(tmp_path: Path) -> None:
    path = tmp_path / "audio.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=44100, layout="mono")
        for i in range(44):  # ~1 s of silence
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 44100, i * 1024
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    with pytest.raises(VideoError) as exc_info:
        read_video(path)
    assert_video_error(exc_info, path, "has no video stream")


@needs_clips
@pytest.mark.parametrize("fraction", [0.1, 0.6, 0.9])
def test_truncated_real_clip_without_index(tmp_path: Path, fraction: float) -> None:
    # The clips keep their index (moov atom) at the end, so any truncation loses it.
    data = CLIP.read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(VideoError) as exc_info:
        read_video(path)
    assert_video_error(exc_info, path, "cannot be opened as a video")


@pytest.fixture(scope="module")
def faststart_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clip remuxed with its index first, so truncated copies still open."""
    path = tmp_path_factory.mktemp("faststart") / "clip.mp4"
    with (
        av.open(str(CLIP)) as src,
        av.open(str(path), "w", options={"movflags": "faststart"}) as dst,
    ):
        mapping = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is not None:
                packet.stream = mapping[packet.stream.index]
                dst.mux(packet)
    return path


@needs_clips
def test_faststart_clip_reads_fully(faststart_clip: Path) -> None:
    reference, _ = full_decode(CLIP)
    assert torch.equal(read_video(faststart_clip).frames, reference)


@needs_clips
@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.6, 0.9])
def test_truncated_real_clip_with_index_first(
    tmp_path: Path, faststart_clip: Path, fraction: float
) -> None:
    # These open and decode some frames; a shortened clip is reported, never returned.
    data = faststart_clip.read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(VideoError) as exc_info:
        read_video(path)
    assert_video_error(exc_info, path, "corrupt or truncated")
    # A window that ends inside the surviving part still reads.
    assert read_video(path, end=0.05).frames.shape[0] == 2


@needs_clips
def test_clip_with_zeroed_media_data(tmp_path: Path) -> None:
    # Index intact, every compressed frame overwritten: opens, but nothing decodes.
    data = bytearray(CLIP.read_bytes())
    start, stop = data.find(b"mdat") + 4, data.find(b"moov") - 4
    data[start:stop] = bytes(stop - start)
    path = tmp_path / "zeroed.mp4"
    path.write_bytes(bytes(data))
    with pytest.raises(VideoError) as exc_info:
        read_video(path)
    assert_video_error(exc_info, path, "corrupt or truncated: decoding failed after 0 frames")


def test_a_window_too_long_to_hold_is_sampled_in_two_passes_to_the_same_frames(
    tmp_path, monkeypatch
):
    """`num_frames` sampling of a window whose frames exceed the decode buffer counts them,
    then decodes only the chosen ones: the same frames and rate as holding them all."""
    frames = torch.randint(0, 256, (21, 32, 48, 3), dtype=torch.uint8)
    path = write_mp4(tmp_path / "long.mp4", frames, 10.0)
    held = read_video(path, num_frames=7, start=0.3)
    monkeypatch.setattr(video_module, "_BUFFER_BYTES", 0)
    streamed = read_video(path, num_frames=7, start=0.3)
    assert torch.equal(streamed.frames, held.frames) and streamed.fps == held.fps
