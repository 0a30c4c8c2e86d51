"""Predictive families: motion and physics events (collisions, bounces, falls, pushes).

Each event is laid out left-to-right and then mirrored at random, so every event also
happens right-to-left. Timings are drawn so that the decisive moment (contact, reaching the
edge) falls early in the target clip: the input shows the approach, the target the outcome.
"""

from __future__ import annotations

import numpy as np

from vans.data.toyworld.render import FLOOR_Y, SCENERY, Sprite
from vans.data.toyworld.scene import (
    Clock,
    Future,
    ObjectPicker,
    Scene,
    boxed,
    choose,
    mirror,
    name_of,
    object_sprite,
    path,
)

R = 0.085
"""Half-size of a moving object, in world units."""
GRAVITY = 3.0
WHAT_NEXT = (
    "What happens next?",
    "What will happen next?",
    "What is going to happen next?",
    "Predict the next event.",
    "What happens after this?",
)


def _direction_words(leftward: bool) -> tuple[str, str]:
    """(direction of travel, opposite), after mirroring."""
    return ("left", "right") if leftward else ("right", "left")


def _decisive_time(
    rng: np.random.Generator, clock: Clock, lo: float = 0.12, hi: float = 0.45
) -> float:
    return clock.input_duration + rng.uniform(lo, hi) * clock.target_duration


def _fall(
    times: np.ndarray, t0: float, x0: float, vx: float, y0: float, y_land: float
) -> np.ndarray:
    """Ballistic (x, y) after leaving an edge at t0; stops where it lands."""
    dt = np.clip(times - t0, 0.0, None)
    t_land = np.sqrt(2 * (y_land - y0) / GRAVITY)
    dt = np.minimum(dt, t_land)
    return np.stack([x0 + vx * dt, y0 + 0.5 * GRAVITY * dt**2], axis=1)


def _finish(aspect: float, family: str, futures: list[Future], facts: dict) -> Scene:
    if facts.get("leftward"):
        for f in futures:
            f.sprites = mirror(f.sprites, aspect)
    return Scene(family, "predictive", futures, facts)


def collision(rng: np.random.Generator, clock: Clock, aspect: float, picker: ObjectPicker) -> Scene:
    """A moving object hits a resting one and hands over its motion (equal masses)."""
    (ca, sa), (cb, sb) = picker.pick(rng, 2)
    a, b = name_of(ca, sa), name_of(cb, sb)
    leftward = bool(rng.random() < 0.5)
    way, back = _direction_words(leftward)
    t = clock.times
    y = FLOOR_Y - R
    tc = _decisive_time(rng, clock)
    xa0 = R + rng.uniform(0.02, 0.1) * aspect
    xb = rng.uniform(0.62, 0.74) * aspect
    v = (xb - xa0 - 2 * R) / tc
    xc = xa0 + v * tc
    approach = path(t, [(0, xa0, y), (tc, xc, y)])
    b_slides = path(t, [(0, xb, y), (tc, xb, y), (tc + 10, xb + 10 * v, y)])
    a_back = path(t, [(0, xa0, y), (tc, xc, y), (tc + 10, xc - 10 * v, y)])
    b_still = path(t, [(0, xb, y)])

    def sprites(a_xy: np.ndarray, b_xy: np.ndarray) -> list[Sprite]:
        return [object_sprite(ca, sa, boxed(a_xy, R)), object_sprite(cb, sb, boxed(b_xy, R))]

    factual_answers = [
        f"The {a} hits the {b}, and the {b} slides to the {way}.",
        f"The {a} collides with the {b}, pushing it to the {way}.",
        f"The {a} strikes the {b}; the {a} stops and the {b} moves {way}.",
    ]
    fixed_answers = [
        f"The {a} bounces off the {b} and moves back to the {back}.",
        f"The {a} hits the {b} and rebounds to the {back}.",
    ]
    factual = Future(
        question=choose(rng, [*WHAT_NEXT, f"What happens when the {a} reaches the {b}?"]),
        answer=choose(rng, factual_answers),
        reasoning=(
            f"The {a} is moving {way} toward the {b}, which is at rest. When they meet, "
            f"the {a} will pass its motion to the {b}."
        ),
        sprites=sprites(approach, b_slides),
        movers=[a, b],
        distractors=[
            choose(rng, fixed_answers),
            f"The {a} stops before it reaches the {b}.",
            f"The {b} moves {back} toward the {a}.",
        ],
    )
    fixed = Future(
        question=choose(
            rng,
            [
                f"What if the {b} were fixed in place?",
                f"Suppose the {b} cannot move. What happens next?",
            ],
        ),
        answer=choose(rng, fixed_answers),
        reasoning=(
            f"The {a} is moving {way} toward the {b}. If the {b} cannot move, the {a} "
            f"will bounce back off it."
        ),
        sprites=sprites(a_back, b_still),
        movers=[a],
        hypothesis=f"the {b} is fixed in place",
        distractors=[
            factual.answer,
            f"The {a} stops before it reaches the {b}.",
            f"The {b} moves {back} toward the {a}.",
        ],
    )
    return _finish(aspect, "collision", [factual, fixed], {"leftward": leftward})


