"""The perception reward: is the observation alone enough to reach the answer?
(docs/videop2r.md#the-perception-judge)

A judge model reads the question and the observation block only, never the video or the
rest of the answer, and answers; the reward is 1 when that answer is right by the
question's accuracy rule (at least `JudgeConfig.threshold`), else 0. The same judgment is
the CoT pipeline's observation sufficiency check.

Backends (`JudgeBackend`: `JudgeRequest`s in, reply text or None out): the shared chat
backends of `vans.chat` (`ChatEndpoint`, an OpenAI-compatible server; `LocalCausalLM`, a
local transformers model), or `vans.videoqa.toy.ToyJudge`, the toy world's offline judge
from each row's ground truth.

`PerceptionJudge` wraps a backend with what every backend needs: no call for a missing or
blank observation (reward 0), an on-disk cache of replies by content hash (a rerun calls
nothing), NaN for a judgment that failed (not applicable: GRPO leaves it out of the group's
statistics; never a silent 0), a flag for an observation that states the answer outright,
and counts of all of these for the logs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from vans.chat import (
    CallStats,
    ChatEndpoint,
    LocalCausalLM,
    Messages,
    ReplyCache,
    complete_cached,
)
from vans.errors import ConfigError
from vans.videoqa.accuracy import NumericalRule, accuracy, choice_letter, stated_choice
from vans.videoqa.prompting import ANSWER_KIND
from vans.videoqa.rows import QARow, answer_of

JUDGE_SYSTEM = (
    "You answer questions about a video you cannot see, from a description of it alone. "
    "If the description is not enough to answer, say so. Give the final answer between "
    "<answer> </answer> tags."
)


@dataclass(frozen=True)
class JudgeRequest:
    """One judgment to make: the row, the observation, and the chat messages a model reads
    (`judge_messages`; a model judge sees only these)."""

    row: QARow
    observation: str
    messages: Messages


class JudgeBackend(Protocol):
    """A judge model: a `vans.chat.ChatBackend` over `JudgeRequest`s (the toy judge reads
    their rows; a model reads their messages only)."""

    name: str
    """Part of every cache key, so two judges never share replies."""

    def complete(self, requests: Sequence[JudgeRequest]) -> list[str | None]:
        """One reply per request; None for a call that failed for good."""
        ...


@dataclass
class JudgeConfig:
    """Which judge, and how its judgments become rewards."""

    kind: Literal["toy", "http", "local"] = "toy"
    """"toy": the toy world's offline judge (rows carry the facts it checks); "http": an
    OpenAI-compatible server (`url`, `model`); "local": a causal LM in `directory`."""
    url: str | None = None
    model: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    """The environment variable holding the server's key (never the key itself)."""
    timeout_s: float = 60.0
    concurrency: int = 16
    retries: int = 3
    backoff_s: float = 1.0
    directory: str | None = None
    """The local judge's model directory."""
    threshold: float = 0.5
    """The judge's answer must score at least this by the row's accuracy rule for the
    reward to be 1 (multiple choice scores 0 or 1; numbers and text score in between)."""
    numerical: NumericalRule = "relative"
    """The accuracy rule for "numerical" rows, as the reasoning reward's."""
    cache: str | None = None
    """SQLite file of replies by content hash (None: no cache)."""

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"judge threshold must be in (0, 1], got {self.threshold}")
        if self.kind not in ("toy", "http", "local"):
            raise ConfigError(f"judge kind must be toy, http or local, got {self.kind!r}")
        if self.kind == "http" and not (self.url and self.model):
            raise ConfigError("an http judge needs judge.url and judge.model")
        if self.kind == "local" and not self.directory:
            raise ConfigError("a local judge needs judge.directory")


def build_judge(config: JudgeConfig) -> PerceptionJudge:
    """The perception judge `config` describes."""
    backend: JudgeBackend
    if config.kind == "http":
        backend = ChatEndpoint(
            config.url,
            config.model,
            api_key_env=config.api_key_env,
            timeout_s=config.timeout_s,
            concurrency=config.concurrency,
            retries=config.retries,
            backoff_s=config.backoff_s,
        )
    elif config.kind == "local":
        backend = LocalCausalLM(config.directory)
    else:
        from vans.videoqa.toy import ToyJudge

        backend = ToyJudge()
    return PerceptionJudge(backend, config)


