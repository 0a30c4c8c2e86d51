"""The perception reward: is the observation alone enough to reach the answer?
(docs/videop2r.md#the-perception-judge)

A judge model reads the question and the observation block only, never the video or the
rest of the answer, and answers; the reward is 1 when that answer is right by the
question's accuracy rule (at least `JudgeConfig.threshold`), else 0. The same judgment is
the CoT pipeline's observation sufficiency check.

Backends (`JudgeBackend`: `JudgeRequest`s in, reply text or None out):

- `ChatEndpoint`: any OpenAI-compatible chat-completions server (vLLM, SGLang) the user
  runs: concurrent requests (at most `concurrency` in flight), retries with exponential
  back-off on timeouts, connection errors, 429 and 5xx; the key comes from an environment
  variable, never a file or an argument.
- `LocalCausalLM`: a transformers causal LM loaded from a local directory (no remote code),
  batched greedy decoding.
- `vans.videoqa.toy.ToyJudge`: the toy world's offline judge, from each row's ground truth.

`PerceptionJudge` wraps a backend with what every backend needs: no call for a missing or
blank observation (reward 0), an on-disk cache of replies by content hash (a rerun calls
nothing), NaN for a judgment that failed (not applicable: GRPO leaves it out of the group's
statistics; never a silent 0), a flag for an observation that states the answer outright,
and counts of all of these for the logs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from vans.errors import ConfigError, VansError
from vans.videoqa.accuracy import NumericalRule, accuracy, choice_letter, stated_choice
from vans.videoqa.prompting import ANSWER_KIND
from vans.videoqa.rows import QARow, answer_of

Messages = list[dict[str, str]]

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
    """A judge model."""

    name: str
    """What identifies the model's answers (endpoint and model, or a weights directory):
    part of every cache key, so two judges never share replies."""

    def complete(self, requests: Sequence[JudgeRequest]) -> list[str | None]:
        """One reply per request; None for a call that failed for good."""
        ...


class JudgeError(VansError):
    """A judge that cannot be set up (no such model directory, a bad URL, a missing key)."""


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
        pending: dict[str, tuple[JudgeRequest, list[int]]] = {}
        for i, (row, observation) in enumerate(zip(rows, observations, strict=True)):
            self.stats.judged += 1
            if observation is None or not observation.strip():
                self.stats.missing_observation += 1
                continue
            self.stats.leaks += states_the_answer(observation, row)
            request = JudgeRequest(row, observation, judge_messages(row, observation))
            key = self._key(request.messages)
            pending.setdefault(key, (request, []))[1].append(i)
        replies = self.cache.get_many(list(pending)) if self.cache else {}
        self.stats.cache_hits += sum(len(pending[k][1]) for k in replies)
        todo = [k for k in pending if k not in replies]
        if todo:
            self.stats.calls += len(todo)
            fresh = self.backend.complete([pending[k][0] for k in todo])
            got = {k: r for k, r in zip(todo, fresh, strict=True) if r is not None}
            if self.cache:
                self.cache.put_many(got)
            replies.update(got)
        for key, (_, indices) in pending.items():
            reply = replies.get(key)
            for i in indices:
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

    def _key(self, messages: Messages) -> str:
        blob = json.dumps([self.backend.name, messages], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _score(self, row: QARow, reply: str) -> float:
        answer = answer_of(reply)
        if answer is None:
            answer = reply.strip()
        score = accuracy(row.problem_type, answer, row.answer, row.options, self.config.numerical)
        return float(score >= self.config.threshold)


class ReplyCache:
    """Judge replies by content hash in one SQLite file: safe for several processes, and an
    interrupted write never leaves a half reply."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, timeout=30)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT)"
            )
        except sqlite3.DatabaseError as exc:
            raise JudgeError(
                f"{path}: not a judge cache ({exc}); delete it or choose another"
            ) from None

    def get_many(self, keys: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for start in range(0, len(keys), 500):  # SQLite's bound on query parameters
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT key, reply FROM replies WHERE key IN ({marks})", chunk)
            out.update(dict(rows.fetchall()))
        return out

    def put_many(self, replies: dict[str, str]) -> None:
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO replies VALUES (?, ?)", replies.items())


@dataclass
class ChatEndpoint:
    """An OpenAI-compatible chat-completions server (`POST {url}/chat/completions`)."""

    url: str
    """The server's base URL, e.g. http://127.0.0.1:8000/v1."""
    model: str
    """The served model's name."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """The environment variable holding the key (sent as a bearer token when set)."""
    timeout_s: float = 60.0
    concurrency: int = 16
    """Requests in flight at once."""
    retries: int = 3
    """Further tries after a timeout, a connection error, 429 or 5xx."""
    backoff_s: float = 1.0
    """The wait before the first retry; it doubles each time."""
    max_tokens: int = 256
    failures: list[str] = field(default_factory=list)
    """Why each failed call failed (the last attempt's reason), for the logs."""

    def __post_init__(self) -> None:
        if not re.match(r"^https?://[^\s/]+", self.url):
            raise JudgeError(f"judge url must be http(s)://host[:port]/..., got {self.url!r}")
        if self.concurrency < 1 or self.retries < 0 or self.timeout_s <= 0:
            raise JudgeError("judge concurrency >= 1, retries >= 0 and timeout_s > 0 are required")

    @property
    def name(self) -> str:
        return f"{self.url.rstrip('/')}#{self.model}"

    def complete(self, requests: Sequence[JudgeRequest]) -> list[str | None]:
        return asyncio.run(self._complete_all([r.messages for r in requests]))

    async def _complete_all(self, conversations: Sequence[Messages]) -> list[str | None]:
        import httpx

        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        limit = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(
            base_url=self.url.rstrip("/"), headers=headers, timeout=self.timeout_s, limits=limits
        ) as client:

            async def one(messages: Messages) -> str | None:
                async with limit:
                    return await self._complete(client, messages)

            return list(await asyncio.gather(*(one(m) for m in conversations)))

    async def _complete(self, client: Any, messages: Messages) -> str | None:
        import httpx

        body = {"model": self.model, "messages": messages, "temperature": 0.0}
        body["max_tokens"] = self.max_tokens
        why = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = await client.post("/chat/completions", json=body)
            except httpx.TimeoutException:
                why = "timeout"
                continue
            except httpx.TransportError as exc:
                why = f"connection: {type(exc).__name__}"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                why = f"HTTP {response.status_code}"
                continue
            if response.status_code != 200:
                why = f"HTTP {response.status_code}"
                break  # the request itself is wrong: retrying cannot help
            try:
                content = response.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                why = "reply is not a chat completion"
                break
            if isinstance(content, str):
                return content
            why = "reply content is not text"
            break
        self.failures.append(why)
        return None


class LocalCausalLM:
    """A transformers causal LM from a local directory, answering in batches (greedy)."""

    def __init__(self, directory: str | Path, max_new_tokens: int = 128, batch_size: int = 8):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.directory = Path(directory)
        if not (self.directory / "config.json").is_file():
            raise JudgeError(f"{self.directory}: not a model directory (no config.json)")
        self.tokenizer = AutoTokenizer.from_pretrained(self.directory, trust_remote_code=False)
        self.tokenizer.padding_side = "left"  # generation continues every row at its end
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(self.directory, trust_remote_code=False)
        self.model.eval()
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.name = f"local:{self.directory.resolve()}"

    def complete(self, requests: Sequence[JudgeRequest]) -> list[str | None]:
        import torch

        out: list[str | None] = []
        for start in range(0, len(requests), self.batch_size):
            texts = [self._prompt(r.messages) for r in requests[start : start + self.batch_size]]
            batch = self.tokenizer(texts, return_tensors="pt", padding=True)
            with torch.no_grad():
                ids = self.model.generate(
                    **batch,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            new = ids[:, batch["input_ids"].shape[1] :]
            out.extend(self.tokenizer.batch_decode(new, skip_special_tokens=True))
        return out

    def _prompt(self, messages: Messages) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        return "\n\n".join(m["content"] for m in messages) + "\n\n"
