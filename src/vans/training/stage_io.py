"""Pieces every training stage shares: lazily built (optionally cached) items, the starting
checkpoint, and saving the half of the checkpoint a stage does not train."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from vans.models.checkpoint import VANSSettings, check_checkpoint_dir, load_settings

T = TypeVar("T")


class LazyItems(Sequence[T], Generic[T]):
    """A map-style data set whose item i is `build(i)`, made on access. With `cache`, each
    item is made once and kept in memory (for data sets that fit in RAM, like the toy
    world's); DataLoader workers then each keep their own cache for the whole run."""

    def __init__(self, size: int, build: Callable[[int], T], cache: bool = False) -> None:
        self._build = build
        self._cache: list[T | None] | None = [None] * size if cache else None
        self._size = size

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: int) -> T:  # type: ignore[override]
        if not 0 <= index < self._size:
            raise IndexError(f"item {index} of {self._size}")
        if self._cache is None:
            return self._build(index)
        item = self._cache[index]
        if item is None:
            item = self._cache[index] = self._build(index)
        return item


class CopiedPart:
    """Stands in for a model in `save_checkpoint`: "saving" it copies its directory as it
    is. A stage saves the model it does not train this way, without loading it."""

    def __init__(self, source: Path) -> None:
        self.source = Path(source)

    def save_pretrained(self, path: str | Path) -> Path:
        return Path(shutil.copytree(self.source, path))


def load_start(checkpoint: str | Path) -> tuple[Path, VANSSettings]:
    """A stage's starting checkpoint directory (checked) and its settings."""
    path = check_checkpoint_dir(checkpoint)
    return path, load_settings(path)
