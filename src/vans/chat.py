"""Chat-model backends every model-calling part of vans shares (the perception judge, the
VANS-Data pipeline): requests in, reply text or None out.

- `ChatEndpoint`: any OpenAI-compatible chat-completions server (vLLM, SGLang, a hosted API)
  the user runs: concurrent requests (at most `concurrency` in flight), retries with
  exponential back-off on timeouts, connection errors, 429 and 5xx; the key comes from an
  environment variable, never a file or an argument. Local media parts (`file://` URLs)
  are sent inline as base64 data URLs, so a remote server needs no access to our disk.
- `LocalCausalLM`: a transformers causal LM loaded from a local directory (no remote code),
  batched greedy decoding.
- `ReplyCache` + `complete_cached`: replies on disk by content hash (the backend's name, the
  messages, and the bytes of every media file they point to), so a rerun calls nothing it
  has asked before; a failed call (None) is never remembered as an answer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import mimetypes
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit
from urllib.request import url2pathname

from vans.errors import VansError

Messages = list[dict[str, Any]]
"""OpenAI chat messages: `content` is text, or a list of parts (text, image_url, video_url)."""


class BackendError(VansError):
    """A model backend that cannot be set up (no such model directory, a bad URL, an
    unreadable cache)."""


class ChatBackend(Protocol):
    """A chat model."""

    name: str
    """What identifies the model's answers (endpoint and model, or a weights directory):
    part of every cache key, so two models never share replies."""

    def complete(self, requests: Sequence[Any]) -> list[str | None]:
        """One reply per request (each has `.messages`); None for a call that failed. A
        backend that knows why may set `last_reasons` (one per request of this call, None
        where it answered), which `complete_keyed` passes on."""
        ...


def file_url(path: Path) -> str:
    """The `file://` URL of a local media file, as a message part names it."""
    return Path(os.path.abspath(path)).as_uri()


def _local_path(url: str) -> Path | None:
    # as_uri() percent-encodes spaces, '%', '#' and non-ASCII: decode them back
    return Path(url2pathname(urlsplit(url).path)) if url.startswith("file://") else None


def _media_parts(messages: Messages) -> list[dict[str, Any]]:
    """The image_url / video_url parts of `messages` (their `url` is what they point to)."""
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                kind = part.get("type")
                if kind in ("image_url", "video_url"):
                    parts.append(part[kind])
    return parts


def content_key(backend_name: str, messages: Messages) -> str:
    """The cache key of one request: sha256 of the backend's name and the messages, each
    local media file standing for the sha256 of its bytes, not its path (a clip cut again the
    same way, or the whole folder moved, keeps its replies; a changed clip gets new ones)."""
    keyed = _map_local_media(messages, lambda path: hashlib.sha256(path.read_bytes()).hexdigest())
    blob = json.dumps([backend_name, keyed], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def _map_local_media(messages: Messages, value: Callable[[Path], str]) -> Messages:
    """A copy of `messages` with each `file://` media URL replaced by `value(path)`."""
    if not _media_parts(messages):
        return messages
    out = json.loads(json.dumps(messages))  # a deep copy: the caller's messages stay as they are
    for part in _media_parts(out):
        path = _local_path(part["url"])
        if path is not None:
            part["url"] = value(path)
    return out


class ReplyCache:
    """Model replies by content hash in one SQLite file: safe for several processes, and an
    interrupted write (even SIGKILL) never leaves a half reply."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, timeout=30)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT)"
            )
        except sqlite3.DatabaseError as exc:
            raise BackendError(
                f"{path}: not a reply cache ({exc}); delete it or choose another"
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
class CallStats:
    """What `complete_cached` did: requests answered from the cache, calls made (distinct
    requests sent to the backend) and calls that failed."""

    cache_hits: int = 0
    calls: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Reply:
    """One request's outcome: its cache key, the reply text (None when the call failed) and,
    for a failed call, why."""

    key: str
    text: str | None
    failure: str | None = None


def complete_keyed(
    backend: ChatBackend,
    requests: Sequence[Any],
    cache: ReplyCache | None = None,
    stats: CallStats | None = None,
    *,
    chunk: int | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> list[Reply]:
    """The backend's reply to each request: identical requests are sent once, cached replies
    are not sent at all, and new replies are cached as they come, `chunk` distinct requests
    at a time (all at once by default), so a killed run loses at most one chunk's replies.
    `on_chunk(n)` is told each time n more requests are answered."""
    keys = [content_key(backend.name, r.messages) for r in requests]
    distinct = list(dict.fromkeys(keys))
    replies = cache.get_many(distinct) if cache else {}
    first = {k: r for k, r in reversed(list(zip(keys, requests, strict=True)))}
    todo = [k for k in distinct if k not in replies]
    failures: dict[str, str] = {}
    if stats is not None:
        stats.cache_hits += sum(k in replies for k in keys)
        stats.calls += len(todo)
    if on_chunk is not None and len(distinct) > len(todo):
        on_chunk(len(distinct) - len(todo))
    size = chunk or max(len(todo), 1)
    for start in range(0, len(todo), size):
        part = todo[start : start + size]
        fresh = backend.complete([first[k] for k in part])
        reasons = getattr(backend, "last_reasons", None) or [None] * len(part)
        got = {k: r for k, r in zip(part, fresh, strict=True) if r is not None}
        for k, r, why in zip(part, fresh, reasons, strict=True):
            if r is None:
                failures[k] = why or "no reply (a rerun retries it)"
        if cache and got:
            cache.put_many(got)
        if stats is not None:
            stats.failed += len(part) - len(got)
        replies.update(got)
        if on_chunk is not None:
            on_chunk(len(part))
    return [Reply(k, replies.get(k), failures.get(k)) for k in keys]


def complete_cached(
    backend: ChatBackend,
    requests: Sequence[Any],
    cache: ReplyCache | None = None,
    stats: CallStats | None = None,
    *,
    chunk: int | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> list[str | None]:
    """`complete_keyed`'s reply texts (None for a failed call)."""
    replies = complete_keyed(backend, requests, cache, stats, chunk=chunk, on_chunk=on_chunk)
    return [r.text for r in replies]


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
    last_reasons: list[str | None] = field(default_factory=list, init=False, repr=False)
    """The last `complete` call's failures, one per request (None where it answered), each
    saying whether a rerun can help."""

    def __post_init__(self) -> None:
        why = _url_problem(self.url)
        if why is not None:
            raise BackendError(
                f"chat url must be http(s)://host[:port]/..., got {self.url!r}: {why}"
            )
        if self.concurrency < 1 or self.retries < 0 or self.timeout_s <= 0:
            raise BackendError("chat concurrency >= 1, retries >= 0 and timeout_s > 0 are required")

    @property
    def name(self) -> str:
        return f"{self.url.rstrip('/')}#{self.model}"

    def complete(self, requests: Sequence[Any]) -> list[str | None]:
        results = asyncio.run(self._complete_all([_inline_media(r.messages) for r in requests]))
        self.last_reasons = [why for _, why in results]
        return [text for text, _ in results]

    async def _complete_all(
        self, conversations: Sequence[Messages]
    ) -> list[tuple[str | None, str | None]]:
        import httpx

        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        limit = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(
            base_url=self.url.rstrip("/"), headers=headers, timeout=self.timeout_s, limits=limits
        ) as client:

            async def one(messages: Messages) -> tuple[str | None, str | None]:
                async with limit:
                    return await self._complete(client, messages)

            return list(await asyncio.gather(*(one(m) for m in conversations)))

    async def _complete(self, client: Any, messages: Messages) -> tuple[str | None, str | None]:
        """The reply's text, or None and why the call failed (saying whether a rerun helps)."""
        import httpx

        body = {"model": self.model, "messages": messages, "temperature": 0.0}
        body["max_tokens"] = self.max_tokens
        why = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = await client.post("/chat/completions", json=body)
            except (httpx.InvalidURL, httpx.UnsupportedProtocol, OverflowError, ValueError) as exc:
                # __post_init__ checks the URL; this is what httpx still refuses
                why = f"invalid URL {self.url!r}: {exc}"
                break
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
                self.failures.append(why)
                # the request itself is wrong: neither retrying nor a rerun can help
                return None, (
                    f"{why}: the server refused the request; a rerun sends it unchanged and "
                    "will not fix that (check the URL, the model name and the key)"
                )
            try:
                content = response.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                why = "reply is not a chat completion"
                break
            if isinstance(content, str):
                return content, None
            why = "reply content is not text"
            break
        self.failures.append(why)
        return None, f"{why} (a rerun retries it)"


def _url_problem(url: str) -> str | None:
    """Why `url` cannot be a chat server's base URL, or None."""
    if not url or any(c.isspace() for c in url):
        return "must not be empty or contain whitespace"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port that is not a number in 0-65535
    except ValueError as exc:
        return "port must be a number 1-65535" if "Port" in str(exc) else str(exc)
    if parts.scheme not in ("http", "https"):
        return "the scheme must be http or https"
    if not parts.hostname:
        return "names no host"
    if port == 0:
        return "port must be a number 1-65535"
    return None


def _inline_media(messages: Messages) -> Messages:
    """`messages` with every `file://` media URL replaced by a base64 data URL."""

    def data_url(path: Path) -> str:
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"

    return _map_local_media(messages, data_url)


def text_of(messages: Messages) -> list[dict[str, str]]:
    """`messages` with only their text (a text-only model's view of media parts: none)."""
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = "\n".join(p["text"] for p in content if p.get("type") == "text")
        out.append({"role": message["role"], "content": content})
    return out


class LocalCausalLM:
    """A transformers causal LM from a local directory, answering in batches (greedy). It
    reads text only: media parts of a message are left out."""

    def __init__(self, directory: str | Path, max_new_tokens: int = 128, batch_size: int = 8):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.directory = Path(directory)
        if not (self.directory / "config.json").is_file():
            raise BackendError(f"{self.directory}: not a model directory (no config.json)")
        self.tokenizer = AutoTokenizer.from_pretrained(self.directory, trust_remote_code=False)
        self.tokenizer.padding_side = "left"  # generation continues every row at its end
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(self.directory, trust_remote_code=False)
        self.model.eval()
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.name = f"local:{self.directory.resolve()}"

    def complete(self, requests: Sequence[Any]) -> list[str | None]:
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
        messages = text_of(messages)
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        return "\n\n".join(m["content"] for m in messages) + "\n\n"
