"""`vans reproduce toyworld`: the whole VANS method, in miniature, on the toy world.

From the toy foundation models to the paper's Table 2 on a CPU:

0. the bases (`vans reproduce toybases`, shipped as `vans.assets.TOYWORLD_BASE`): a
   reasoner that perceives toy clips, a renderer that draws them from text, and the judge
   embedder that stands in for CLIP (metrics and the RL stages' rewards). They play the
   parts of Qwen2.5-VL-3B, Wan2.1-1.3B and CLIP ViT-B/32: VANS adapts them, never remakes
   them;
1. data: train / val / two test toy sets. Train and val never show the held-out
   colour-shape pairs; "test" draws new scenes of the compositions training shows, and in
   "test_heldout" every answer's object is a held-out pair;
2. SFT of the reasoner (LoRA, as the paper), SFT of the renderer with reference frames
   (VANS) and without them (the cascade baseline's text-only renderer, "Qwen-Wan");
3. Joint-GRPO Stage 1 then Stage 2 from the SFT model, once per seed;
4. evaluation of every variant on both test splits (greedy captions, per-sample video
   seeds; the toy world's truth metric beside the paper's), the results tables (RL rows:
   mean ± std over the seeds), reward curves, GIF strips, and a release directory: the
   seed-0 Joint-GRPO checkpoint with its tables and the ROUGE-L it scores on the test split
   (what the shipped checkpoint's test checks).

Every step is skipped when its output exists and every training stage resumes from its
checkpoints, so an interrupted run continues where it stopped. The stage configs are the
YAML files of `configs/toy/`; the recipe only sets their paths and seeds (plus any
`overrides` given to it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from vans.assets import TOYWORLD_BASE
from vans.data.manifest import load_manifest
from vans.data.preview import sample_answer_strip
from vans.data.schema import VNEPSample
from vans.data.toyworld import ToyWorldConfig, write_toyworld
from vans.data.toyworld.config import HELD_OUT
from vans.data.video import read_video, write_gif
from vans.errors import VansError
from vans.evaluation.embedders import load_embedder
from vans.evaluation.runner import (
    EvalResult,
    EvalSettings,
    PipelinePredictor,
    evaluate,
    sample_folder,
    sample_truth,
)
from vans.evaluation.text_metrics import DEFAULT_ROUGE_VARIANT, rouge_l
from vans.evaluation.toy_truth import TEXT_CHECKS
from vans.io import atomic_dir, write_json, write_text
from vans.models.checkpoint import SETTINGS_FILE, VANSSettings, load_settings, write_settings
from vans.models.pipeline import VANSPipeline
from vans.outputs import claim_output
from vans.recipes.steps import RecipeSteps
from vans.recipes.toybases import EMBEDDER_DIR
from vans.training.loop import FINAL_DIR
from vans.training.stages import run_stage, train_command

DEFAULT_CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "toy"
"""configs/toy/ of a source checkout (the recipe's stage configs)."""

RELEASE_DIR = "release"
RELEASE_FILE = "release.json"

RL_STAGES = ("joint_grpo_stage1", "joint_grpo_stage2")
JOINT_GRPO = "VANS (Joint-GRPO)"
"""The variant the release is taken from."""
ABLATION_RUN = "joint_grpo_stage2_no_rc2"
"""Stage 2 without r_c2 (the paper's ablation), run for the first seed."""


class RecipeError(VansError):
    """A recipe that cannot run as asked (missing configs, bad overrides)."""


@dataclass
class ToyRecipeConfig:
    """What `vans reproduce toyworld` runs. The defaults are the recipe whose results ship."""

    out: str = "runs/reproduce"
    """Output directory: data, runs, evaluations, figures, strips, the table, the release."""
    configs: str = str(DEFAULT_CONFIGS)
    """Directory of the stage configs (sft_vlm.yaml, sft_vdm.yaml, joint_grpo_stage1.yaml,
    joint_grpo_stage2.yaml)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of the RL stages (each seed: Stage 1, then Stage 2 from it). The first seed's
    Joint-GRPO model is the release, chosen before any test number exists."""
    bases: str = str(TOYWORLD_BASE)
    """The toy foundation models to start from (`vans reproduce toybases`'s base/: the
    reasoner and renderer bases and the judge embedder); default: the shipped ones."""
    held_out: tuple[str, ...] = HELD_OUT
    train_num: int = 1600
    """Training samples. At 400 the SFT stages saw each sample 8 (reasoner) and 30 (renderer)
    times and named the moving objects in 47% of test answers; toy samples cost nothing."""
    val_num: int = 64
    """Held-out samples the training stages report eval losses and rewards on."""
    test_num: int = 64
    """Samples of each test split (in-distribution and held-out compositions)."""
    overrides: dict[str, list[str]] = field(default_factory=dict)
    """Extra KEY=VALUE overrides per run: keys sft_vlm, sft_vdm, sft_vdm_text_only,
    joint_grpo_stage1, joint_grpo_stage2."""
    strips: int = 6
    """Test samples shown as GIF strips (input | ground truth | each variant)."""
    jobs: int = 1
    """Jobs run at once. 1: one after another in this process. More: jobs that do not
    depend on each other (the two SFT-VDM runs, the seeds' RL stages, the ablation, the
    evaluation of every finished model) run side by side, training as `vans train`
    subprocesses with `threads // jobs` torch threads and their logs in their run
    directories, evaluations in this process with as many threads; a stage's result does
    not depend on `jobs` beyond float rounding of the thread count."""
    threads: int | None = None
    """torch threads of the whole recipe (None: torch's choice)."""

    def check(self) -> None:
        known = {"sft_vlm", "sft_vdm", "sft_vdm_text_only", *RL_STAGES}
        unknown = sorted(set(self.overrides) - known)
        if unknown:
            raise RecipeError(f"overrides for unknown runs {unknown}; known: {sorted(known)}")
        if not self.seeds:
            raise RecipeError("seeds: at least one seed is needed")
        if self.jobs < 1:
            raise RecipeError(f"jobs must be >= 1, got {self.jobs}")
        missing = [
            f
            for f in ("sft_vlm", "sft_vdm", *RL_STAGES)
            if not (Path(self.configs) / f"{f}.yaml").is_file()
        ]
        if missing:
            raise RecipeError(
                f"{self.configs}: missing stage configs {[m + '.yaml' for m in missing]} "
                "(pass --configs, the configs/toy/ directory of a source checkout)"
            )
        bases = Path(self.bases)
        if not (bases / SETTINGS_FILE).is_file() or not (bases / EMBEDDER_DIR).is_dir():
            raise RecipeError(
                f"{bases}: not a toy base directory (vans.yaml, vlm/, vdm/, {EMBEDDER_DIR}/); "
                "pass --bases the base/ of `vans reproduce toybases`"
            )


TEST_SPLITS = {"test": "in-distribution compositions", "test_heldout": "held-out compositions"}
"""The two test splits and what they test."""


def data_splits(config: ToyRecipeConfig) -> dict[str, ToyWorldConfig]:
    """The recipe's toy sets (see the module doc): train and val never show the held-out
    colour-shape pairs; "test" is drawn like them (new scenes of seen compositions);
    every answer of "test_heldout" shows a held-out pair."""
    held = tuple(config.held_out)
    return {
        "train": ToyWorldConfig(num=config.train_num, seed=0, held_out=held),
        "val": ToyWorldConfig(num=config.val_num, seed=1, held_out=held),
        "test": ToyWorldConfig(num=config.test_num, seed=2, held_out=held, multi_future=0.5),
        "test_heldout": ToyWorldConfig(
            num=config.test_num, seed=4, held_out=held, held_out_mode="only", multi_future=0.5
        ),
    }


EVAL_MAX_NEW_TOKENS = 128
"""Room for the whole answer (a toy answer is ~70 tokens), as in training (`TOY_SETTINGS`)."""


def evaluation_settings(settings: VANSSettings) -> VANSSettings:
    """How every variant is evaluated (and the release answers): the checkpoint's settings
    with greedy captions of up to `EVAL_MAX_NEW_TOKENS` tokens."""
    sampling = dataclasses.replace(
        settings.sampling, do_sample=False, max_new_tokens=EVAL_MAX_NEW_TOKENS
    )
    return dataclasses.replace(settings, sampling=sampling)


@dataclass
class Variant:
    """One row of the table: a model, trained once or once per seed."""

    name: str
    short: str
    """Its label in the GIF strips (a 64-pixel panel)."""
    checkpoints: list[Path]


class _Inline:
    """The executor of `jobs` = 1: each job runs when submitted, in this thread (so Ctrl-C
    stops it and the order is the dependency order)."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


class _Jobs:
    """Jobs on executors, each submitted once the job it needs is done (no worker is held
    waiting). After the first failure no new job starts (running ones finish) and every job
    not yet started fails with it, so `result()` of any of them raises the first error."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        """Where a job runs unless `after` is told otherwise."""
        self.failure: BaseException | None = None

    def start(self, job: Callable[..., Any], *args: Any) -> Future:
        return self._submit(self.pool, job, args, Future())

    def after(self, needed: Future, job: Callable[[Any], Any], pool: Any = None) -> Future:
        """`job(needed.result())`, on `pool` (default: `self.pool`)."""
        result: Future = Future()
        needed.add_done_callback(
            lambda done: (
                self._fail(result, done.exception())
                if done.exception() is not None
                else self._submit(pool or self.pool, job, (done.result(),), result)
            )
        )
        return result

    def _submit(self, pool: Any, job: Callable[..., Any], args: tuple, result: Future) -> Future:
        if self.failure is not None:
            return self._fail(result, self.failure)
        try:
            submitted = pool.submit(job, *args)
        except Exception as exc:  # the job itself, run inline (jobs = 1)
            return self._fail(result, exc)
        submitted.add_done_callback(
            lambda done: (
                self._fail(result, done.exception())
                if done.exception() is not None
                else result.set_result(done.result())
            )
        )
        return result

    def _fail(self, result: Future, exc: BaseException) -> Future:
        self.failure = self.failure or exc
        result.set_exception(exc)
        return result


class _Recipe:
    def __init__(self, config: ToyRecipeConfig, console: Console) -> None:
        self.config = config
        self.console = console
        self.out = Path(config.out)
        self.configs = Path(config.configs)
        self.steps = RecipeSteps(self.out, console)
        self.step = self.steps.step
        self.timings = self.steps.timings
        self.job_threads = max(1, (config.threads or torch.get_num_threads()) // config.jobs)
        """torch threads of each of the `jobs` at once (no core is asked for twice)."""

    def eval_dir(self, checkpoint: Path, split: str) -> Path:
        """out/eval/<split>/seed0-joint_grpo_stage1 for out/seed0/joint_grpo_stage1/final."""
        return self.out / "eval" / split / "-".join(checkpoint.relative_to(self.out).parts[:-1])

    def manifest(self, split: str) -> Path:
        return self.out / "data" / split / "manifest.jsonl"

    def data(self) -> None:
        for split, toy in data_splits(self.config).items():
            if not self.manifest(split).is_file():
                with self.step(f"data/{split}"):
                    write_toyworld(toy, self.out / "data" / split)

    @property
    def bases(self) -> Path:
        return Path(self.config.bases)

    @property
    def embedder(self) -> Path:
        """The judge: the bases' toy embedder, standing in for CLIP (metrics and rewards)."""
        return self.bases / EMBEDDER_DIR

    def train(
        self,
        stage: str,
        config_file: str,
        run: str,
        start: Path,
        extra: list[str] = (),
        overrides_of: str | None = None,
    ) -> Path:
        """Train one stage from `start` into out/<run>, unless it has finished already; the
        recipe's overrides of run `overrides_of` (default: the run's own name) apply."""
        run_dir = self.out / run
        final = run_dir / FINAL_DIR
        if (final / SETTINGS_FILE).is_file():
            return final
        key = overrides_of or run.split("/")[-1]
        overrides = [
            f"checkpoint={start}",
            f"train_manifest={self.manifest('train')}",
            f"eval_manifest={self.manifest('val')}",
            f"train.out_dir={run_dir}",
            *extra,
            *self.config.overrides.get(key, []),
        ]
        if stage.startswith("joint-grpo"):
            overrides.append(f"embedder={self.embedder}")
        config = self.configs / f"{config_file}.yaml"
        with self.step(run):
            if self.config.jobs == 1:
                run_stage(stage, config, overrides, resume=True, console=self.console)
            else:
                self._train_subprocess(stage, config, overrides, run_dir)
        return final

    def _train_subprocess(
        self, stage: str, config: Path, overrides: list[str], run_dir: Path
    ) -> None:
        """`vans train STAGE --resume` in a process of its own (one of `jobs` at once)."""
        threads = str(self.job_threads)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        command = [sys.executable, "-m", "vans.cli.main", "train", *train_command(stage)]
        run_dir.mkdir(parents=True, exist_ok=True)
        log = run_dir / "train.log"
        with log.open("a") as out:
            done = subprocess.run(
                [*command, "--config", str(config), "--resume", *overrides],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        if done.returncode != 0:
            lines = log.read_text(errors="replace").splitlines()
            errors = [line.strip(" │") for line in lines if "error" in line.lower()]
            why = (errors or lines or ["no output"])[-1]
            raise RecipeError(f"{run_dir}: training failed ({why}); see {log}")

    def train_and_evaluate(self) -> tuple[list[Variant], dict[str, list[list[EvalResult]]]]:
        """Train every stage and evaluate every model on both test splits, each job started
        as soon as what it needs exists: with `jobs` > 1 the evaluations of finished models
        run beside the training still going on, so no core waits for the slowest chain."""
        first = self.config.seeds[0]
        parallel = self.config.jobs > 1
        threads = torch.get_num_threads()
        torch.set_num_threads(self.job_threads)  # for the evaluations here (same results)
        # Evaluations run in this process one at a time, beside the training subprocesses:
        # loading a model (transformers' meta-device init) and the seeded RNG blocks of
        # captioning are process-wide, so two at once in threads could mix them up.
        with (
            ThreadPoolExecutor(self.config.jobs) if parallel else _Inline() as pool,
            ThreadPoolExecutor(1) if parallel else _Inline() as evaluations_pool,
        ):
            jobs = _Jobs(pool)
            after = jobs.after
            sft_vlm = jobs.start(self.train, "sft-vlm", "sft_vlm", "sft_vlm", self.bases)
            sft = after(sft_vlm, lambda c: self.train("sft-vdm", "sft_vdm", "sft_vdm", c))
            cascade = after(
                sft_vlm,
                lambda c: self.train(
                    "sft-vdm", "sft_vdm", "sft_vdm_text_only", c, ["num_reference_frames=0"]
                ),
            )
            stage1 = {
                seed: after(sft, self._rl("joint-grpo-1", seed)) for seed in self.config.seeds
            }
            stage2 = {s: after(stage1[s], self._rl("joint-grpo-2", s)) for s in self.config.seeds}
            # The paper's ablation: Stage 2 without r_c2 (the first seed), where static
            # videos can win r_v2 (watch video/frame_diff).
            no_rc2 = after(
                stage1[first],
                lambda c: self.train(
                    "joint-grpo-2",
                    "joint_grpo_stage2",
                    f"seed{first}/{ABLATION_RUN}",
                    c,
                    [f"train.seed={first}", "grpo.reward_weights.r_c2=0"],
                    overrides_of="joint_grpo_stage2",
                ),
            )
            rows = [
                ("Cascade (SFT VLM + text-only VDM)", "cascade", [cascade]),
                ("VANS (SFT)", "SFT", [sft]),
                ("VANS (Stage 1 only)", "stage 1", list(stage1.values())),
                (JOINT_GRPO, "J-GRPO", list(stage2.values())),
                ("VANS (Joint-GRPO, Stage 2 without r_c2)", "no r_c2", [no_rc2]),
            ]
            evaluations = {
                split: [
                    [
                        after(
                            model,
                            lambda c, split=split, name=name: self.evaluate(c, split, name),
                            evaluations_pool,
                        )
                        for model in models
                    ]
                    for name, _, models in rows
                ]
                for split in TEST_SPLITS
            }
            # Waited for inside `with`: a pool that is shutting down takes no new jobs.
            tables = {
                split: [[e.result() for e in row] for row in table]
                for split, table in evaluations.items()
            }
            variants = [Variant(n, short, [m.result() for m in ms]) for n, short, ms in rows]
        torch.set_num_threads(threads)
        return variants, tables

    def _rl(self, stage: str, seed: int) -> Callable[[Path], Path]:
        """Joint-GRPO Stage 1 (from the SFT model) or Stage 2 (from Stage 1) of one seed."""
        config_file = RL_STAGES[0] if stage == "joint-grpo-1" else RL_STAGES[1]
        run = f"seed{seed}/{config_file}"
        return lambda start: self.train(stage, config_file, run, start, [f"train.seed={seed}"])

    def evaluate(self, checkpoint: Path, split: str, name: str) -> EvalResult:
        """One model's results on one test split."""
        samples = load_manifest(self.manifest(split))
        folder = self.eval_dir(checkpoint, split)
        pipeline = VANSPipeline.from_checkpoint(checkpoint)
        pipeline.settings = evaluation_settings(pipeline.settings)
        with self.step(f"eval/{split}/{folder.name}"):
            result = evaluate(
                samples,
                PipelinePredictor(pipeline, seed=0),
                folder,
                EvalSettings(source=str(checkpoint), embedder=str(self.embedder)),
                embedder=load_embedder(self.embedder),
                name=name,
            )
        if result.num_failed:
            raise RecipeError(
                f"{result.num_failed} {split} samples failed for {checkpoint}; see "
                f"{folder / 'failures.jsonl'}"
            )
        return result

    def figures(self) -> None:
        """Reward curves of the RL stages, one line per seed."""
        panels = {
            "joint_grpo_stage1": ["reward/r_f", "reward/r_t1", "reward/r_v1", "kl"],
            "joint_grpo_stage2": ["reward/r_v2", "reward/r_c2", "video/frame_diff", "kl"],
        }
        for stage, keys in panels.items():
            runs = {
                f"seed {s}": self.out / f"seed{s}" / stage / "metrics.jsonl"
                for s in self.config.seeds
            }
            plot_seed_curves(runs, keys, self.out / "figures" / f"{stage}.png", stage)
        first = self.out / f"seed{self.config.seeds[0]}"
        plot_seed_curves(
            {
                "with r_c2": first / "joint_grpo_stage2" / "metrics.jsonl",
                "without r_c2": first / ABLATION_RUN / "metrics.jsonl",
            },
            ["reward/r_v2", "reward/r_c2", "video/frame_diff", "eval_video/frame_diff"],
            self.out / "figures" / f"{ABLATION_RUN}.png",
            "Stage 2 with and without r_c2 (static-video hacking shows as frame_diff -> 0)",
        )

    def strips(self, variants: list[Variant], split: str = "test") -> None:
        samples = load_manifest(self.manifest(split))[: self.config.strips]
        settings = load_settings(variants[0].checkpoints[0])
        size = (settings.height, settings.width)
        labels = ["input", "truth", *[v.short for v in variants]]
        rows = []
        for sample in samples:
            answers = [
                read_video(
                    sample_folder(self.eval_dir(v.checkpoints[0], split), sample.id) / "answer.mp4"
                )
                for v in variants
            ]
            strip = sample_answer_strip(sample, [a.frames for a in answers], labels, size)
            write_gif(self.out / "strips" / f"{sample.id}.gif", strip, settings.output_fps)
            rows.append(strip)
        write_gif(self.out / "strips" / "grid.gif", torch.cat(rows, dim=1), settings.output_fps)

    def release(
        self, variants: list[Variant], tables: dict[str, list[list[EvalResult]]], text: str
    ) -> Path:
        """The first seed's Joint-GRPO checkpoint (greedy captions) with the tables it
        belongs to and the resolved config of every run that made it (training/<run>.yaml;
        the bases' own under training/base-*.yaml)."""
        joint = next(v for v in variants if v.name == JOINT_GRPO)
        checkpoint = joint.checkpoints[0]
        seed = self.config.seeds[0]
        lineage = ["sft_vlm", "sft_vdm", *(f"seed{seed}/{stage}" for stage in RL_STAGES)]
        target = self.out / RELEASE_DIR
        with atomic_dir(target) as tmp:
            shutil.copytree(checkpoint, tmp, dirs_exist_ok=True)
            (tmp / "training").mkdir()
            for run in lineage:
                name = run.replace("/", "-")
                shutil.copy(self.out / run / "config.yaml", tmp / "training" / f"{name}.yaml")
            for config in sorted((self.bases / "training").glob("*.yaml")):
                shutil.copy(config, tmp / "training" / f"base-{config.name}")
            write_settings(tmp, evaluation_settings(load_settings(checkpoint)))
            (tmp / "results.md").write_text(text)
            splits = data_splits(self.config)
            row = {split: tables[split][variants.index(joint)][0] for split in TEST_SPLITS}
            info = {
                "model": f"{joint.name}, seed {seed}",
                "test_split": splits["test"].to_dict(),
                "rouge_l": row["test"].metrics["rouge_l"],
                "rouge_l_variant": DEFAULT_ROUGE_VARIANT,
                "metrics": {split: r.metrics for split, r in row.items()},
                "well_formed": {split: r.well_formed for split, r in row.items()},
                "truth": {split: r.truth for split, r in row.items()},
                "test_splits": {split: splits[split].to_dict() for split in TEST_SPLITS},
                "recipe": _jsonable(asdict(self.config)),
            }
            (tmp / RELEASE_FILE).write_text(json.dumps(info, indent=2) + "\n")
        return target


RESUME_FREE = ("out", "jobs", "threads")
"""Recipe fields a resumed run may change: where it runs and how many processes it uses."""


def run_toyworld(
    config: ToyRecipeConfig, console: Console | None = None, *, overwrite: bool = False
) -> Path:
    """Run the recipe (see the module docstring); return the path of results.md. An `out`
    holding a run with other settings is refused (`vans.outputs`) unless `overwrite`."""
    config.check()
    settings = {k: v for k, v in asdict(config).items() if k not in RESUME_FREE}
    claim_output(config.out, "reproduce toyworld", settings, resumable=True, overwrite=overwrite)
    recipe = _Recipe(config, console or Console())
    start = time.perf_counter()
    recipe.data()
    variants, tables = recipe.train_and_evaluate()
    recipe.figures()
    recipe.strips(variants)
    text = results_text(tables, config, recipe.timings)
    write_text(recipe.out / "results.md", text)
    write_json(
        recipe.out / "results.json",
        {
            split: [[_jsonable(asdict(r)) for r in results] for results in table]
            for split, table in tables.items()
        },
    )
    recipe.release(variants, tables, text)
    recipe.console.print(
        f"recipe done in {time.perf_counter() - start:.0f} s (this call); "
        f"{recipe.out / 'results.md'}"
    )
    return recipe.out / "results.md"


def results_text(
    tables: dict[str, list[list[EvalResult]]], config: ToyRecipeConfig, timings: dict[str, float]
) -> str:
    from vans.evaluation.report import results_markdown

    minutes = sum(timings.values()) / 60
    text = (
        "# VANS in miniature: the toy world\n\n"
        f"From the toy bases ({config.bases}). Two test splits of {config.test_num} samples: "
        f"in-distribution compositions, and held-out ones (every answer shows one of "
        f"{', '.join(config.held_out)}, which no training sample shows). Captions are greedy "
        f"(up to {EVAL_MAX_NEW_TOKENS} tokens), videos use each sample's own seed. RL rows: "
        f"mean ± std over seeds {list(config.seeds)}. Judge: the bases' toy embedder. "
        f"Total compute of the recipe's steps: {minutes:.1f} min.\n\n"
    )
    for split, what in TEST_SPLITS.items():
        text += f"## {split}: {what}\n\n" + results_markdown(tables[split]) + "\n"
    return text


def plot_seed_curves(runs: dict[str, Path], keys: list[str], out: Path, title: str) -> None:
    """One panel per metric key, one line per labelled run (rows of metrics.jsonl that
    have the key)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for label, file in runs.items():
        rows = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
        for ax, key in zip(axes, keys, strict=True):
            points = [(r["step"], r[key]) for r in rows if key in r]
            if points:
                ax.plot(*zip(*points, strict=True), label=label, lw=1)
    for ax, key in zip(axes, keys, strict=True):
        ax.set_title(key)
        ax.set_xlabel("step")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def release_caption_figures(release: Path, samples: list[VNEPSample]) -> dict[str, float]:
    """The release's captions of `samples` (its own settings), answered as the evaluation
    answers them: their mean ROUGE-L and the rate of each text truth check, i.e. the
    table's `rouge_l` and caption truth figures for this checkpoint."""
    predict = PipelinePredictor(VANSPipeline.from_checkpoint(release), seed=0, videos=False)
    captions = [predict(s).caption for s in samples]
    figures = {
        "rouge_l": statistics.fmean(
            rouge_l(c, s.answer, DEFAULT_ROUGE_VARIANT)
            for c, s in zip(captions, samples, strict=True)
        )
    }
    checks = [sample_truth(s, c, None) for c, s in zip(captions, samples, strict=True)]
    for check in TEXT_CHECKS:
        figures[check] = statistics.fmean(float(bool(c[check])) for c in checks)
    return figures


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
