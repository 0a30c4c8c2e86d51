"""Step 2: caption each clip densely and judge whether it is usable (the captioner role).

Each clip is one call (the `caption` prompt, the clip attached as a video part); the reply
is a JSON object with the caption, the verdict and its reason. A failed call (with why it
failed) or a reply that is not that object is a rejection with its reason; a clip judged
unusable is kept in the list (its steps are skipped when pairing) and counted in the report.
"""

from __future__ import annotations

from collections.abc import Callable

from vans.chat import CallStats, ChatBackend, Reply, ReplyCache, complete_keyed
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
) -> tuple[dict[str, Caption], set[str]]:
    """The caption of each clip that got one, by clip id, and the ids of the clips whose
    call failed (a rerun asks again: unknown, not unusable)."""
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
    replies = complete_keyed(backend, requests, cache, stats, chunk=chunk, on_chunk=on_done)
    out: dict[str, Caption] = {}
    failed: set[str] = set()
    for clip, request, reply in zip(clips, requests, replies, strict=True):
        item = f"clip {clip.id}"
        if reply.text is None:
            rejections.add("caption", item, f"the captioner's call failed: {reply.failure}")
            failed.add(clip.id)
            continue
        try:
            got = parse_reply(reply.text, {"caption": str, "usable": bool, "reason": str})
        except ReplyError as exc:
            rejections.add("caption", item, f"the captioner's reply is unusable: {exc}")
            continue
        provenance = provenance_of(backend, request, reply)
        out[clip.id] = Caption(clip, got["caption"], got["usable"], got["reason"], provenance)
    return out, failed


def provenance_of(backend: ChatBackend, request: Request, reply: Reply) -> dict[str, str]:
    """Which model answered which prompt, and the reply's cache key (its reply is in the
    cache under it)."""
    return {
        "backend": backend.name,
        "prompt": f"{request.kind}.txt@{request.prompt_digest}",
        "key": reply.key[:16],
    }
