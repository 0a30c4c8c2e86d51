"""The toy-world generator: deterministic VNEP samples with known ground truth.

Scene i is drawn from its own random stream seeded by (seed, i), so a sample does not
depend on how many others are generated, and the same config always gives the same frames
and manifest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vans.data.manifest import write_manifest
from vans.data.schema import TaskType, VideoRef, VNEPSample
from vans.data.toyworld import predictive, procedural
from vans.data.toyworld.perception import (
    describe,
    named_things,
    perception_mcqs,
    rule_sentence,
    window_facts,
    window_scenery,
)
from vans.data.toyworld.render import COLORS, SHAPES, Sprite, render
from vans.data.toyworld.scene import Clock, Future, ObjectPicker, Scene, Unsatisfiable
from vans.data.video import write_mp4
from vans.errors import VansError

Family = Callable[[np.random.Generator, Clock, float, ObjectPicker], Scene]

FAMILIES: dict[str, Family] = {
    "collision": predictive.collision,
    "bounce": predictive.bounce,
    "fall": predictive.fall,
    "push": predictive.push,
    "stack": procedural.stack,
    "sort": procedural.sort,
    "fill": procedural.fill,
}
ANSWER_SHAPES: dict[str, tuple[str, ...]] = {"stack": ("square",), "fill": ()}
"""Shapes a family's answer object can have, where not all of them (fill names layers)."""

MAX_SIZE = (352, 640)
_MAX_ATTEMPTS = 50


class ToyWorldError(VansError):
    """An invalid toy-world configuration; names the field."""


