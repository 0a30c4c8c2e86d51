"""Fixtures shared across test files."""

from __future__ import annotations

from pathlib import Path

import pytest

REAL_CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real_clips"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random VANS checkpoint, written once per test session (read-only for tests)."""
    from vans.models.checkpoint import init_tiny

    return init_tiny(tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)
