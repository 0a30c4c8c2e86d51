"""What the steps pass on: clips, pairs, and the rejections every step lists (nothing is
dropped without a reason in the report)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Clip:
    """One step's clip (cut from its video), or one clip of a pairs table (used as is)."""

    id: str
    """A file name: source, video id and step index (`clip_id`)."""
    video: str
    """The annotation's video id (a pairs table: the clip's path as written)."""
    step: int
    """The step's index among its video's steps in time order
    (`vans.vansdata.annotations`); -1 for a pairs-table clip."""
    path: Path
    label: str | None
    """The annotated step or event text (None for a pairs table)."""
    window: tuple[float, float] | None
    """Where the clip is in its video (seconds); None for a pairs-table clip."""
    duration: float


@dataclass(frozen=True)
class Caption:
    clip: Clip
    caption: str
    usable: bool
    reason: str
    provenance: dict[str, Any]


@dataclass(frozen=True)
class Pair:
    """An input clip and the clip after it, with what the writer is told about them."""

    id: str
    input: Caption
    target: Caption
    skipped: tuple[str, ...] = ()
    """Steps between the two, left out (unusable, too short, or failed)."""
    task_name: str | None = None
    completed: tuple[str, ...] = ()
    """The steps done up to and including the input step (procedural)."""


@dataclass
class Rejections:
    """Every item a step did not pass on, and why."""

    items: list[dict[str, str]] = field(default_factory=list)

    def add(self, step: str, item: str, reason: str) -> None:
        self.items.append({"step": step, "item": item, "reason": reason})


def safe_name(text: str) -> str:
    """`text` as part of a file name and sample id (letters, digits, '.', '_', '-', at most
    89 characters). Where that changes `text`, a short hash of it is appended, so two ids
    that read alike ("x y", "x_y") never share a name (and so clips or samples)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", text).strip("._-")[:80]
    if name == text:
        return name
    return f"{name or 'x'}_{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def clip_id(source: str, video: str, step: int) -> str:
    return f"{source}-{safe_name(video)}-{step:03d}"
