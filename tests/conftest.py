"""Fixtures shared across test files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REAL_CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real_clips"
needs_real_clips = pytest.mark.skipif(
    not REAL_CLIPS.is_dir(), reason="shared/data/real_clips is not beside the checkout"
)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random VANS checkpoint, written once per test session (read-only for tests)."""
    from vans.models.checkpoint import init_tiny

    return init_tiny(tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


@pytest.fixture(scope="session")
def toy_qa(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small toy video-QA benchmark (`vans qa toy`: train, test, test_heldout), written
    once per test session (read-only for tests)."""
    from vans.cli.main import run

    out = tmp_path_factory.mktemp("toy_qa") / "bench"
    assert run(["qa", "toy", "--out", str(out), "--train-num", "6", "--test-num", "2"]) == 0
    return out


def run_in_two_processes(command: list[str], out: Path) -> tuple[Path, Path]:
    """Run `vans *command --out out/{a,b}` in two processes at once (both must exit 0) and
    return the two output folders: same seed, same bytes holds across processes."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    outs = out / "a", out / "b"
    jobs = [
        subprocess.Popen(
            [sys.executable, "-m", "vans.cli.main", *command, "--out", str(o)],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for o in outs
    ]
    assert [job.wait() for job in jobs] == [0, 0]
    return outs


def differing_files(a: Path, b: Path) -> list[str]:
    """The files under `a` whose bytes differ from (or are missing in) `b`'s."""
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files
    return [
        str(f)
        for f in files
        if not (b / f).is_file() or (a / f).read_bytes() != (b / f).read_bytes()
    ]
