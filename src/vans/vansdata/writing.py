"""Step 4: the writer turns each pair into the user's question, the reasoning and the answer
caption; step 5, for predictive data, checks that the question and the reasoning use only
what the input clip shows, rewrites those that leak the target once, and drops those that
still leak.

Procedural pairs give the writer the task and the steps completed so far (the next step
follows from the procedure); predictive pairs give it the two captions only, and the
question and reasoning must stand on the input alone. The answer describes the target clip:
that is what it is for, so the leak check reads the question and the reasoning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vans.chat import CallStats, ChatBackend, Reply, ReplyCache, complete_keyed
from vans.data.schema import TaskType
from vans.vansdata.caption import provenance_of
from vans.vansdata.prompts import Prompts, ReplyError, Request, parse_reply
from vans.vansdata.records import Pair, Rejections

TEXT = {"question": str, "reasoning": str, "answer": str}


@dataclass(frozen=True)
class Written:
    pair: Pair
    question: str
    reasoning: str
    answer: str
    provenance: dict[str, Any]


@dataclass
class Calls:
    """The writer's backend, cache and counts, shared by the writing and the leak check."""

    backend: ChatBackend
    prompts: Prompts
    cache: ReplyCache
    stats: CallStats
    chunk: int = 32
    on_done: Callable[[int], None] | None = None

    def run(self, requests: list[Request]) -> list[Reply]:
        return complete_keyed(
            self.backend, requests, self.cache, self.stats, chunk=self.chunk, on_chunk=self.on_done
        )


def write_pairs(
    pairs: list[Pair], task: TaskType, calls: Calls, rejections: Rejections
) -> list[Written]:
    """Question, reasoning and answer of every pair (procedural or predictive)."""
    kind = "write_procedural" if task is TaskType.PROCEDURAL else "write_predictive"
    requests = [calls.prompts.request(kind, _fields(p)) for p in pairs]
    out = []
    for pair, request, reply in zip(pairs, requests, calls.run(requests), strict=True):
        text = _parsed(reply, "write", f"pair {pair.id}", rejections)
        if text is not None:
            provenance = {"write": provenance_of(calls.backend, request, reply)}
            out.append(Written(pair, **text, provenance=provenance))
    return out


def check_leaks(written: list[Written], calls: Calls, rejections: Rejections) -> list[Written]:
    """The predictive pairs whose question and reasoning pass the leak check, rewritten once
    where they did not; the rest are rejected ("leak") with what leaked."""
    passed, leaking = _leak_round(written, calls, rejections, "leak")
    requests = [
        calls.prompts.request("rewrite", {**_fields(w.pair), **_texts(w), "details": details})
        for w, details in leaking
    ]
    rewritten = []
    for (w, _), request, reply in zip(leaking, requests, calls.run(requests), strict=True):
        text = _parsed(reply, "rewrite", f"pair {w.pair.id}", rejections)
        if text is not None:
            provenance = {**w.provenance, "rewrite": provenance_of(calls.backend, request, reply)}
            # the answer stays as written: it describes the target, which a rewrite must not touch
            rewritten.append(
                Written(w.pair, text["question"], text["reasoning"], w.answer, provenance)
            )
    again, still = _leak_round(rewritten, calls, rejections, "leak_again")
    for w, details in still:
        rejections.add("leak", f"pair {w.pair.id}", f"still leaks after a rewrite: {details}")
    order = {w.pair.id: i for i, w in enumerate(written)}
    return sorted(passed + again, key=lambda w: order[w.pair.id])


def _leak_round(
    written: list[Written], calls: Calls, rejections: Rejections, name: str
) -> tuple[list[Written], list[tuple[Written, str]]]:
    requests = [calls.prompts.request("leak", {**_fields(w.pair), **_texts(w)}) for w in written]
    passed, leaking = [], []
    for w, request, reply in zip(written, requests, calls.run(requests), strict=True):
        item = f"pair {w.pair.id}"
        if reply.text is None:
            rejections.add("leak", item, f"the leak check's call failed: {reply.failure}")
            continue
        try:
            verdict = parse_reply(reply.text, {"leak": bool})
        except ReplyError as exc:
            rejections.add("leak", item, f"the leak check's reply is unusable: {exc}")
            continue
        checked = Written(
            w.pair,
            w.question,
            w.reasoning,
            w.answer,
            {**w.provenance, name: provenance_of(calls.backend, request, reply)},
        )
        if verdict["leak"]:
            leaking.append((checked, _details(reply.text) or "unspecified"))
        else:
            passed.append(checked)
    return passed, leaking


def _details(reply: str) -> str:
    try:
        return parse_reply(reply, {"details": str})["details"]
    except ReplyError:
        return ""


def _parsed(reply: Reply, step: str, item: str, rejections: Rejections) -> dict[str, str] | None:
    if reply.text is None:
        rejections.add(step, item, f"the writer's call failed: {reply.failure}")
        return None
    try:
        return parse_reply(reply.text, TEXT)
    except ReplyError as exc:
        rejections.add(step, item, f"the writer's reply is unusable: {exc}")
        return None


def _fields(pair: Pair) -> dict[str, Any]:
    return {
        "task": pair.task_name,
        "completed": list(pair.completed),
        "input_caption": pair.input.caption,
        "target_caption": pair.target.caption,
        "target_label": pair.target.clip.label,
        "skipped": list(pair.skipped),
    }


def _texts(w: Written) -> dict[str, str]:
    return {"question": w.question, "reasoning": w.reasoning, "answer": w.answer}
