"""Step 2: caption each clip densely and judge whether it is usable (the captioner role).

Each clip is one call (the `caption` prompt, the clip attached as a video part); the reply
is a JSON object with the caption, the verdict and its reason. A failed call or a reply
that is not that object is a rejection with its reason; a clip judged unusable is kept in
the list (its steps are skipped when pairing) and counted in the report.
"""

from __future__ import annotations

from collections.abc import Callable

from vans.chat import CallStats, ChatBackend, ReplyCache, complete_cached, content_key
from vans.vansdata.prompts import Prompts, ReplyError, Request, parse_reply
from vans.vansdata.records import Caption, Clip, Rejections


def caption_clips(
    clips: list[Clip],
    backend: ChatBackend,
    prompts: Prompts,
    cache: ReplyCache,
    rejections: Rejections,
    stats: CallStats,
    *,
    chunk: int = 32,
    on_done: Callable[[int], None] | None = None,
) -> dict[str, Caption]:
    """The caption of each clip that got one, by clip id."""
    requests = [
        prompts.request(
            "caption",
            {
                "video": clip.video,
                "step": clip.step,
                "duration": f"{clip.duration:.1f}",
                "context": f"The annotation calls this step: {clip.label}." if clip.label else "",
            },
            clip=clip.path,
        )
        for clip in clips
    ]
    replies = complete_cached(backend, requests, cache, stats, chunk=chunk, on_chunk=on_done)
    out: dict[str, Caption] = {}
    for clip, request, reply in zip(clips, requests, replies, strict=True):
        item = f"clip {clip.id}"
        if reply is None:
            rejections.add("caption", item, "the captioner's call failed (a rerun retries it)")
            continue
        try:
            got = parse_reply(reply, {"caption": str, "usable": bool, "reason": str})
        except ReplyError as exc:
            rejections.add("caption", item, f"the captioner's reply is unusable: {exc}")
            continue
        provenance = provenance_of(backend, request)
        out[clip.id] = Caption(clip, got["caption"], got["usable"], got["reason"], provenance)
    return out


def provenance_of(backend: ChatBackend, request: Request) -> dict[str, str]:
    """Which model answered which prompt, and the reply's cache key (its reply is in the
    cache under it)."""
    return {
        "backend": backend.name,
        "prompt": f"{request.kind}.txt@{request.prompt_digest}",
        "key": content_key(backend.name, request.messages)[:16],
    }