def bounce(rng: np.random.Generator, clock: Clock, aspect: float, picker: ObjectPicker) -> Scene:
    """An object rolls into a wall and rebounds; without the wall it rolls on."""
    ((ca, sa),) = picker.pick(rng, 1)
    a = name_of(ca, sa)
    leftward = bool(rng.random() < 0.5)
    way, back = _direction_words(leftward)
    t = clock.times
    y = FLOOR_Y - R
    wall_hw, wall_top = 0.03, rng.uniform(0.3, 0.55)
    xw = aspect - wall_hw - 0.02 * aspect
    wall_box = (xw, (wall_top + FLOOR_Y) / 2, wall_hw, (FLOOR_Y - wall_top) / 2)
    tc = _decisive_time(rng, clock)
    xa0 = R + rng.uniform(0.02, 0.25) * aspect
    xc = xw - wall_hw - R
    v = (xc - xa0) / tc
    rebound = path(t, [(0, xa0, y), (tc, xc, y), (tc + 10, xc - 10 * v, y)])
    straight = path(t, [(0, xa0, y), (10, xa0 + 10 * v, y)])
    wall = Sprite.still("rect", SCENERY, wall_box, clock.total, "wall")
    no_wall = Sprite("rect", SCENERY, wall.track.copy(), "wall")
    no_wall.track[clock.input_frames :] = np.nan

    bounce_answers = [
        f"The {a} bounces off the wall and moves back to the {back}.",
        f"The {a} hits the wall and rebounds to the {back}.",
        f"After hitting the wall, the {a} rolls back to the {back}.",
    ]
    through_answers = [
        f"The {a} keeps moving to the {way} past where the wall was.",
        f"Without the wall, the {a} continues to the {way}.",
    ]
    factual = Future(
        question=choose(rng, [*WHAT_NEXT, f"What happens when the {a} reaches the wall?"]),
        answer=choose(rng, bounce_answers),
        reasoning=(
            f"The {a} is moving {way} toward a wall. It cannot pass through the wall, "
            f"so it will bounce back."
        ),
        sprites=[wall, object_sprite(ca, sa, boxed(rebound, R))],
        movers=[a],
        distractors=[
            choose(rng, through_answers),
            f"The {a} stops in front of the wall.",
            f"The wall falls over onto the {a}.",
        ],
    )
    open_way = Future(
        question=choose(
            rng,
            [
                "What if the wall were not there?",
                "Suppose the wall disappeared. What happens next?",
            ],
        ),
        answer=choose(rng, through_answers),
        reasoning=f"The {a} is moving {way}. With no wall in its way, nothing stops it.",
        sprites=[no_wall, object_sprite(ca, sa, boxed(straight, R))],
        movers=[a],
        hypothesis="the wall is not there",
        distractors=[
            factual.answer,
            f"The {a} stops in front of the wall.",
            f"The {a} turns around before reaching the wall.",
        ],
    )
    return _finish(aspect, "bounce", [factual, open_way], {"leftward": leftward})


def _ledge(x_edge: float, top: float, frames: int) -> Sprite:
    return Sprite.still(
        "rect", SCENERY, (x_edge / 2, top + 0.02, x_edge / 2, 0.02), frames, "ledge"
    )


