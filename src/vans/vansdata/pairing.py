"""Step 3: pair each usable step with the next usable one (input step -> target step).

Steps between the two that could not be used (unusable, too short, failed) are recorded as
skipped; more than `max_skipped` of them breaks the chain (the target would no longer be the
next thing that happens). A target that starts well before its input ends (ActivityNet's
events overlap) would show the input again: such pairs are rejected. A pairs table needs no
pairing: each row is a pair.
"""

from __future__ import annotations

from itertools import pairwise

from vans.vansdata.annotations import AnnotatedVideo
from vans.vansdata.records import Caption, Pair, Rejections, clip_id


def pair_steps(
    videos: list[AnnotatedVideo],
    source: str,
    captions: dict[str, Caption],
    rejections: Rejections,
    *,
    max_skipped: int = 1,
    max_overlap_s: float = 1.0,
) -> list[Pair]:
    pairs = []
    for video in videos:
        usable = [
            i
            for i in range(len(video.steps))
            if (c := captions.get(clip_id(source, video.id, i))) is not None and c.usable
        ]
        for i, j in pairwise(usable):
            item = f"video {video.id} steps {i}->{j}"
            skipped = tuple(video.steps[k].text for k in range(i + 1, j))
            if len(skipped) > max_skipped:
                rejections.add("pair", item, f"{len(skipped)} steps between, over {max_skipped}")
                continue
            first = captions[clip_id(source, video.id, i)]
            second = captions[clip_id(source, video.id, j)]
            overlap = video.steps[i].end - video.steps[j].start
            if overlap > max_overlap_s:
                rejections.add("pair", item, f"the target overlaps the input by {overlap:.2f} s")
                continue
            pairs.append(
                Pair(
                    f"{first.clip.id}-{j:03d}",
                    first,
                    second,
                    skipped,
                    video.task_name,
                    tuple(s.text for s in video.steps[: i + 1]),
                )
            )
    return pairs


def unusable(captions: dict[str, Caption], rejections: Rejections) -> None:
    """List every clip the captioner judged unusable, with its reason."""
    for cid, caption in sorted(captions.items()):
        if not caption.usable:
            rejections.add("usable", f"clip {cid}", caption.reason)
