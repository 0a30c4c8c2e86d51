"""`vans reproduce videop2r`: VideoP2R's method and ablations in miniature
(docs/videop2r.md#the-toy-recipe).

1. data: the toy video-QA benchmark (`videoqa.toy`: train, test, test_heldout);
2. SFT on the toy teacher's traces from the toy reasoner base (`sft-cot`);
3. per seed, per variant, RL from the SFT model (`pa-grpo` with the variant's switches):
   PA-GRPO, GRPO (one advantage of accuracy + format + length, no perception reward), and
   PA-GRPO without the perception reward and with one advantage for all tokens;
4. every model answers both test splits (greedy, `videoqa.evaluate`); the table gives each
   variant's accuracy as mean ± std over seeds, per problem type, and the format rate.

Rerunning resumes: finished runs and evaluations are kept. Seeds and variants are not part
of the recorded settings, so two processes may run different seeds or variants into one
`--out` at once (after the data and SFT exist), and a later run with more extends the table.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from vans.assets import TOYWORLD_BASE
from vans.errors import ConfigError
from vans.io import write_json, write_text
from vans.outputs import claim_output
from vans.recipes.steps import RecipeSteps
from vans.recipes.toyworld import DEFAULT_CONFIGS
from vans.training.loop import FINAL_DIR
from vans.training.stages import run_stage
from vans.videoqa.evaluate import EvalSettings, answer_rows, score_rows
from vans.videoqa.rows import QARow, load_rows
from vans.videoqa.toy import ROWS_FILE, toy_qa_splits, write_toy_benchmark

VARIANTS: dict[str, list[str]] = {
    "pa_grpo": [],
    "grpo": ["advantage=sequence", "perception_reward=false"],
    "no_perception_reward": ["perception_reward=false"],
    "one_advantage": ["separate_tokens=false"],
}
"""Each RL run's switches (`PAGRPOConfig`) over configs/toy/pa_grpo.yaml."""
NAMES = {
    "sft": "SFT on traces",
    "pa_grpo": "PA-GRPO",
    "grpo": "GRPO",
    "no_perception_reward": "PA-GRPO without the perception reward",
    "one_advantage": "PA-GRPO, one advantage for all tokens",
}
SPLITS = {"test": "in-distribution compositions", "test_heldout": "held-out compositions"}


@dataclass
class ToyP2RConfig:
    """The recipe's settings (`vans reproduce videop2r`)."""

    out: str = "runs/videop2r"
    configs: str = str(DEFAULT_CONFIGS)
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: tuple[str, ...] = tuple(VARIANTS)
    train_num: int = 300
    test_num: int = 60
    reasoner: str = str(TOYWORLD_BASE / "vlm")
    overrides: dict[str, list[str]] = field(default_factory=dict)
    """KEY=VALUE overrides per run: sft_cot, pa_grpo (every variant)."""
    eval_max_new_tokens: int = 160
    """Longest evaluated answer (a toy trace is ~110 tokens)."""

    def recorded(self) -> dict[str, Any]:
        """The settings a resumed run must share: seeds and variants only choose which
        runs exist, so they may differ (the table shows every run asked for)."""
        return {k: v for k, v in asdict(self).items() if k not in ("seeds", "variants")}


