"""Procedural families: multi-step procedures whose next step follows a visible rule.

Each procedure shows two steps being carried out in the input clip (with earlier steps
already done) and the next step in the target clip. The rule that decides the next step is
visible: a repeating colour pattern (stacking a tower, pouring layers) or "the leftmost
remaining object goes into the bin of its colour" (sorting).
"""

from __future__ import annotations

import numpy as np

from vans.data.toyworld.render import COLORS, FLOOR_Y, SCENERY, Sprite
from vans.data.toyworld.scene import (
    Clock,
    Future,
    ObjectPicker,
    Scene,
    Unsatisfiable,
    article,
    boxed,
    choose,
    name_of,
    object_sprite,
    path,
)

NEXT_STEP = (
    "What is the next step?",
    "What comes next in this procedure?",
    "What happens next?",
    "Which step follows?",
)


def _step_windows(clock: Clock) -> list[tuple[float, float]]:
    """(start, end) seconds of the two input steps and the target step."""
    d_in, d_out = clock.input_duration, clock.target_duration
    dur = min(0.4 * d_in, 0.85 * d_out)
    return [(s, s + dur) for s in (0.05 * d_in, 0.52 * d_in, d_in + 0.05 * d_out)]


def _carry(
    times: np.ndarray,
    window: tuple[float, float],
    src: tuple[float, float],
    dst: tuple[float, float],
    lift_y: float,
) -> np.ndarray:
    """Pick up at `src`, lift, move across and lower onto `dst` during `window`."""
    t0, t1 = window
    d = t1 - t0
    return path(
        times,
        [(t0, *src), (t0 + 0.25 * d, src[0], lift_y), (t0 + 0.75 * d, dst[0], lift_y), (t1, *dst)],
    )


def _pattern_words(colors: list[str]) -> str:
    return ", ".join(colors)


def _repeating(
    rng: np.random.Generator, colors: list[str], max_steps: int
) -> tuple[list[str], int]:
    """A colour sequence repeating `colors` whose step `k` (the next one) is colors[0].

    k is drawn so the input shows more than one full period: the rule is inferable.
    """
    p = len(colors)
    k = int(rng.integers(p + 1, max_steps + 1))
    return [colors[(j - k) % p] for j in range(k + 1)], k


def stack(rng: np.random.Generator, clock: Clock, aspect: float, picker: ObjectPicker) -> Scene:
    """Build a tower whose block colours repeat a pattern; the next block is the next colour."""
    s = 0.045
    p = int(rng.integers(2, 4))
    colors = [c for c, _ in picker.pick(rng, p, shapes=("square",))]
    seq, k = _repeating(rng, colors, max_steps=5)
    nxt = seq[k]
    t = clock.times
    windows = _step_windows(clock)
    tower_x = 0.2 * aspect
    lift_y = FLOOR_Y - 2 * s * (k + 1) - 0.1
    others = [c for c in colors if c != nxt]
    pool_colors = [seq[k - 2], seq[k - 1], nxt] + [choose(rng, others) for _ in range(2)]
    order = rng.permutation(len(pool_colors))
    slots = np.linspace(0.5, 0.92, len(pool_colors)) * aspect
    sprites: list[Sprite] = []
    for j in range(k - 2):
        sprites.append(
            object_sprite(
                seq[j], "square", boxed(path(t, [(0, tower_x, FLOOR_Y - s - 2 * s * j)]), s)
            )
        )
    for i, color in enumerate(pool_colors):
        src = (slots[order[i]], FLOOR_Y - s)
        if i < 3:  # the blocks of steps k-2, k-1 and k, in that order
            j = k - 2 + i
            xy = _carry(t, windows[i], src, (tower_x, FLOOR_Y - s - 2 * s * j), lift_y)
        else:
            xy = path(t, [(0, *src)])
        sprites.append(object_sprite(color, "square", boxed(xy, s)))

    block = name_of(nxt, "square")
    wrong = [c for c in dict.fromkeys(pool_colors) if c != nxt]
    future = Future(
        question=choose(
            rng,
            [
                *NEXT_STEP,
                "Which block goes on the tower next?",
                "What is the next step in building this tower?",
            ],
        ),
        answer=choose(
            rng,
            [
                f"The {block} is placed on top of the tower.",
                f"{article(block).capitalize()} {block} is stacked on top of the tower.",
                f"The next block, {article(block)} {block}, goes on the tower.",
            ],
        ),
        reasoning=(
            f"The tower repeats the colours {_pattern_words(seq[:p])} from the bottom."
            f" The top block is {seq[k - 1]}, so {article(nxt)} {nxt} block comes next."
        ),
        sprites=sprites,
        movers=[block],
        distractors=[f"The {name_of(c, 'square')} is placed on top of the tower." for c in wrong]
        + ["The tower is knocked over.", "The top block is taken off the tower."],
    )
    return Scene("stack", "procedural", [future], {"pattern": seq[:p], "step": k})


