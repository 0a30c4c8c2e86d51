"""What a clip of the toy world shows, as facts and as language: the perception side.

A real VLM is pretrained to say what is in a video before anyone fine-tunes it to predict
what happens next; a real text-to-video model is pretrained on videos with descriptions.
This module gives the toy world both: per-window facts (each object's colour, shape, final
position, motion; the scenery; the visible rule), a deterministic description of a clip,
and perception questions with their answers (free-form and multiple choice). None of it
says what happens after the clip, so pretraining on it never teaches the next event.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vans.data.toyworld.render import COLORS, SHAPES, Sprite

MOTIONS = ("moves left", "moves right", "moves up", "moves down", "is still")
"""Every motion phrase of a fact, in the order multiple-choice options list them."""


def named_things(sprites: list[Sprite]) -> list[Sprite]:
    """Sprites language refers to as objects: shaped objects and liquid layers."""
    return [s for s in sprites if s.kind in SHAPES or s.name.endswith(" layer")]


def motion(delta: np.ndarray) -> str:
    """The motion phrase of a centre displacement (dx, dy) in world units."""
    dx, dy = delta
    if np.isnan(dx) or np.hypot(dx, dy) < 0.02:
        return "is still"
    if abs(dx) >= abs(dy):
        return "moves right" if dx > 0 else "moves left"
    return "moves down" if dy > 0 else "moves up"


def window_facts(sprites: list[Sprite], frames: range, aspect: float) -> list[dict[str, Any]]:
    """Each object visible at the window's last frame: name, colour, shape, its position
    there (x and y in [0, 1] of the canvas) and how it moved over the window."""
    facts = []
    first, last = frames[0], frames[-1]
    for s in named_things(sprites):
        x, y = s.track[last, :2]
        if np.isnan(x):
            continue
        start = s.track[first, :2]
        if np.isnan(start[0]):  # appeared during the window (a layer being poured)
            start = s.track[last, :2]
        color, noun = s.name.split(" ", 1)
        facts.append(
            {
                "name": s.name,
                "color": color,
                "shape": noun,
                "position": [round(float(x / aspect), 3), round(float(y), 3)],
                "motion": motion(s.track[last, :2] - start),
            }
        )
    return facts


def window_scenery(sprites: list[Sprite], frame: int) -> list[str]:
    """Names of the scenery visible at `frame` (wall, ledge, shelf, container, "red bin"),
    each once, in drawing order."""
    names = [
        s.name
        for s in sprites
        if s.kind == "rect" and s.name and not s.name.endswith((" layer", " stream"))
        if not np.isnan(s.track[frame, 0])
    ]
    return list(dict.fromkeys(names))


def place(position: list[float]) -> str:
    """Where a position is, in words: "at the bottom left", "in the middle", ..."""
    x, y = position
    row = "top" if y < 0.4 else "middle" if y < 0.7 else "bottom"
    column = "left" if x < 1 / 3 else "centre" if x < 2 / 3 else "right"
    if row == "middle" and column == "centre":
        return "in the middle"
    if row == "middle":
        return f"at the {column}"
    return f"at the {row} {column}" if column != "centre" else f"at the {row}"


def _listing(words: list[str]) -> str:
    if len(words) <= 2:
        return " and ".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def rule_sentence(family: str, facts: dict[str, Any]) -> str | None:
    """The visible rule of a procedural scene, or None for predictive scenes."""
    if family == "stack":
        return f"The tower repeats the colours {', '.join(facts['pattern'])} from the bottom."
    if family == "fill":
        return f"The layers repeat the colours {', '.join(facts['pattern'])} from the bottom."
    if family == "sort":
        return "Objects are sorted from left to right into the bin of their colour."
    return None


def describe(objects: list[dict[str, Any]], scenery: list[str], rule: str | None = None) -> str:
    """A description of a clip from its facts: the scenery, then each object (left to right)
    with where it ends and how it moves, then the rule if there is one."""
    sentences = []
    bins = [s for s in scenery if s.endswith(" bin")]
    others = [s for s in scenery if not s.endswith(" bin")]
    for thing in others:
        sentences.append(f"There is a {thing}.")
    if bins:
        listed = _listing([f"{_article(b)} {b}" for b in bins])
        sentences.append(f"There {'are' if len(bins) > 1 else 'is'} {listed}.")
    layers = sorted((o for o in objects if o["shape"] == "layer"), key=lambda o: -o["position"][1])
    if layers:
        colours = [o["color"] for o in layers]
        sentences.append(f"The layers are {', '.join(colours)} from the bottom.")
    for o in sorted((o for o in objects if o["shape"] != "layer"), key=lambda o: o["position"]):
        sentences.append(f"The {o['name']} {o['motion']} and ends {place(o['position'])}.")
    if rule:
        sentences.append(rule)
    return " ".join(sentences)


def _mcq(
    rng: np.random.Generator, question: str, correct: str, wrong: list[str], kind: str
) -> dict[str, Any]:
    wrong = list(dict.fromkeys(w for w in wrong if w != correct))
    picks = [wrong[i] for i in rng.permutation(len(wrong))[:3]]
    options = [correct, *picks]
    options = [options[i] for i in rng.permutation(len(options))]
    return {
        "kind": kind,
        "question": question,
        "options": options,
        "answer": options.index(correct),
    }


def perception_mcqs(rng: np.random.Generator, objects: list[dict[str, Any]]) -> list[dict]:
    """Multiple-choice questions about a clip: which object of a shape appears, which
    object moves (when one does), how a drawn object moves, and which shape an object of a
    colour has."""
    things = list(objects)
    if not things:
        return []
    out = []
    target = things[int(rng.integers(len(things)))]
    noun = target["shape"]
    present = {o["name"] for o in things}
    absent = [f"{c} {noun}" for c in COLORS if f"{c} {noun}" not in present]
    out.append(
        _mcq(rng, f"Which {noun} appears in the video?", target["name"], absent, "appearance")
    )
    # Only objects whose name is unique in the clip can be asked about (a tower has
    # several "red square"s).
    counts: dict[str, int] = {}
    for o in things:
        counts[o["name"]] = counts.get(o["name"], 0) + 1
    things = [o for o in things if counts[o["name"]] == 1]
    movers = [o for o in things if o["motion"] != "is still" and o["shape"] != "layer"]
    if movers:
        mover = movers[int(rng.integers(len(movers)))]
        still = [o["name"] for o in things if o["motion"] == "is still" and o["shape"] != "layer"]
        absent = [f"{c} {s}" for c in COLORS for s in SHAPES if f"{c} {s}" not in present]
        wrong = still + [absent[i] for i in rng.permutation(len(absent))[:3]]
        out.append(_mcq(rng, "Which object moves in the video?", mover["name"], wrong, "mover"))
    solid = [o for o in things if o["shape"] != "layer"]
    if solid:
        o = solid[int(rng.integers(len(solid)))]
        out.append(
            _mcq(rng, f"How does the {o['name']} move?", o["motion"], list(MOTIONS), "motion")
        )
    # Shape given colour: the other questions can be answered from colour alone ("which
    # circle" names the shape, a mover's distractors differ in colour), and a reasoner that
    # only sees colour captions "the orange square" for an orange circle. Drawn last, so the
    # questions above are the same as before it existed.
    colours = [o["color"] for o in solid]
    lone = [o for o in solid if colours.count(o["color"]) == 1]
    if lone:
        o = lone[int(rng.integers(len(lone)))]
        wrong = [f"{o['color']} {s}" for s in SHAPES]
        out.append(
            _mcq(rng, f"Which {o['color']} object appears in the video?", o["name"], wrong, "shape")
        )
    return out


def option_sentence(mcq: dict[str, Any], index: int) -> str:
    """Option `index` of a perception question as the sentence that answers it ("The red
    circle.", "It moves left."). A perceiving model is taught the right one; multiple choice
    is scored by which option sentence it finds most likely (`mcq_scores`), so what is
    measured is what it sees, not whether it can copy an option's letter."""
    option = mcq["options"][index]
    return f"It {option}." if mcq["kind"] == "motion" else f"The {option}."


def perception_questions(rng: np.random.Generator, extra: dict[str, Any]) -> list[tuple[str, str]]:
    """Free-form perception questions about a sample's input clip with their answers, from
    its `extra` (the toy world's ground truth); multiple-choice ones come from `extra`'s
    "perception_mcq"."""
    objects = extra["objects"]
    out = [("Describe the video.", extra["description"])]
    if objects:
        # Colour alone, without binding it to a shape: what a tower trained from scratch
        # learns first (it memorises 24 clips' colours this way, not through "which circle").
        colours = sorted({o["color"] for o in objects})
        out.append(("Which colours are in the video?", f"{', '.join(colours)}.".capitalize()))
        shapes = [o["shape"] for o in objects]
        unique = [o for o in objects if shapes.count(o["shape"]) == 1]
        if unique:
            o = unique[int(rng.integers(len(unique)))]
            out.append((f"What colour is the {o['shape']}?", f"{o['color']}.".capitalize()))
        names = [o["name"] for o in sorted(objects, key=lambda o: o["position"])]
        out.append(
            (
                "Which objects are in the video?",
                f"{_listing([f'the {n}' for n in names])}.".capitalize(),
            )
        )
        moving = [o["name"] for o in objects if o["motion"] != "is still" and o["shape"] != "layer"]
        out.append(
            (
                "Which objects move?",
                f"{_listing([f'the {n}' for n in moving])}.".capitalize()
                if moving
                else "Nothing moves.",
            )
        )
        o = objects[int(rng.integers(len(objects)))]
        out.append(
            (f"Where is the {o['name']} at the end?", f"{place(o['position'])}.".capitalize())
        )
    rule = rule_sentence(extra["family"], extra["facts"])
    if rule:
        out.append(("What rule does the scene follow?", rule))
    return out
