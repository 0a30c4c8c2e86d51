"""The toy-world generator: deterministic VNEP samples with known ground truth.

Scene i is drawn from its own random stream seeded by (seed, i), so a sample does not
depend on how many others are generated, and the same config always gives the same frames
and manifest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vans.data.manifest import write_manifest
from vans.data.schema import TaskType, VideoRef, VNEPSample
from vans.data.toyworld import predictive, procedural
from vans.data.toyworld.config import (
    PREDICTIVE_FAMILIES,
    PROCEDURAL_FAMILIES,
    ToyWorldConfig,
    ToyWorldError,
)
from vans.data.toyworld.perception import (
    describe,
    named_things,
    perception_mcqs,
    rule_sentence,
    window_facts,
    window_scenery,
)
from vans.data.toyworld.render import COLORS, Sprite, render
from vans.data.toyworld.scene import Clock, Future, ObjectPicker, Scene, Unsatisfiable
from vans.data.video import write_mp4

Family = Callable[[np.random.Generator, Clock, float, ObjectPicker], Scene]

FAMILIES: dict[str, Family] = {
    **{name: getattr(predictive, name) for name in PREDICTIVE_FAMILIES},
    **{name: getattr(procedural, name) for name in PROCEDURAL_FAMILIES},
}
"""Each event family's scene builder, by name (`FAMILY_NAMES`)."""
_MAX_ATTEMPTS = 50


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