def run_videop2r(config: ToyP2RConfig, console: Console, *, overwrite: bool = False) -> Path:
    """The whole recipe (module docstring); returns results.md."""
    unknown = sorted(set(config.variants) - set(VARIANTS))
    if unknown:
        raise ConfigError(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    out = Path(config.out)
    claim_output(out, "reproduce videop2r", config.recorded(), resumable=True, overwrite=overwrite)
    steps = RecipeSteps(out, console)
    configs = Path(config.configs)
    data = out / "data"
    if not all((data / s / ROWS_FILE).is_file() for s in ("train", *SPLITS)):
        with steps.step("data"):
            write_toy_benchmark(data, toy_qa_splits(config.train_num, config.test_num))
    rows = {s: [str(data / s / ROWS_FILE)] for s in ("train", *SPLITS)}
    tests = {s: load_rows(rows[s]) for s in SPLITS}

    sft = out / "sft_cot"
    if not (sft / FINAL_DIR).is_dir():
        with steps.step("sft_cot"):
            run_stage(
                "sft-cot",
                configs / "sft_cot.yaml",
                [
                    f"reasoner={config.reasoner}",
                    f"train_rows={json.dumps(rows['train'])}",
                    f"eval_rows={json.dumps(rows['test'])}",
                    f"train.out_dir={sft}",
                    *config.overrides.get("sft_cot", []),
                ],
                resume=True,
                console=console,
            )
    models = {("sft", None): sft / FINAL_DIR}
    for seed in config.seeds:
        for variant in config.variants:
            run = out / f"seed{seed}" / variant
            models[(variant, seed)] = run / FINAL_DIR
            if (run / FINAL_DIR).is_dir():
                continue
            with steps.step(f"seed{seed}/{variant}"):
                run_stage(
                    "pa-grpo",
                    configs / "pa_grpo.yaml",
                    [
                        f"reasoner={sft / FINAL_DIR}",
                        f"train_rows={json.dumps(rows['train'])}",
                        "eval_rows=null",
                        f"train.out_dir={run}",
                        f"train.seed={seed}",
                        *VARIANTS[variant],
                        *config.overrides.get("pa_grpo", []),
                    ],
                    resume=True,
                    console=console,
                )
    results: dict[str, dict[str, list[dict[str, Any]]]] = {s: {} for s in SPLITS}
    for (variant, seed), model in models.items():
        name = variant if seed is None else f"seed{seed}-{variant}"
        for split, split_rows in tests.items():
            with steps.step(f"eval/{split}/{name}"):
                scores = evaluate_reasoner(
                    model, split_rows, out / "eval" / split / name, config.eval_max_new_tokens
                )
            results[split].setdefault(variant, []).append(scores)
    write_json(out / "results.json", results)
    return write_text(out / "results.md", results_text(results, steps.timings))


def evaluate_reasoner(
    model: Path, rows: Sequence[QARow], out: Path, max_new_tokens: int
) -> dict[str, Any]:
    """Greedy answers of the reasoner in `model` to `rows`, scored (resumable)."""
    from vans.models.vlm import Reasoner

    done = out / "scores.json"
    if done.is_file():
        return json.loads(done.read_text())
    reasoner = Reasoner.from_pretrained(model)
    settings = EvalSettings(max_frames=16, max_new_tokens=max_new_tokens)
    scores = score_rows(rows, answer_rows(reasoner, rows, settings, out))
    write_json(done, scores)
    return scores


def results_text(
    results: dict[str, dict[str, list[dict[str, Any]]]], timings: dict[str, float]
) -> str:
    """results.md: per test split, each variant's accuracy (mean ± std over its seeds),
    per problem type, and its format rate."""
    lines = ["# VideoP2R in miniature: the toy video-QA benchmark", ""]
    for split, variants in results.items():
        types = sorted({t for runs in variants.values() for r in runs for t in r["by_type"]})
        head = ["model", "seeds", "accuracy", *types, "well formed"]
        lines += [f"## {split}: {SPLITS[split]}", "", "| " + " | ".join(head) + " |"]
        lines.append("|" + " --- |" * len(head))
        for variant, runs in variants.items():
            cells = [NAMES[variant], str(len(runs)), _cell([r["accuracy"] for r in runs])]
            cells += [_cell([r["by_type"].get(t, math.nan) for r in runs]) for t in types]
            cells.append(_cell([r["well_formed"] for r in runs]))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    minutes = sum(timings.values()) / 60
    lines.append(f"Accuracy in %, mean ± sample std over seeds; {minutes:.0f} min of steps.")
    return "\n".join(lines) + "\n"


def _cell(values: list[float]) -> str:
    values = [100 * v for v in values if not math.isnan(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"
