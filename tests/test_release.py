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
from vans.evaluation.toy_truth import TEXT_CHECKS
from vans.recipes.toyworld import RELEASE_FILE, release_caption_figures

INFO = json.loads((TOYWORLD_CHECKPOINT / RELEASE_FILE).read_text())


def test_assets_fit_the_size_budget_as_safetensors() -> None:
    """The release and the toy bases together: under 50 MB of package assets."""
    files = [p for p in TOYWORLD_CHECKPOINT.parent.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 50 * 2**20
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl")]


def test_release_answers_the_test_split_as_recorded(tmp_path) -> None:
    """The recipe's in-distribution test split (regenerated from its recorded config): the
    shipped model's captions score the ROUGE-L and the caption truth figures its results
    table records."""
    split = INFO["test_splits"]["test"]
    config = ToyWorldConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in split.items()})
    samples = load_manifest(write_toyworld(config, tmp_path))
    assert len(samples) == INFO["recipe"]["test_num"]
    figures = release_caption_figures(TOYWORLD_CHECKPOINT, samples)
    assert figures["rouge_l"] == pytest.approx(INFO["rouge_l"], abs=1e-9)
    for check in TEXT_CHECKS:
        assert figures[check] == pytest.approx(INFO["truth"]["test"][check], abs=1e-9), check


def test_demo_defaults_to_the_shipped_checkpoint(tmp_path, capsys) -> None:
    """The README's main job: no arguments but the output directory."""
    assert run(["demo", "--out", str(tmp_path), "--scenes", "3"]) == 0
    out = capsys.readouterr().out
    assert str(TOYWORLD_CHECKPOINT) in (tmp_path / "index.html").read_text()
    check_demo_output(tmp_path, out)


@pytest.mark.parametrize("row", ["VANS (SFT)", "VANS (Joint-GRPO) (3 seeds)"])
def test_release_ships_its_table(row) -> None:
    assert f"| {row} |" in (TOYWORLD_CHECKPOINT / "results.md").read_text()