@dataclass(frozen=True)
class ToyWorldConfig:
    """What to generate. Every field is a CLI option of `vans data toyworld`."""

    num: int = 100
    """Number of samples (manifest rows). A multi-future scene adds one row per future."""
    seed: int = 0
    """Random seed; the same config gives identical frames and manifests."""
    size: tuple[int, int] = (64, 64)
    """Canvas (height, width): square or landscape, from 32x32 up to 352x640."""
    fps: float = 8.0
    """Frame rate of both clips."""
    input_frames: int = 33
    """Frames in the input clip (at least 2 s of video; 4k+1 suits the Wan VAE)."""
    target_frames: int = 17
    """Frames in the target clip (at least 1 s; 4k+1 suits the Wan VAE)."""
    families: tuple[str, ...] = tuple(FAMILIES)
    """Event families to draw from, in rotation (see `FAMILIES`)."""
    multi_future: float = 0.3
    """Probability that a scene with a hypothetical variant also emits it (same input video)."""
    held_out: tuple[str, ...] = ()
    """Colour-shape pairs such as "red circle", for splits of unseen compositions."""
    held_out_mode: str = "exclude"
    """"exclude": no object uses a held-out pair. "only": the answer's object always does."""

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ToyWorldError("invalid toy-world config: " + "; ".join(problems))

    def _problems(self) -> Iterator[str]:
        if self.num < 1:
            yield f"num must be >= 1, got {self.num}"
        h, w = self.size
        if not (32 <= h <= MAX_SIZE[0] and 32 <= w <= MAX_SIZE[1] and w >= h):
            yield (
                f"size must be HxW with 32 <= H <= W, H <= {MAX_SIZE[0]}, W <= {MAX_SIZE[1]}; "
                f"got {h}x{w}"
            )
        if self.fps <= 0:
            yield f"fps must be positive, got {self.fps}"
        elif self.input_frames / self.fps < 2.0:
            yield f"input_frames must cover at least 2 s at {self.fps} fps, got {self.input_frames}"
        elif self.target_frames / self.fps < 1.0:
            yield (
                f"target_frames must cover at least 1 s at {self.fps} fps, got {self.target_frames}"
            )
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown or not self.families:
            yield (
                f"families must be a non-empty subset of {sorted(FAMILIES)}, "
                f"got {list(self.families)}"
            )
        for pair in self.held_out:
            parts = pair.split()
            if len(parts) != 2 or parts[0] not in COLORS or parts[1] not in SHAPES:
                yield (
                    f"held_out entries must be '<colour> <shape>' with colour in {sorted(COLORS)} "
                    f"and shape in {list(SHAPES)}, got {pair!r}"
                )
        if self.held_out_mode not in ("exclude", "only"):
            yield f"held_out_mode must be 'exclude' or 'only', got {self.held_out_mode!r}"
        elif self.held_out_mode == "only":
            if not self.held_out:
                yield "held_out_mode 'only' needs at least one held_out pair"
            elif not self.active_families:
                yield (
                    f"held_out_mode 'only': no family in {list(self.families)} can show "
                    f"any of {list(self.held_out)}"
                )

    @property
    def clock(self) -> Clock:
        return Clock(self.fps, self.input_frames, self.target_frames)

    @property
    def active_families(self) -> tuple[str, ...]:
        """Families to rotate through: under "only", those that can show a held-out pair."""
        if self.held_out_mode != "only":
            return self.families
        shapes = {pair.split()[-1] for pair in self.held_out}
        return tuple(f for f in self.families if shapes & set(ANSWER_SHAPES.get(f, SHAPES)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"], d["families"], d["held_out"] = (
            list(self.size),
            list(self.families),
            list(self.held_out),
        )
        return d


@dataclass
class ToySample:
    """One generated sample before it is written: text, frames and ground-truth facts."""

    id: str
    scene_id: str
    task: str
    question: str
    answer: str
    reasoning: str
    input_frames: np.ndarray
    """uint8 (T, H, W, 3), shared by every future of a scene."""
    target_frames: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


def draw_scene(config: ToyWorldConfig, index: int) -> Scene:
    """Scene `index` of the data set: the family rotates, the draw is seeded by (seed, index)."""
    families = config.active_families
    family = FAMILIES[families[index % len(families)]]
    picker = ObjectPicker(
        frozenset(tuple(p.split()) for p in config.held_out), config.held_out_mode
    )
    aspect = config.size[1] / config.size[0]
    for attempt in range(_MAX_ATTEMPTS):
        rng = np.random.default_rng([config.seed, index, attempt])
        try:
            return family(rng, config.clock, aspect, picker)
        except Unsatisfiable:
            continue
    raise ToyWorldError(
        f"held_out {list(config.held_out)} leaves no valid scene for family "
        f"{families[index % len(families)]!r}"
    )


def scene_samples(config: ToyWorldConfig, index: int) -> list[ToySample]:
    """Render scene `index` and return its samples (one per emitted future)."""
    scene = draw_scene(config, index)
    clock = config.clock
    rng = np.random.default_rng([config.seed, index, _MAX_ATTEMPTS])  # decisions after the draw
    futures = scene.futures
    if len(futures) > 1 and rng.random() >= config.multi_future:
        futures = futures[:1]
    scene_id = f"toy{config.seed}-{index:06d}"
    input_frames = render(scene.futures[0].sprites, range(clock.input_frames), config.size)
    aspect = config.size[1] / config.size[0]
    # The input clip is the same for every future: its facts, description and perception
    # questions are drawn once per scene.
    sprites = scene.futures[0].sprites
    objects = window_facts(sprites, range(clock.input_frames), aspect)
    scenery = window_scenery(sprites, clock.input_frames - 1)
    description = describe(objects, scenery, rule_sentence(scene.family, scene.facts))
    perception_mcq = perception_mcqs(
        np.random.default_rng([config.seed, index, _MAX_ATTEMPTS + 1]), objects
    )
    samples = []
    for k, future in enumerate(futures):
        target_window = range(clock.input_frames, clock.total)
        target = render(future.sprites, target_window, config.size)
        target_objects = window_facts(future.sprites, target_window, aspect)
        extra = {
            "family": scene.family,
            "scene": scene_id,
            "future": k,
            "hypothesis": future.hypothesis,
            "movers": future.movers,
            "objects": objects,
            "scenery": scenery,
            "description": description,
            "target_objects": target_objects,
            "target_description": describe(
                target_objects, window_scenery(future.sprites, clock.total - 1)
            ),
            "mcq": [_next_event_mcq(rng, future), _appearance_mcq(rng, future.sprites)],
            "perception_mcq": perception_mcq,
            "facts": scene.facts,
            "fps": config.fps,
            "size": list(config.size),
        }
        samples.append(
            ToySample(
                f"{scene_id}-f{k}",
                scene_id,
                scene.task,
                future.question,
                future.answer,
                future.reasoning,
                input_frames,
                target,
                extra,
            )
        )
    return samples


def iter_samples(config: ToyWorldConfig) -> Iterator[ToySample]:
    """Yield exactly `config.num` samples, scene after scene."""
    emitted, index = 0, 0
    while emitted < config.num:
        for sample in scene_samples(config, index)[: config.num - emitted]:
            emitted += 1
            yield sample
        index += 1


def _mcq(
    rng: np.random.Generator, question: str, correct: str, wrong: list[str], kind: str
) -> dict:
    wrong = list(dict.fromkeys(w for w in wrong if w != correct))
    picks = [wrong[i] for i in rng.permutation(len(wrong))[:3]]
    options = [correct, *picks]
    order = rng.permutation(len(options))
    options = [options[i] for i in order]
    return {
        "kind": kind,
        "question": question,
        "options": options,
        "answer": options.index(correct),
    }


def _next_event_mcq(rng: np.random.Generator, future: Future) -> dict:
    return _mcq(rng, future.question, future.answer, future.distractors, "next_event")


def _appearance_mcq(rng: np.random.Generator, sprites: list[Sprite]) -> dict:
    things = named_things(sprites)
    target = things[int(rng.integers(len(things)))]
    noun = target.name.split(" ", 1)[1]
    present = {s.name for s in things}
    absent = [f"{c} {noun}" for c in COLORS if f"{c} {noun}" not in present]
    return _mcq(
        rng, f"Which {noun.split()[-1]} appears in the video?", target.name, absent, "perception"
    )


def write_toyworld(
    config: ToyWorldConfig,
    out_dir: str | Path,
    on_sample: Callable[[ToySample], None] | None = None,
) -> Path:
    """Generate the data set into `out_dir` and return its manifest path.

    Layout: `manifest.jsonl`, `toyworld.json` (the config, to regenerate it) and
    `videos/<scene>_input.mp4` (one per scene, shared by its futures) plus
    `videos/<sample>_target.mp4`. The manifest is written last and atomically, so a
    directory with a manifest is always complete.
    """
    out = Path(out_dir)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    rows: list[VNEPSample] = []
    written_inputs: set[str] = set()
    for s in iter_samples(config):
        input_path = videos / f"{s.scene_id}_input.mp4"
        if s.scene_id not in written_inputs:
            write_mp4(input_path, torch.from_numpy(s.input_frames), config.fps)
            written_inputs.add(s.scene_id)
        target_path = write_mp4(
            videos / f"{s.id}_target.mp4", torch.from_numpy(s.target_frames), config.fps
        )
        rows.append(
            VNEPSample(
                id=s.id,
                input=VideoRef(input_path),
                question=s.question,
                answer=s.answer,
                target=VideoRef(target_path),
                reasoning=s.reasoning,
                task=TaskType(s.task),
                source="toyworld",
                extra=s.extra,
            )
        )
        if on_sample is not None:
            on_sample(s)
    (out / "toyworld.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return write_manifest(out / "manifest.jsonl", rows)
