"""A toy video-QA benchmark from the toy world, so that VideoP2R runs offline
(docs/videop2r.md#the-toy-benchmark).

Every question is about a toy sample's input clip, with an answer the generator knows:

- next event, multiple choice: the sample's question and its four next-event options;
- next event, free-form: the sample's question, answered by its caption;
- appearance / mover / motion, multiple choice: the toy world's perception questions;
- objects, numerical: "How many objects are in the video?";
- movers, numerical: "How many objects move in the video?".

(The perception and count questions are asked once per scene, not per future.) Rows are in
Video-R1's format with VideoP2R's trace, written by the **toy teacher** from the ground
truth: the observation is the input clip's description (every object, how it moves, where
it ends, the scenery and the rule), the process is the sample's reasoning (or the fact the
question needs) ending in the answer. Each row also carries `needs`: the facts an
observation must state for the answer to follow, each a list of phrases that must appear
together in one sentence.

`ToyJudge` is the offline perception judge built on those facts: it answers a row's
question with the true answer when the observation states everything the row needs, and
"not enough" otherwise.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vans.data.manifest import load_manifest
from vans.data.schema import VNEPSample
from vans.data.toyworld.config import HELD_OUT, ToyWorldConfig
from vans.data.toyworld.perception import rule_sentence
from vans.io import write_text
from vans.videoqa.judge import JudgeRequest
from vans.videoqa.prompting import format_trace

ROWS_FILE = "rows.json"


def toy_qa_splits(train_num: int, test_num: int, seed: int = 0) -> dict[str, ToyWorldConfig]:
    """The benchmark's toy sets: "train"; "test", new scenes of the train split's
    compositions; "test_heldout", scenes that each show a held-out colour-shape pair. Seeds
    20+ keep every scene apart from the toy bases' and the VANS recipe's."""
    base = 20 + 3 * seed
    return {
        "train": ToyWorldConfig(num=train_num, seed=base, held_out=HELD_OUT),
        "test": ToyWorldConfig(num=test_num, seed=base + 1, held_out=HELD_OUT),
        "test_heldout": ToyWorldConfig(
            num=test_num, seed=base + 2, held_out=HELD_OUT, held_out_mode="only"
        ),
    }


def toy_qa_rows(samples: Sequence[VNEPSample], root: Path) -> list[dict[str, Any]]:
    """The benchmark's rows about `samples` (toy-world samples with their facts in
    `extra`), paths relative to `root`, in Video-R1's format with VideoP2R's trace."""
    rows: list[dict[str, Any]] = []
    asked: set[Path] = set()
    for sample in samples:
        questions = _event_questions(sample)
        if sample.input.path not in asked:  # once per clip, not once per future
            asked.add(sample.input.path)
            questions += _perception_questions(sample)
        for kind, problem_type, problem, answer, reasoning, needs, options in questions:
            observation = sample.extra["description"]
            rows.append(
                {
                    "problem_id": f"{sample.id}-{kind}",
                    "problem": problem,
                    "data_type": "video",
                    "problem_type": problem_type,
                    "options": list(options),
                    "solution": f"<answer>{answer}</answer>",
                    "path": str(sample.input.path.relative_to(root)),
                    "data_source": f"toyworld/{kind}",
                    "observation": observation,
                    "process": reasoning,
                    "output": format_trace(observation, reasoning, answer),
                    "needs": needs,
                    "family": sample.extra["family"],
                    # What the toy teacher writes in `vans qa cot` (videoqa.cot.ToyTeacher).
                    "teacher": {"observation": observation, "process": reasoning},
                }
            )
    return rows


Question = tuple[str, str, str, str, str, list[list[str]], Sequence[str]]
"""kind, problem type, problem, answer, reasoning, needs, options."""


def _objects(sample: VNEPSample) -> list[dict[str, Any]]:
    return [o for o in sample.extra["objects"] if o["shape"] != "layer"]


def _event_questions(sample: VNEPSample) -> list[Question]:
    """The next event, as multiple choice and as free text: it needs every object with how
    it moves (a still object is what a mover hits), the scenery and the scene's rule."""
    extra = sample.extra
    needs = [[o["name"], o["motion"]] for o in _objects(sample)]
    needs += [[thing] for thing in extra["scenery"]]
    rule = rule_sentence(extra["family"], extra.get("facts", {}))
    if rule:
        needs.append([rule])
    out: list[Question] = []
    for mcq in extra["mcq"]:
        if mcq["kind"] == "next_event":
            letter = string.ascii_uppercase[mcq["answer"]]
            why = f"{sample.reasoning} So the answer is {letter}."
            options = _lettered(mcq["options"])
            out.append(
                ("next_event", "multiple choice", sample.question, letter, why, needs, options)
            )
    out.append(
        (
            "next_event_text",
            "free-form",
            sample.question,
            sample.answer,
            sample.reasoning or "",
            needs,
            (),
        )
    )
    return out


