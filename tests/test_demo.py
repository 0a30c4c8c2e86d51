"""End to end: the README's main job, and toy-world data through the training Dataset."""

from __future__ import annotations

import html

import numpy as np
import pytest
from PIL import Image

from vans.cli.main import run
from vans.data.dataset import VideoViews, VNEPDataset, collate_vnep
from vans.data.manifest import load_manifest
from vans.data.toyworld import ToyWorldConfig, write_toyworld
from vans.data.video import PROTOCOL_SIZE


def test_demo_writes_data_set_and_preview(tmp_path, capsys) -> None:
    assert run(["demo", "--out", str(tmp_path), "--num", "6"]) == 0
    out = capsys.readouterr().out
    samples = load_manifest(tmp_path / "toyworld" / "manifest.jsonl")
    assert len(samples) == 6
    assert "[Think]" in out and "[Ans]" in out and samples[0].answer in out.replace("\n", " ")
    page = (tmp_path / "preview" / "index.html").read_text()
    for s in samples:
        assert html.escape(s.question) in page and html.escape(s.answer) in page
        with Image.open(tmp_path / "preview" / "samples" / f"{s.id}.gif") as gif:
            assert gif.n_frames > 1
    with Image.open(tmp_path / "preview" / "grid.gif") as grid:
        # 6 rows of input | target panels, 128 px cells.
        assert grid.size[0] == 2 * 128 + 4 and grid.size[1] >= 6 * 128


def test_toy_world_feeds_the_dataset(tmp_path) -> None:
    manifest = write_toyworld(ToyWorldConfig(num=4, seed=2), tmp_path)
    views = VideoViews(
        vdm_num_frames=33, vdm_size=(64, 64), target_num_frames=17, target_size=(64, 64)
    )
    batch = collate_vnep([VNEPDataset(manifest, views)[i] for i in range(2)])
    assert batch["vdm_frames"].shape == (2, 33, 64, 64, 3)
    assert batch["target_frames"].shape == (2, 17, 64, 64, 3)
    # 33 frames at 8 fps = 4.125 s: the VLM sees 5 frames at 1 fps.
    assert [v.shape[0] for v in batch["vlm_frames"]] == [5, 5]


@pytest.mark.slow
def test_protocol_size_toy_world_through_the_dataset(tmp_path) -> None:
    """Toy world at the paper's 352x640 with the protocol's views (33 frames each)."""
    config = ToyWorldConfig(num=8, size=PROTOCOL_SIZE, target_frames=33)
    dataset = VNEPDataset(write_toyworld(config, tmp_path), VideoViews())
    for item in dataset:
        assert item["vdm_frames"].shape == (33, *PROTOCOL_SIZE, 3)
        assert item["target_frames"].shape == (33, *PROTOCOL_SIZE, 3)
        assert np.ptp(item["target_frames"].numpy()) > 100  # objects, not a blank clip