@dataclass
class JudgeStats:
    """What the judge did, for the logs (since the last `PerceptionJudge.take_stats`)."""

    judged: int = 0
    calls: int = 0
    cache_hits: int = 0
    failed: int = 0
    """Calls that gave no usable reply: the reward is NaN."""
    missing_observation: int = 0
    """Completions without an observation: reward 0, no call."""
    leaks: int = 0
    """Observations that state the answer outright (flagged; the reward stands)."""

    def as_dict(self) -> dict[str, float]:
        return {f"judge/{k}": float(v) for k, v in self.__dict__.items()}


def judge_messages(row: QARow, observation: str) -> Messages:
    """What the judge reads: the question (with its options) and the observation, nothing
    of the video or of the rest of the answer."""
    lines = [f"Description of the video: {observation.strip()}", "", f"Question: {row.problem}"]
    if row.problem_type == "multiple choice":
        lines += ["Options:", *row.options]
    lines.append(ANSWER_KIND[row.problem_type])
    return [
        {"role": "system", "content": JUDGE_SYSTEM},
        {"role": "user", "content": "\n".join(lines)},
    ]


def states_the_answer(observation: str, row: QARow) -> bool:
    """Whether an observation gives the answer away instead of describing the video: it
    says "the answer is B" / "option B" with the right letter (multiple choice) or "answer"
    followed by the answer's text in one sentence (other kinds)."""
    if row.problem_type == "multiple choice":
        truth = choice_letter(row.answer, row.options)
        return truth is not None and stated_choice(observation, row.options) == truth
    pattern = r"\banswer\b[^.]*" + re.escape(row.answer.lower())
    return re.search(pattern, observation.lower()) is not None


class PerceptionJudge:
    """Perception rewards of completions' observations through a `JudgeBackend` (module
    docstring)."""

    def __init__(self, backend: JudgeBackend, config: JudgeConfig | None = None) -> None:
        self.backend = backend
        self.config = config or JudgeConfig()
        self.cache = ReplyCache(Path(self.config.cache)) if self.config.cache else None
        self.stats = JudgeStats()

    def rewards(self, rows: Sequence[QARow], observations: Sequence[str | None]) -> list[float]:
        """1.0, 0.0 or NaN (the judgment failed) per (row, observation) pair; a missing or
        blank observation is 0 without a call."""
        if len(rows) != len(observations):
            raise ValueError(f"{len(rows)} rows but {len(observations)} observations")
        out: list[float] = [0.0] * len(rows)
        requests: list[JudgeRequest] = []
        indices: list[int] = []
        for i, (row, observation) in enumerate(zip(rows, observations, strict=True)):
            self.stats.judged += 1
            if observation is None or not observation.strip():
                self.stats.missing_observation += 1
                continue
            self.stats.leaks += states_the_answer(observation, row)
            requests.append(JudgeRequest(row, observation, judge_messages(row, observation)))
            indices.append(i)
        calls = CallStats()
        replies = complete_cached(self.backend, requests, self.cache, calls)
        self.stats.cache_hits += calls.cache_hits
        self.stats.calls += calls.calls
        for i, reply in zip(indices, replies, strict=True):
            if reply is None:
                self.stats.failed += 1
                out[i] = math.nan
            else:
                out[i] = self._score(rows[i], reply)
        return out

    def take_stats(self) -> JudgeStats:
        """The counts since the last call (a training step's, or an evaluation's), reset."""
        stats, self.stats = self.stats, JudgeStats()
        return stats

    def _score(self, row: QARow, reply: str) -> float:
        answer = answer_of(reply)
        if answer is None:
            answer = reply.strip()
        score = accuracy(row.problem_type, answer, row.answer, row.options, self.config.numerical)
        return float(score >= self.config.threshold)
