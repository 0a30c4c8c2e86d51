"""The toy-world VANS checkpoint that ships with the package (`vans reproduce toyworld`'s
release): it answers held-out toy samples as well as recorded, and `vans demo` uses it."""

from __future__ import annotations

import json

import pytest

from test_demo import check_demo_output
from vans.assets import TOYWORLD_CHECKPOINT
from vans.cli.main import run
from vans.data.manifest import load_manifest
from vans.data.toyworld import ToyWorldConfig, write_toyworld
from vans.recipes.toyworld import RELEASE_FILE, release_caption_figures

INFO = json.loads((TOYWORLD_CHECKPOINT / RELEASE_FILE).read_text())


def test_release_fits_the_size_budget() -> None:
    files = [p for p in TOYWORLD_CHECKPOINT.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 50 * 2**20
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl")]  # safetensors


def test_release_answers_held_out_compositions_as_recorded(tmp_path) -> None:
    """The recipe's test split (regenerated from its recorded config): ROUGE-L of the
    shipped model's captions is at least the figure in its results table."""
    split = INFO["test_split"]
    config = ToyWorldConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in split.items()})
    assert config.held_out_mode == "only" and config.held_out
    samples = load_manifest(write_toyworld(config, tmp_path))
    assert len(samples) == INFO["recipe"]["test_num"]
    assert (
        release_caption_figures(TOYWORLD_CHECKPOINT, samples)["rouge_l"] >= INFO["rouge_l"] - 1e-9
    )
    assert INFO["rouge_l"] > 0.1  # an untrained model scores about 0.01


def test_demo_defaults_to_the_shipped_checkpoint(tmp_path, capsys) -> None:
    """The README's main job: no arguments but the output directory."""
    assert run(["demo", "--out", str(tmp_path), "--scenes", "3"]) == 0
    out = capsys.readouterr().out
    assert str(TOYWORLD_CHECKPOINT) in (tmp_path / "index.html").read_text()
    check_demo_output(tmp_path, out)


@pytest.mark.parametrize("row", ["VANS (SFT)", "VANS (Joint-GRPO) (3 seeds)"])
def test_release_ships_its_table(row) -> None:
    assert f"| {row} |" in (TOYWORLD_CHECKPOINT / "results.md").read_text()
