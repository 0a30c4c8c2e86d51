"""`vans reproduce videop2r` in miniature (a few steps per run, the tiny reasoner): every
variant trains from the SFT model and is evaluated on both test splits, the table shows
them, and a rerun with one more seed trains only that seed."""

from __future__ import annotations

import json
import math

import pytest

from vans.cli.main import run
from vans.recipes.videop2r import NAMES, results_text

QUICK = [
    "--set", "sft_cot:train.steps=2", "--set", "sft_cot:train.warmup_steps=0",
    "--set", "sft_cot:train.eval_every=0", "--set", "sft_cot:train.batch_size=2",
    "--set", "pa_grpo:train.steps=1", "--set", "pa_grpo:train.batch_size=1",
    "--set", "pa_grpo:grpo.group_size=2", "--set", "pa_grpo:max_new_tokens=8",
]  # fmt: skip


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, tiny_checkpoint):
    out = tmp_path_factory.mktemp("videop2r") / "run"
    args = ["reproduce", "videop2r", "--out", str(out), "--train-num", "2", "--test-num", "1"]
    args += ["--variant", "pa_grpo", "--variant", "grpo", "--eval-max-new-tokens", "4", *QUICK]
    args += ["--set", f"sft_cot:reasoner={tiny_checkpoint / 'vlm'}"]
    assert run([*args, "--seed", "0"]) == 0
    return out, args


def test_every_variant_is_trained_and_evaluated(recipe) -> None:
    out, _ = recipe
    results = json.loads((out / "results.json").read_text())
    assert sorted(results) == ["test", "test_heldout"]
    assert list(results["test"]) == ["sft", "pa_grpo", "grpo"]
    config = json.loads(json.dumps(__import__("yaml").safe_load(
        (out / "seed0" / "grpo" / "config.yaml").read_text())))  # fmt: skip
    assert config["advantage"] == "sequence" and config["perception_reward"] is False
    assert config["reasoner"] == str(out / "sft_cot" / "final")
    text = (out / "results.md").read_text()
    assert "## test_heldout: held-out compositions" in text
    assert "| PA-GRPO | 1 |" in text and "| GRPO | 1 |" in text


@pytest.mark.slow
def test_a_rerun_with_another_seed_trains_only_it(recipe) -> None:
    out, args = recipe
    timings = json.loads((out / "timings.json").read_text())
    assert run([*args, "--seed", "0", "--seed", "1"]) == 0
    after = json.loads((out / "timings.json").read_text())
    assert {k: after[k] for k in timings if not k.startswith("eval")} == {
        k: v for k, v in timings.items() if not k.startswith("eval")
    }
    assert "seed1/pa_grpo" in after and (out / "seed1" / "grpo" / "final").is_dir()
    results = json.loads((out / "results.json").read_text())
    assert len(results["test"]["pa_grpo"]) == 2 and len(results["test"]["sft"]) == 1


def test_the_table_shows_mean_and_sample_std() -> None:
    runs = [
        {"accuracy": 0.5, "well_formed": 1.0, "by_type": {"numerical": 0.25}},
        {"accuracy": 0.7, "well_formed": 1.0, "by_type": {"numerical": math.nan}},
    ]
    text = results_text({"test": {"pa_grpo": runs}, "test_heldout": {}}, {"x": 60.0})
    # mean 60.0, sample std of (50, 70) = 14.1; a NaN type score is left out
    assert f"| {NAMES['pa_grpo']} | 2 | 60.0 ± 14.1 | 25.0 | 100.0 ± 0.0 |" in text
    assert "1 min of steps" in text
