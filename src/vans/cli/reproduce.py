"""`vans reproduce toyworld`: the whole method in miniature, from nothing to the table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vans.cli.apps import SEEDS, command_group
from vans.cli.loading import quiet_model_libraries
from vans.recipes.toybases import ToyBasesConfig
from vans.recipes.toyworld import DEFAULT_CONFIGS, RecipeError, ToyRecipeConfig

reproduce_app = command_group("Reproduce the paper's method end to end (in miniature, on CPU).")
console = Console(soft_wrap=True)
_DEFAULTS = ToyRecipeConfig()
Threads = Annotated[
    int | None, typer.Option(min=1, help="torch threads (default: torch's choice).")
]
Overwrite = Annotated[
    bool, typer.Option(help="Start again in an --out that holds a run with other settings.")
]
_BASE_DEFAULTS = ToyBasesConfig()


@reproduce_app.command("toyworld")
def toyworld(
    out: Annotated[Path, typer.Option(help="Output directory (rerun to resume).")] = Path(
        _DEFAULTS.out
    ),
    configs: Annotated[
        Path, typer.Option(help="Directory of the stage configs.")
    ] = DEFAULT_CONFIGS,
    seed: Annotated[
        list[int] | None,
        typer.Option(
            "--seed", **SEEDS, help="RL seed (repeat); the first seed's model is the release."
        ),
    ] = None,
    override: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="RUN:KEY=VALUE override of one run's config, e.g. "
            "--set joint_grpo_stage1:train.steps=50 or --set embedder:steps=100 (repeat).",
        ),
    ] = None,
    train_num: Annotated[int, typer.Option(min=1, help="Training samples.")] = _DEFAULTS.train_num,
    val_num: Annotated[int, typer.Option(min=1, help="Validation samples.")] = _DEFAULTS.val_num,
    test_num: Annotated[
        int, typer.Option(min=1, help="Samples of each test split (in-distribution, held-out).")
    ] = _DEFAULTS.test_num,
    bases: Annotated[
        Path,
        typer.Option(help="Toy bases to start from (vans reproduce toybases' base/)."),
    ] = Path(_DEFAULTS.bases),
    threads: Threads = None,
    jobs: Annotated[
        int,
        typer.Option(
            min=1,
            help="Jobs at once: independent training stages (subprocesses sharing --threads) "
            "and the evaluations of finished models.",
        ),
    ] = _DEFAULTS.jobs,
    overwrite: Overwrite = False,
) -> None:
    """From the toy bases: generate toy data, train every stage (SFT of both models,
    Joint-GRPO Stage 1 and 2 per seed, a cascade baseline), evaluate all variants on
    in-distribution and held-out compositions and write results.md, reward curves, GIF
    strips and a release checkpoint."""
    quiet_model_libraries()
    import torch

    from vans.recipes.toyworld import run_toyworld

    if threads is not None:
        torch.set_num_threads(threads)
    overrides = _run_overrides(override)
    config = ToyRecipeConfig(
        out=str(out),
        configs=str(configs),
        seeds=tuple(seed) if seed else _DEFAULTS.seeds,
        train_num=train_num,
        val_num=val_num,
        test_num=test_num,
        bases=str(bases),
        overrides=overrides,
        jobs=jobs,
        threads=threads,
    )
    results = run_toyworld(config, console, overwrite=overwrite)
    console.print(results.read_text(), markup=False, highlight=False)


@reproduce_app.command("toybases")
def toybases(
    out: Annotated[Path, typer.Option(help="Output directory (rerun to resume).")] = Path(
        _BASE_DEFAULTS.out
    ),
    configs: Annotated[
        Path, typer.Option(help="Directory of the base stage configs.")
    ] = DEFAULT_CONFIGS,
    override: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="RUN:KEY=VALUE override of one run's config (runs: embedder, reasoner, "
            "reasoner_more, reasoner_more2, reasoner_shape, renderer_vae, renderer_vae_long, "
            "renderer_t2v), "
            "e.g. --set reasoner:train.steps=100 (repeat).",
        ),
    ] = None,
    train_num: Annotated[
        int, typer.Option(min=1, help="Training clips.")
    ] = _BASE_DEFAULTS.train_num,
    reasoner_from: Annotated[
        Path | None,
        typer.Option(
            help="Keep this base's reasoner and judge (e.g. the shipped one, printed by "
            "`python -c 'import vans.assets as a; print(a.TOYWORLD_BASE)'`): train the "
            "renderer only."
        ),
    ] = None,
    continue_from: Annotated[
        Path | None,
        typer.Option(
            help="Keep every run this base has, and its judge: train only the runs it "
            "lacks (e.g. reasoner_shape for the shipped base), each from its weights."
        ),
    ] = None,
    threads: Threads = None,
    overwrite: Overwrite = False,
) -> None:
    """Train the toy world's foundation models from random weights: a reasoner that
    perceives toy clips, a renderer that draws them from text, and the judge embedder;
    writes OUT/base, the directory `vans reproduce toyworld --bases` starts from (the
    package ships one)."""
    quiet_model_libraries()
    import torch

    from vans.recipes.toybases import run_toybases

    if threads is not None:
        torch.set_num_threads(threads)
    config = ToyBasesConfig(
        out=str(out),
        configs=str(configs),
        train_num=train_num,
        overrides=_run_overrides(override),
        reasoner_from=None if reasoner_from is None else str(reasoner_from),
        continue_from=None if continue_from is None else str(continue_from),
    )
    base = run_toybases(config, console, overwrite=overwrite)
    console.print(f"toy bases: {base}")


@reproduce_app.command("videop2r")
def videop2r(
    out: Annotated[Path, typer.Option(help="Output directory (rerun to resume).")] = Path(
        "runs/videop2r"
    ),
    configs: Annotated[
        Path, typer.Option(help="Directory of the stage configs (sft_cot, pa_grpo).")
    ] = DEFAULT_CONFIGS,
    seed: Annotated[
        list[int] | None, typer.Option("--seed", **SEEDS, help="RL seed (repeat).")
    ] = None,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            "--variant",
            help="RL runs (repeat): pa_grpo, grpo, no_perception_reward, one_advantage.",
        ),
    ] = None,
    override: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="RUN:KEY=VALUE override (runs: sft_cot, pa_grpo), e.g. "
            "--set pa_grpo:train.steps=20 (repeat).",
        ),
    ] = None,
    train_num: Annotated[int, typer.Option(min=1, help="Toy samples of the train split.")] = 300,
    test_num: Annotated[int, typer.Option(min=1, help="Toy samples of each test split.")] = 60,
    eval_max_new_tokens: Annotated[
        int, typer.Option(min=1, help="Longest evaluated answer, in tokens.")
    ] = 160,
    threads: Threads = None,
    overwrite: Overwrite = False,
) -> None:
    """VideoP2R in miniature: the toy video-QA benchmark, SFT on the toy teacher's traces,
    then per seed PA-GRPO, GRPO and the ablations, every model evaluated on both test splits
    (results.md: accuracy mean ± std over seeds)."""
    quiet_model_libraries()
    import torch

    from vans.recipes.videop2r import VARIANTS, ToyP2RConfig, run_videop2r

    if threads is not None:
        torch.set_num_threads(threads)
    overrides = _run_overrides(override)
    unknown = sorted(set(overrides) - {"sft_cot", "pa_grpo"})
    if unknown:
        raise RecipeError(f"--set for unknown runs {unknown}; known: ['pa_grpo', 'sft_cot']")
    config = ToyP2RConfig(
        out=str(out),
        configs=str(configs),
        seeds=tuple(seed) if seed else (0, 1, 2),
        variants=tuple(variant) if variant else tuple(VARIANTS),
        train_num=train_num,
        test_num=test_num,
        overrides=overrides,
        eval_max_new_tokens=eval_max_new_tokens,
    )
    results = run_videop2r(config, console, overwrite=overwrite)
    console.print(results.read_text(), markup=False, highlight=False)


def _run_overrides(items: list[str] | None) -> dict[str, list[str]]:
    """--set RUN:KEY=VALUE options, grouped by run."""
    overrides: dict[str, list[str]] = {}
    for item in items or []:
        run, sep, assignment = item.partition(":")
        if not sep or "=" not in assignment:
            raise RecipeError(f"--set {item!r}: expected RUN:KEY=VALUE")
        overrides.setdefault(run, []).append(assignment)
    return overrides
