"""Step 3: pair each usable step with the next usable one (input step -> target step).

Steps between the two that could not be used (unusable, too short, a reply that is not a
caption) are recorded as skipped; more than `max_skipped` of them breaks the chain (the
target would no longer be the next thing that happens). A later step that starts over
`max_overlap_s` before the input ends (ActivityNet's events overlap) would show the input
again: it is passed over, not counted as skipped, and the next step after it is tried. A
step whose caption call failed is unknown, not unusable: the chain stops there and the pair
is left for the rerun, so a run with failures never writes a pair a complete run would not.
A pairs table needs no pairing: each row is a pair.
"""

from __future__ import annotations

from vans.vansdata.annotations import AnnotatedVideo
from vans.vansdata.records import Caption, Pair, Rejections, clip_id


def pair_steps(
    videos: list[AnnotatedVideo],
    source: str,
    captions: dict[str, Caption],
    failed: set[str],
    rejections: Rejections,
    *,
    max_skipped: int = 1,
    max_overlap_s: float = 1.0,
) -> list[Pair]:
    """The pairs of every video's steps; `failed` holds the clip ids whose caption call
    failed."""
    pairs = []
    for video in videos:
        ids = [clip_id(source, video.id, i) for i in range(len(video.steps))]
        for i, step in enumerate(video.steps):
            first = captions.get(ids[i])
            if first is None or not first.usable:
                continue
            skipped: list[str] = []
            passed_over = 0
            for j in range(i + 1, len(video.steps)):
                item = f"video {video.id} steps {i}->{j}"
                if video.steps[j].start < step.end - max_overlap_s:
                    passed_over += 1
                    continue
                if ids[j] in failed:
                    rejections.add(
                        "pair", item, f"step {j}'s caption call failed (a rerun pairs it)"
                    )
                    break
                second = captions.get(ids[j])
                if second is None or not second.usable:
                    skipped.append(video.steps[j].text)
                    continue
                if len(skipped) > max_skipped:
                    rejections.add(
                        "pair", item, f"{len(skipped)} steps between, over {max_skipped}"
                    )
                    break
                pairs.append(
                    Pair(
                        f"{first.clip.id}-{j:03d}",
                        first,
                        second,
                        tuple(skipped),
                        video.task_name,
                        tuple(s.text for s in video.steps[: i + 1]),
                    )
                )
                break
            else:
                if passed_over and not skipped:
                    rejections.add(
                        "pair",
                        f"video {video.id} step {i}",
                        f"every later step overlaps it by over {max_overlap_s:g} s",
                    )
    return pairs


def unusable(captions: dict[str, Caption], rejections: Rejections) -> None:
    """List every clip the captioner judged unusable, with its reason."""
    for cid, caption in sorted(captions.items()):
        if not caption.usable:
            rejections.add("usable", f"clip {cid}", caption.reason)