def fall(rng: np.random.Generator, clock: Clock, aspect: float, picker: ObjectPicker) -> Scene:
    """An object slides off the end of a ledge and drops to the floor."""
    ((ca, sa),) = picker.pick(rng, 1)
    a = name_of(ca, sa)
    leftward = bool(rng.random() < 0.5)
    way, _ = _direction_words(leftward)
    t = clock.times
    top = rng.uniform(0.42, 0.58)
    x_edge = rng.uniform(0.45, 0.6) * aspect
    y = top - R
    te = _decisive_time(rng, clock, 0.05, 0.35)
    xa0 = R + rng.uniform(0.0, 0.08) * aspect
    v = (x_edge - xa0) / te
    slide = path(t, [(0, xa0, y), (te, x_edge, y)])
    falling = _fall(t, te, x_edge, v, y, FLOOR_Y - R)
    dropped = np.where((t <= te)[:, None], slide, falling)
    along = path(t, [(0, xa0, y), (10, xa0 + 10 * v, y)])
    longer = Sprite("rect", SCENERY, _ledge(x_edge, top, clock.total).track.copy(), "ledge")
    longer.track[clock.input_frames :] = (aspect / 2, top + 0.02, aspect / 2, 0.02)

    fall_answers = [
        f"The {a} slides off the edge of the ledge and falls to the floor.",
        f"The {a} drops off the ledge onto the floor.",
        f"The {a} reaches the end of the ledge and falls down.",
    ]
    stay_answers = [
        f"The {a} keeps sliding to the {way} along the ledge.",
        f"With a longer ledge, the {a} slides on without falling.",
    ]
    factual = Future(
        question=choose(rng, [*WHAT_NEXT, f"What happens when the {a} reaches the edge?"]),
        answer=choose(rng, fall_answers),
        reasoning=(
            f"The {a} is sliding {way} along a ledge and is close to its end. "
            f"Past the edge there is nothing to hold it, so it will fall."
        ),
        sprites=[_ledge(x_edge, top, clock.total), object_sprite(ca, sa, boxed(dropped, R))],
        movers=[a],
        distractors=[
            choose(rng, stay_answers),
            f"The {a} stops at the edge of the ledge.",
            f"The {a} bounces back from the edge.",
        ],
    )
    extended = Future(
        question=choose(
            rng,
            [
                "What if the ledge were longer?",
                "Suppose the ledge reached across the scene. What happens next?",
            ],
        ),
        answer=choose(rng, stay_answers),
        reasoning=(
            f"The {a} is sliding {way}. If the ledge goes on, it has support and keeps sliding."
        ),
        sprites=[longer, object_sprite(ca, sa, boxed(along, R))],
        movers=[a],
        hypothesis="the ledge is longer",
        distractors=[
            factual.answer,
            f"The {a} stops at the edge of the ledge.",
            f"The {a} bounces back from the edge.",
        ],
    )
    return _finish(aspect, "fall", [factual, extended], {"leftward": leftward})


def push(rng: np.random.Generator, clock: Clock, aspect: float, picker: ObjectPicker) -> Scene:
    """One object pushes another along a ledge until the pushed one falls off."""
    (cb, sb), (ca, sa) = picker.pick(rng, 2)  # the pushed object is drawn first: it falls
    a, b = name_of(ca, sa), name_of(cb, sb)
    leftward = bool(rng.random() < 0.5)
    way, _ = _direction_words(leftward)
    t = clock.times
    top = rng.uniform(0.45, 0.6)
    x_edge = rng.uniform(0.62, 0.74) * aspect
    y = top - R
    tc = rng.uniform(0.25, 0.55) * clock.input_duration
    te = _decisive_time(rng, clock, 0.05, 0.3)
    xa0 = R + rng.uniform(0.0, 0.05) * aspect
    v = (x_edge - 2 * R - xa0) / te
    xb0 = xa0 + 2 * R + v * tc
    pusher = path(t, [(0, xa0, y), (te + R / v, x_edge - R, y)])
    pushed = np.where(
        (t <= te)[:, None],
        path(t, [(0, xb0, y), (tc, xb0, y), (te, x_edge, y)]),
        _fall(t, te, x_edge, v, y, FLOOR_Y - R),
    )
    answers = [
        f"The {a} pushes the {b} off the ledge, and the {b} falls to the floor.",
        f"The {b} is pushed over the edge by the {a} and drops to the floor.",
        f"The {a} keeps pushing until the {b} falls off the ledge.",
    ]
    factual = Future(
        question=choose(rng, [*WHAT_NEXT, f"What happens to the {b}?"]),
        answer=choose(rng, answers),
        reasoning=(
            f"The {a} is pushing the {b} {way} along the ledge, and the {b} is at the "
            f"edge. It will be pushed off and fall."
        ),
        sprites=[
            _ledge(x_edge, top, clock.total),
            object_sprite(ca, sa, boxed(pusher, R)),
            object_sprite(cb, sb, boxed(pushed, R)),
        ],
        movers=[a, b],
        distractors=[
            f"The {a} falls off the ledge while the {b} stays.",
            f"The {b} stops at the edge of the ledge.",
            f"The {a} bounces back from the {b}.",
        ],
    )
    return _finish(aspect, "push", [factual], {"leftward": leftward})