def _perception_questions(sample: VNEPSample) -> list[Question]:
    """What is in the clip and how it moves (multiple choice), and two counts."""
    objects = _objects(sample)
    out: list[Question] = []
    for mcq in sample.extra["perception_mcq"]:
        letter = string.ascii_uppercase[mcq["answer"]]
        named = mcq["options"][mcq["answer"]]
        thing = next((o for o in objects if o["name"] == named), None)
        if mcq["kind"] == "motion":
            subject = next(o for o in objects if o["name"] in mcq["question"])
            needs, fact = [[subject["name"], named]], f"The {subject['name']} {named}."
        elif mcq["kind"] == "mover" and thing is not None:
            needs, fact = [[named, thing["motion"]]], f"The {named} {thing['motion']}."
        elif named.endswith(" layer"):  # layers are described together, by colour
            colour = named.removesuffix(" layer")
            needs, fact = [["layers", colour]], f"One of the layers is {colour}."
        else:
            needs, fact = [[named]], f"There is a {named}."
        why = f"{fact} So the answer is {letter}."
        options = _lettered(mcq["options"])
        out.append((mcq["kind"], "multiple choice", mcq["question"], letter, why, needs, options))
    if not objects:  # a fill scene holds only layers: nothing to count
        return out
    movers = [o for o in objects if o["motion"] != "is still"]
    n, m = len(objects), len(movers)
    everything = [[o["name"], o["motion"]] for o in objects]
    out.append(
        (
            "objects",
            "numerical",
            "How many objects are in the video?",
            str(n),
            f"The objects: {_listed(objects)}. So there are {n}.",
            [[o["name"]] for o in objects],
            (),
        )
    )
    out.append(
        (
            "movers",
            "numerical",
            "How many objects move in the video?",
            str(m),
            f"The objects that move: {_listed(movers)}. So {m} move.",
            everything,
            (),
        )
    )
    return out


def write_toy_benchmark(
    out: Path,
    splits: dict[str, ToyWorldConfig],
    on_split: Callable[[str, ToyWorldConfig], Callable[[Any], None] | None] | None = None,
) -> dict[str, Path]:
    """Each split's toy clips and rows into `out/<split>/`; returns the rows files.
    `on_split(name, config)` may return a per-sample callback (a progress bar's)."""
    from vans.data.toyworld import write_toyworld  # torch and PyAV: only when generating

    files = {}
    for name, config in splits.items():
        on_sample = on_split(name, config) if on_split else None
        files[name] = write_toy_qa(write_toyworld(config, out / name, on_sample=on_sample))
    return files


def write_toy_qa(manifest: str | Path) -> Path:
    """Write the benchmark's rows about a toy-world manifest's samples next to it
    (`rows.json`, paths relative to its folder); returns the rows file."""
    manifest = Path(manifest)
    root = manifest.absolute().parent
    rows = toy_qa_rows(load_manifest(manifest), root)
    return write_text(root / ROWS_FILE, json.dumps(rows, indent=1, ensure_ascii=False) + "\n")


def needs_met(observation: str, needs: Sequence[Sequence[str]]) -> bool:
    """Whether every need (phrases that must appear together) is stated in one sentence of
    the observation; words compared case-insensitively, whole words only."""
    sentences = [_words(s) for s in re.split(r"(?<=[.!?])\s+", observation)]
    for phrases in needs:
        wanted = [_words(p) for p in phrases]
        if not any(all(_contains(s, w) for w in wanted) for s in sentences):
            return False
    return True


class ToyJudge:
    """The toy world's perception judge: the true answer when the observation states all
    of a row's `needs` (the ground truth's facts), else "not enough" (`JudgeBackend`)."""

    name = "toy-judge-v1"

    def complete(self, requests: Sequence[JudgeRequest]) -> list[str | None]:
        out: list[str | None] = []
        for request in requests:
            needs = request.row.extra.get("needs")
            if needs is None:
                raise ValueError(f"row {request.row.id}: the toy judge needs the row's 'needs'")
            enough = needs_met(request.observation, needs)
            out.append(f"<answer>{request.row.answer if enough else 'not enough'}</answer>")
        return out


def _lettered(options: Sequence[str]) -> list[str]:
    return [f"{string.ascii_uppercase[i]}. {o}" for i, o in enumerate(options)]


def _listed(objects: Sequence[dict[str, Any]]) -> str:
    return ", ".join(f"the {o['name']}" for o in objects) or "none"


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _contains(sentence: list[str], phrase: list[str]) -> bool:
    n = len(phrase)
    return any(sentence[i : i + n] == phrase for i in range(len(sentence) - n + 1))
