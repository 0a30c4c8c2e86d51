"""Toy "long videos" for VANS-Data's end-to-end tests and demo: each builds a tower block by
block, one annotated step per block, written with annotation files in COIN's, YouCook2's and
ActivityNet Captions' formats and the ground truth of every step (`vans data build --truth`).

Video v (seeded by (seed, v)) has `steps` steps of `step_seconds`, each after a pause of
`gap_seconds`: in step k the k-th block is carried from the pool on the right onto the
tower on the left. The annotation gives each step's window and a COIN-style label ("put
red square on tower"); the truth file gives what the clip shows ("The red square is placed
on top of the tower.").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vans.data.toyworld.render import COLORS, FLOOR_Y, render
from vans.data.toyworld.scene import boxed, object_sprite, path
from vans.data.video import write_mp4
from vans.io import write_json, write_text

TASK = "build a tower"
"""The COIN `class` of every toy long video."""
RECIPE_TYPE = "301"
"""Its YouCook2 `recipe_type`, named TASK by the written `label_foodtype.csv`."""
_HALF = 0.06  # a block's half-size (world units)


@dataclass(frozen=True)
class LongVideos:
    """What `write_long_videos` wrote."""

    videos: Path
    """The folder of the MP4s (`--videos`)."""
    annotations: Path
    """COIN-format JSON (`--annotations`, `--format coin`)."""
    youcook2: Path
    """The same steps in YouCook2's format (`annotations` of `sentence`s)."""
    task_names: Path
    """YouCook2's `label_foodtype.csv` for them (`--task-names`)."""
    activitynet: Path
    """The same steps as ActivityNet Captions (`timestamps`, `sentences`)."""
    truth: Path
    """Video id -> each step's caption (`--truth`)."""
    colours: dict[str, list[str]]
    """Video id -> the colour of each step's block, in order."""


def write_long_videos(
    out: str | Path,
    *,
    num_videos: int = 2,
    steps: int = 4,
    seed: int = 0,
    size: tuple[int, int] = (64, 96),
    fps: float = 8.0,
    step_seconds: float = 1.5,
    gap_seconds: float = 0.5,
) -> LongVideos:
    """Write `num_videos` tower-building videos and their annotations into `out`."""
    out = Path(out)
    aspect = size[1] / size[0]
    database, truth, colours = {}, {}, {}
    for v in range(num_videos):
        rng = np.random.default_rng([seed, v])
        vid = f"toytower{seed}-{v:03d}"
        picks = [list(COLORS)[i] for i in rng.permutation(len(COLORS))[:steps]]
        windows = [
            (
                gap_seconds + k * (step_seconds + gap_seconds),
                gap_seconds + k * (step_seconds + gap_seconds) + step_seconds,
            )
            for k in range(steps)
        ]
        total = round((windows[-1][1] + gap_seconds) * fps)
        times = np.arange(total) / fps
        sprites = []
        for k, (colour, (t0, t1)) in enumerate(zip(picks, windows, strict=True)):
            src = (aspect * (0.55 + 0.4 * k / max(steps - 1, 1)), FLOOR_Y - _HALF)
            dst = (0.2 * aspect, FLOOR_Y - _HALF - 2 * _HALF * k)
            lift = FLOOR_Y - 2 * _HALF * (steps + 1)
            d = t1 - t0
            keys = [
                (t0, *src),
                (t0 + 0.25 * d, src[0], lift),
                (t0 + 0.75 * d, dst[0], lift),
                (t1, *dst),
            ]
            sprites.append(object_sprite(colour, "square", boxed(path(times, keys), _HALF)))
        frames = render(sprites, range(total), size)
        write_mp4(out / "videos" / f"{vid}.mp4", torch.from_numpy(frames), fps)
        database[vid] = {
            "recipe_type": 0,
            "class": TASK,
            "subset": "training",
            "duration": total / fps,
            "annotation": [
                {
                    "id": str(k),
                    "segment": [round(t0, 3), round(t1, 3)],
                    "label": f"put {colour} square on tower",
                }
                for k, (colour, (t0, t1)) in enumerate(zip(picks, windows, strict=True))
            ],
        }
        truth[vid] = [f"The {c} square is placed on top of the tower." for c in picks]
        colours[vid] = picks
    youcook2 = {
        vid: {
            "recipe_type": RECIPE_TYPE,
            "subset": "training",
            "duration": e["duration"],
            "annotations": [
                {"id": int(a["id"]), "segment": a["segment"], "sentence": a["label"]}
                for a in e["annotation"]
            ],
        }
        for vid, e in database.items()
    }
    activitynet = {
        vid: {
            "duration": e["duration"],
            "timestamps": [a["segment"] for a in e["annotation"]],
            "sentences": [a["label"] for a in e["annotation"]],
        }
        for vid, e in database.items()
    }
    return LongVideos(
        out / "videos",
        write_json(out / "coin.json", {"database": database}),
        write_json(out / "youcook2.json", {"database": youcook2}),
        write_text(out / "label_foodtype.csv", f"{RECIPE_TYPE},{TASK}\n"),
        write_json(out / "activitynet.json", activitynet),
        write_json(out / "truth.json", truth),
        colours,
    )