def sort(rng: np.random.Generator, clock: Clock, aspect: float, picker: ObjectPicker) -> Scene:
    """Move objects, leftmost first, into the bin of their colour."""
    s = 0.045
    n_bins = int(rng.integers(2, 4))
    n_obj = int(rng.integers(4, 6))
    done = int(rng.integers(0, n_obj - 2))  # already sorted before the clip starts
    mover_idx = done + 2
    first = picker.pick(rng, n_bins)
    bins = [c for c, _ in first]
    objects: list[tuple[str, str] | None] = [None] * n_obj
    objects[mover_idx] = first[0]
    used = {first[0]}
    for i in range(n_obj):
        if objects[i] is None:
            options = [
                (c, sh)
                for c in bins
                for sh in ("circle", "square", "triangle")
                if (c, sh) not in used and picker.allowed((c, sh))
            ]
            if not options:
                raise Unsatisfiable("no distinct objects left for the bins")
            objects[i] = options[int(rng.integers(len(options)))]
            used.add(objects[i])
    t = clock.times
    windows = _step_windows(clock)
    shelf_y = 0.36
    lift_y = 0.2
    xs = np.linspace(0.14, 0.86, n_obj) * aspect
    bin_x = np.linspace(0.2, 0.8, n_bins) * aspect
    bin_hw, wall = 0.145, 0.012
    sprites = [
        Sprite.still(
            "rect", SCENERY, (aspect / 2, shelf_y + 0.01, 0.46 * aspect, 0.01), clock.total, "shelf"
        )
    ]
    for c, bx in zip(bins, bin_x, strict=True):
        for side in (-1, 1):
            sprites.append(
                Sprite.still(
                    "rect",
                    COLORS[c],
                    (bx + side * bin_hw, FLOOR_Y - 0.06, wall, 0.06),
                    clock.total,
                    f"{c} bin",
                )
            )
    filled = dict.fromkeys(bins, 0)
    for i, (color, shape) in enumerate(objects):
        slot = filled[color]
        filled[color] += 1
        dst = (bin_x[bins.index(color)] - 0.09 + 0.09 * slot, FLOOR_Y - s)
        src = (xs[i], shelf_y - s)
        if i < done:
            xy = path(t, [(0, *dst)])
        elif i <= mover_idx:
            xy = _carry(t, windows[i - done], src, dst, lift_y)
        else:
            xy = path(t, [(0, *src)])
        sprites.append(object_sprite(color, shape, boxed(xy, s)))

    mover = name_of(*objects[mover_idx])
    later = [name_of(*o) for o in objects[mover_idx + 1 :]]
    color = objects[mover_idx][0]
    future = Future(
        question=choose(
            rng,
            [*NEXT_STEP, "Which object is sorted next?", "What is the next object to be sorted?"],
        ),
        answer=choose(
            rng,
            [
                f"The {mover} is moved into the {color} bin.",
                f"The {mover} is put in the {color} bin.",
                f"Next, the {mover} goes into the {color} bin.",
            ],
        ),
        reasoning=(
            f"Objects are sorted from left to right into the bin of their colour. The "
            f"leftmost object left on the shelf is the {mover}, so it goes into the "
            f"{color} bin."
        ),
        sprites=sprites,
        movers=[mover],
        distractors=[f"The {o} is moved into the {o.split()[0]} bin." for o in later]
        + [f"The {mover} is moved into the {c} bin." for c in bins if c != color],
    )
    return Scene(
        "sort", "procedural", [future], {"bins": bins, "rule": "leftmost first, by colour"}
    )


def fill(rng: np.random.Generator, clock: Clock, aspect: float, picker: ObjectPicker) -> Scene:
    """Pour layers into a container; their colours repeat a pattern."""
    del picker  # layers have no shape, so held-out colour-shape pairs do not apply
    p = int(rng.integers(2, 4))
    colors = [str(c) for c in rng.permutation(list(COLORS))[:p]]
    seq, k = _repeating(rng, colors, max_steps=5)
    nxt = seq[k]
    t = clock.times
    windows = _step_windows(clock)
    cx, cw, layer_h, wall = aspect / 2, 0.16, 0.08, 0.015
    sprites = [
        Sprite.still(
            "rect",
            SCENERY,
            (cx + side * (cw + wall), FLOOR_Y - 0.28, wall, 0.28),
            clock.total,
            "container",
        )
        for side in (-1, 1)
    ]
    for j in range(k + 1):
        start, end = windows[j - (k - 2)] if j >= k - 2 else (-2.0, -1.0)
        frac = np.clip((t - start) / (end - start), 0.0, 1.0)
        h = frac * layer_h
        bottom = FLOOR_Y - j * layer_h
        track = np.stack([np.full_like(t, cx), bottom - h / 2, np.full_like(t, cw), h / 2], axis=1)
        track[h <= 0] = np.nan
        sprites.append(Sprite("rect", COLORS[seq[j]], track, f"{seq[j]} layer"))
        if j >= k - 2:
            surface = bottom - h
            stream = np.stack(
                [
                    np.full_like(t, cx),
                    (0.04 + surface) / 2,
                    np.full_like(t, 0.012),
                    (surface - 0.04) / 2,
                ],
                axis=1,
            )
            stream[(t < start) | (t >= end)] = np.nan
            sprites.append(Sprite("rect", COLORS[seq[j]], stream, f"{seq[j]} stream"))

    layer = f"{nxt} layer"
    future = Future(
        question=choose(
            rng,
            [
                *NEXT_STEP,
                "What is poured in next?",
                "Which colour is poured into the container next?",
            ],
        ),
        answer=choose(
            rng,
            [
                f"{article(layer).capitalize()} {layer} is poured into the container.",
                f"Next, {article(layer)} {layer} is poured on top.",
                f"The container gets {article(layer)} {layer} on top.",
            ],
        ),
        reasoning=(
            f"The layers repeat the colours {_pattern_words(seq[:p])} from the bottom."
            f" The top layer is {seq[k - 1]}, so {nxt} is poured next."
        ),
        sprites=sprites,
        movers=[layer],
        distractors=[
            f"{article(c).capitalize()} {c} layer is poured into the container."
            for c in colors
            if c != nxt
        ]
        + ["The container is emptied.", "The top layer is poured out."],
    )
    return Scene("fill", "procedural", [future], {"pattern": seq[:p], "step": k})
