"""The prompts the captioner and the writer read, one file each under `prompts/` (ours,
written with the paper's intent): a system part, a line `===`, then the user part with
`$field` placeholders (`string.Template`). `--prompts DIR` replaces any of them by a file of
the same name in DIR.

A prompt's text is part of every cache key (it is in the messages), so editing a prompt
makes new calls instead of reusing replies to the old one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any, Literal

from vans.chat import Messages, file_url
from vans.errors import VansError

PROMPT_DIR = Path(__file__).with_name("prompts")
Kind = Literal["caption", "write_procedural", "write_predictive", "leak", "rewrite"]
KINDS: tuple[Kind, ...] = ("caption", "write_procedural", "write_predictive", "leak", "rewrite")


class PromptError(VansError):
    """A prompt file that cannot be used; names the file and what is wrong."""


@dataclass(frozen=True)
class Prompt:
    system: str
    user: Template
    digest: str
    """sha256 of the file's text (first 12 hex digits), for provenance."""


@dataclass(frozen=True)
class Request:
    """One model call of the pipeline: the prompt's kind, the values filled into it, the
    clip it is about (captions only) and the messages a model reads. The offline backend
    reads `kind` and `fields`; a model reads `messages` only."""

    kind: Kind
    fields: dict[str, Any]
    messages: Messages
    clip: Path | None = None
    prompt_digest: str = ""


@dataclass
class Prompts:
    """The five prompts, from the package or overridden from a directory."""

    override: Path | None = None
    _loaded: dict[str, Prompt] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.override is not None and not self.override.is_dir():
            raise PromptError(f"--prompts {self.override}: not a directory")
        for kind in KINDS:
            path = PROMPT_DIR / f"{kind}.txt"
            if self.override is not None and (self.override / path.name).is_file():
                path = self.override / path.name
            self._loaded[kind] = _load(path)

    def request(self, kind: Kind, fields: dict[str, Any], clip: Path | None = None) -> Request:
        prompt = self._loaded[kind]
        try:
            text = prompt.user.substitute({k: _text(v) for k, v in fields.items()})
        except (KeyError, ValueError) as exc:
            raise PromptError(
                f"{kind}.txt: placeholder {exc} is not one of {sorted(fields)}"
            ) from None
        content: Any = text
        if clip is not None:
            content = [
                {"type": "video_url", "video_url": {"url": file_url(clip)}},
                {"type": "text", "text": text},
            ]
        messages = [
            {"role": "system", "content": prompt.system},
            {"role": "user", "content": content},
        ]
        return Request(kind, fields, messages, clip, prompt.digest)


def _text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list | tuple):
        return "; ".join(map(str, value)) if value else "none"
    return str(value)


def _load(path: Path) -> Prompt:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptError(f"{path}: cannot read the prompt ({type(exc).__name__})") from None
    system, sep, user = text.partition("\n===\n")
    if not sep or not system.strip() or not user.strip():
        raise PromptError(f"{path}: needs a system part, a line '===', then the user part")
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return Prompt(system.strip(), Template(user.strip()), digest)


class ReplyError(ValueError):
    """A reply that is not the JSON object its prompt asks for; says what is wrong."""


def parse_reply(reply: str, fields: dict[str, type]) -> dict[str, Any]:
    """The JSON object in a model's reply (code fences and text around it allowed) with
    each of `fields` of its type; strings must not be blank."""
    start, end = reply.find("{"), reply.rfind("}")
    if start < 0 or end < start:
        raise ReplyError("no JSON object in the reply")
    try:
        data = json.loads(reply[start : end + 1])
    except json.JSONDecodeError as exc:
        raise ReplyError(f"invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ReplyError("the reply's JSON is not an object")
    out = {}
    for name, kind in fields.items():
        value = data.get(name)
        if not isinstance(value, kind) or (kind is str and not value.strip()):
            raise ReplyError(f"{name}: must be a{' non-empty' * (kind is str)} {kind.__name__}")
        out[name] = value.strip() if isinstance(value, str) else value
    return out
