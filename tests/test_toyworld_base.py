"""The toy bases that ship with the package (`vans reproduce toybases`' base/): they load as
a VANS checkpoint, fit the asset budget, and reproduce the figures base.json records."""

from __future__ import annotations

import dataclasses
import math

import pytest

from vans.assets import TOYWORLD_BASE
from vans.data.manifest import load_manifest
from vans.data.toyworld import write_toyworld
from vans.evaluation.bases import base_figures
from vans.models.checkpoint import load_checkpoint
from vans.recipes.toybases import (
    CHECK_SAMPLES,
    EMBEDDER_DIR,
    RUNS,
    ToyBasesConfig,
    base_info,
    base_splits,
)

pytestmark = pytest.mark.skipif(
    not (TOYWORLD_BASE / "base.json").is_file(), reason="the toy bases are not shipped"
)


def test_bases_fit_the_asset_budget_as_safetensors() -> None:
    files = [p for p in TOYWORLD_BASE.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 25 * 2**20  # half of the 50 MB budget
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl")]


def test_bases_load_as_plain_models_with_their_configs() -> None:
    reasoner, renderer, settings = load_checkpoint(TOYWORLD_BASE)
    assert reasoner.peft_model is None  # a base, not a fine-tune
    assert settings.num_reference_frames == 0  # the renderer base is text-to-video
    assert renderer.transformer.config.num_layers >= 1
    assert (TOYWORLD_BASE / EMBEDDER_DIR).is_dir()
    assert sorted(p.stem for p in (TOYWORLD_BASE / "training").glob("*.yaml")) == sorted(RUNS)


def test_bases_reproduce_their_recorded_figures(tmp_path) -> None:
    """The first held-out samples, regenerated from the recorded recipe: the shipped weights
    give the figures base.json recorded for them when they were assembled."""
    info = base_info(TOYWORLD_BASE)
    split = dataclasses.replace(
        base_splits(ToyBasesConfig(**info["recipe"]))["val"], num=CHECK_SAMPLES
    )
    samples = load_manifest(write_toyworld(split, tmp_path))
    figures = base_figures(TOYWORLD_BASE, samples, t2v_samples=2)
    assert figures.keys() == info["check"].keys()
    for key, value in figures.items():
        recorded = info["check"][key]
        # PSNR moves in the 4th digit with the thread count (float sums in another order);
        # the shares are counts of objects and questions, exact.
        tolerance = 0.01 if key == "vae_psnr" else 1e-9
        assert (math.isnan(recorded) and math.isnan(value)) or value == pytest.approx(
            recorded, abs=tolerance
        ), key
    assert info["accepted"].keys() == figures.keys()  # the full held-out set's, same figures
