"""VNEPDataset: the three video views, time windows, batching and load errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from vans.data.dataset import VideoViews, VNEPDataset, collate_vnep
from vans.data.manifest import write_manifest
from vans.data.schema import TaskType, VideoRef, VNEPSample
from vans.data.video import PROTOCOL_SIZE, VideoError, write_mp4
from vans.errors import VansError

REAL_CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real_clips"
FPS = 8
SIZE = 64
SQUARE = 16
SMALL = VideoViews(vdm_num_frames=8, vdm_size=(32, 48), target_num_frames=6, target_size=(40, 40))


def moving_square(num_frames: int) -> torch.Tensor:
    """Black frames with a white square whose left edge is at x = 2 * frame index."""
    frames = torch.zeros(num_frames, SIZE, SIZE, 3, dtype=torch.uint8)
    for t in range(num_frames):
        frames[t, 24 : 24 + SQUARE, 2 * t : 2 * t + SQUARE] = 255
    return frames


def square_frame_index(frame: torch.Tensor) -> float:
    """Which source frame a native-resolution decoded frame shows, from the square's x."""
    xs = (frame[..., 0] > 128).nonzero()[:, 1].float()
    return (xs.mean().item() - (SQUARE - 1) / 2) / 2


def make_sample(sample_id: str, input: VideoRef, target: VideoRef) -> VNEPSample:
    return VNEPSample(
        id=sample_id,
        input=input,
        question="Where does the square go next?",
        answer="It keeps moving right.",
        target=target,
        reasoning=None,
        task=TaskType.PREDICTIVE,
        source="synthetic",
        extra={},
    )


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3 s input clip (24 frames) and a 2 s target clip (16 frames) at 8 fps, 64x64."""
    folder = tmp_path_factory.mktemp("clips")
    write_mp4(folder / "input.mp4", moving_square(24), FPS)
    write_mp4(folder / "target.mp4", moving_square(16), FPS)
    return folder


def test_item_has_three_views_of_the_right_shape(clips: Path) -> None:
    sample = make_sample("s1", VideoRef(clips / "input.mp4"), VideoRef(clips / "target.mp4"))
    item = VNEPDataset([sample], SMALL)[0]

    assert item["sample"] is sample
    assert item["id"] == "s1" and item["task"] is TaskType.PREDICTIVE
    assert item["question"] == sample.question and item["answer"] == sample.answer
    assert item["reasoning"] is None
    # 3 s at 1 fps: frames at t = 0, 1, 2 s, native 64x64.
    assert item["vlm_frames"].shape == (3, SIZE, SIZE, 3)
    assert item["vlm_fps"] == 1.0
    assert [round(square_frame_index(f)) for f in item["vlm_frames"]] == [0, 8, 16]
    assert item["vdm_frames"].shape == (8, 32, 48, 3)
    assert item["target_frames"].shape == (6, 40, 40, 3)
    for key in ("vlm_frames", "vdm_frames", "target_frames"):
        assert item[key].dtype == torch.uint8


def test_start_and_end_are_honoured(clips: Path) -> None:
    sample = make_sample(
        "win",
        VideoRef(clips / "input.mp4", start=1.0, end=2.5),  # source frames 8..19
        VideoRef(clips / "target.mp4", start=0.5),  # source frames 4..15
    )
    views = VideoViews(
        vdm_num_frames=12, vdm_size=(SIZE, SIZE), target_num_frames=12, target_size=(SIZE, SIZE)
    )
    item = VNEPDataset([sample], views)[0]

    assert [round(square_frame_index(f)) for f in item["vlm_frames"]] == [8, 16]
    assert [round(square_frame_index(f)) for f in item["vdm_frames"]] == list(range(8, 20))
    assert [round(square_frame_index(f)) for f in item["target_frames"]] == list(range(4, 16))


def test_vlm_max_frames_and_size(clips: Path) -> None:
    sample = make_sample("s", VideoRef(clips / "input.mp4"), VideoRef(clips / "target.mp4"))
    views = VideoViews(
        vlm_fps=4.0,
        vlm_max_frames=3,
        vlm_size=(32, 32),
        vdm_num_frames=4,
        vdm_size=(32, 32),
        target_num_frames=4,
        target_size=(32, 32),
    )
    item = VNEPDataset([sample], views)[0]
    # 12 frames at 4 fps thinned to 3: the clip still spans 3 s, at 1 fps.
    assert item["vlm_frames"].shape == (3, 32, 32, 3)
    assert item["vlm_fps"] == pytest.approx(1.0)


def test_dataset_from_manifest_and_dataloader_batches(clips: Path, tmp_path: Path) -> None:
    samples = [
        make_sample(
            f"s{i}",
            VideoRef(clips / "input.mp4", start=0.0, end=end),
            VideoRef(clips / "target.mp4"),
        )
        for i, end in enumerate((3.0, 2.0, 1.5))
    ]
    dataset = VNEPDataset(write_manifest(tmp_path / "m.jsonl", samples), SMALL)
    assert dataset.samples == samples

    batches = list(DataLoader(dataset, batch_size=2, collate_fn=collate_vnep))
    first, last = batches
    assert first["vdm_frames"].shape == (2, 8, 32, 48, 3)
    assert first["target_frames"].shape == (2, 6, 40, 40, 3)
    assert first["id"] == ["s0", "s1"] and last["id"] == ["s2"]
    assert [v.shape[0] for v in first["vlm_frames"]] == [3, 2]  # variable length: a list
    assert first["vlm_fps"] == [1.0, 1.0]
    assert first["sample"] == samples[:2]
    assert first["task"] == [TaskType.PREDICTIVE] * 2


def test_missing_or_corrupt_video_names_the_sample_and_file(clips: Path, tmp_path: Path) -> None:
    missing = tmp_path / "gone.mp4"
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"this is not an mp4 file" * 100)
    dataset = VNEPDataset(
        [
            make_sample("no-target", VideoRef(clips / "input.mp4"), VideoRef(missing)),
            make_sample("bad-input", VideoRef(corrupt), VideoRef(clips / "target.mp4")),
        ],
        SMALL,
    )
    for index, (sample_id, path) in enumerate([("no-target", missing), ("bad-input", corrupt)]):
        with pytest.raises(VideoError) as info:
            dataset[index]
        assert info.value.path == path
        assert f"sample {sample_id!r}" in str(info.value) and str(path) in str(info.value)


def test_too_short_input_for_the_vdm_view_names_the_sample(clips: Path) -> None:
    sample = make_sample(
        "short", VideoRef(clips / "input.mp4", end=0.5), VideoRef(clips / "target.mp4")
    )
    with pytest.raises(VideoError, match=r"sample 'short'.*4 frames but 8 were requested"):
        VNEPDataset([sample], SMALL)[0]


def test_invalid_views_are_user_errors() -> None:
    with pytest.raises(VansError, match="vdm_num_frames must be >= 1"):
        VideoViews(vdm_num_frames=0)
    with pytest.raises(VansError, match="vlm_max_frames must be >= 1"):
        VideoViews(vlm_max_frames=0)
    with pytest.raises(VansError, match="vlm_fps must be > 0"):
        VideoViews(vlm_fps=0.0)


@pytest.mark.skipif(not REAL_CLIPS.is_dir(), reason="shared real clips not available")
def test_real_clip_pair_at_protocol_defaults() -> None:
    sample = VNEPSample(
        id="_hZxA1clljA/93_172",
        input=VideoRef(REAL_CLIPS / "93_172.mp4"),  # 79 frames, 3.29 s, 640x338
        question="What happens next in the video?",
        answer="The next scene.",
        target=VideoRef(REAL_CLIPS / "173_399.mp4"),  # 226 frames, 9.43 s
        reasoning=None,
        task=TaskType.PREDICTIVE,
        source="web",
        extra={},
    )
    item = VNEPDataset([sample])[0]
    assert item["vlm_frames"].shape == (math.ceil(3.29), 338, 640, 3)
    assert item["vdm_frames"].shape == (33, *PROTOCOL_SIZE, 3)
    assert item["target_frames"].shape == (33, *PROTOCOL_SIZE, 3)
    assert item["target_frames"].float().std() > 10  # real content, not blank frames
