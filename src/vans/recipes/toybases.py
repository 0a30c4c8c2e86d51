"""`vans reproduce toybases`: the toy world's foundation models, from nothing.

VANS adapts models that were pretrained elsewhere: Qwen2.5-VL-3B (it sees), Wan2.1-1.3B
(it draws) and CLIP ViT-B/32 (the judge of CLIP-V / CLIP-T and the video rewards). The
toy world has no such models, so this recipe makes their analogues, each trained from
random weights on toy clips that show every colour-shape composition (as a foundation
model has seen everything), and never on a next-event answer:

- the **reasoner base** (`vans train base-reasoner`): every parameter of the real
  Qwen2.5-VL class learns to perceive toy clips (objects, motion, positions, the rule);
- the **renderer base**: the Wan2.1 VAE as an autoencoder of toy clips that keeps their
  colours (`vans train vae`), then the DiT (with its umT5 text encoder) as a text-to-video
  model of described toy clips;
- the **judge**: the toy video-text embedder that stands in for CLIP.

They are assembled into one VANS checkpoint directory, `base/` (vans.yaml, vlm/, vdm/,
embedder/, training/<run>.yaml with every resolved config, base.json with the figures the
bases were accepted on: `vans.evaluation.bases` on the held-out set, `accepted`, and on
its first `CHECK_SAMPLES` samples, `check`). `vans reproduce toyworld` starts from it; the
package ships it as `vans.assets.TOYWORLD_BASE`. Every step is skipped when its output
exists and every stage resumes, so an interrupted run continues.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from vans.data.manifest import load_manifest
from vans.data.toyworld import ToyWorldConfig, write_toyworld
from vans.errors import VansError
from vans.evaluation.bases import base_figures
from vans.io import atomic_dir
from vans.models.checkpoint import SETTINGS_FILE, init_tiny
from vans.outputs import claim_output
from vans.recipes.steps import RecipeSteps
from vans.training.config import load_config
from vans.training.embedder import EmbedderTrainConfig, train_embedder
from vans.training.loop import FINAL_DIR
from vans.training.stages import run_stage

DEFAULT_CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "toy"
BASE_DIR = "base"
BASE_FILE = "base.json"
EMBEDDER_DIR = "embedder"
"""Where a base checkpoint keeps its judge (the toy CLIP)."""

RUNS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "reasoner": ("base-reasoner", "base_reasoner", ()),
    "reasoner_more": ("base-reasoner", "base_reasoner_more", ()),
    "reasoner_more2": ("base-reasoner", "base_reasoner_more", ("train.seed=2",)),
    "reasoner_shape": ("base-reasoner", "base_reasoner_shape", ()),
    "renderer_vae": ("vae", "base_renderer_vae", ()),
    "renderer_vae_long": ("vae", "base_renderer_vae_long", ()),
    "renderer_t2v": ("sft-vdm", "base_renderer_t2v", ()),
}
"""Run name -> (stage, config file in the configs directory, the run's own overrides)."""

CHAINS: dict[str, tuple[str, ...]] = {
    "reasoner": ("reasoner", "reasoner_more", "reasoner_more2", "reasoner_shape"),
    "renderer": ("renderer_vae", "renderer_vae_long", "renderer_t2v"),
}
"""Each base's runs in training order: the first starts from the random init checkpoint,
each next one from the previous one's final weights. The reasoner trains in four runs,
each a warm restart of the learning rate from the last: held-out multiple choice was still
rising when a cosine schedule ended (run 1: 55% at step 1800, 29% at step 200); the fourth
was added when the base was found blind to shape (docs/toybases.md). The VAE trains on
cheap 9-frame clips, then briefly on the 17 frames the renderer draws."""


CHECK_SAMPLES = 8
"""Held-out samples of the figures base.json records for a quick re-check (`check`): a test
recomputes them from the shipped weights."""


class BasesError(VansError):
    """A bases recipe that cannot run as asked."""


@dataclass
class ToyBasesConfig:
    """What `vans reproduce toybases` runs; the defaults made the shipped bases."""

    out: str = "runs/toybases"
    configs: str = str(DEFAULT_CONFIGS)
    """Directory of base_reasoner.yaml, base_renderer_vae.yaml, base_renderer_t2v.yaml."""
    train_num: int = 4000
    """Toy clips the bases train on (one per scene; every composition)."""
    val_num: int = 200
    judge_num: int = 2000
    """Samples the judge embedder trains on."""
    preset: str = "toy-base"
    """`init_tiny` preset of the random models the bases start from: the toy reasoner and
    the renderer base's sizes (`RENDERER_PRESETS`); "tiny" for tests."""
    overrides: dict[str, list[str]] = field(default_factory=dict)
    """KEY=VALUE overrides per run: embedder and the runs of `RUNS`."""
    reasoner_from: str | None = None
    """A base directory (e.g. the shipped one) whose reasoner and judge to keep, with their
    training configs and figures: only the renderer trains (its two hours of CPU, not the
    reasoner's), with any reasoner run the base lacks. None trains all of them."""
    continue_from: str | None = None
    """A base directory whose runs (those its base.json has figures for) count as done, with
    its judge: only the runs of `CHAINS` it lacks train, each chain continuing from that
    base's weights. How a run added to a chain reaches an existing base without the hours
    of the runs before it."""

    @property
    def kept_base(self) -> Path | None:
        """The base whose runs and judge this recipe keeps, if any."""
        kept = self.reasoner_from or self.continue_from
        return None if kept is None else Path(kept)

    def kept_runs(self) -> list[str]:
        """The runs taken from `kept_base` rather than trained."""
        base = self.kept_base
        if base is None:
            return []
        done = base_info(base)["figures"]
        # --reasoner-from keeps only the reasoner (the renderer trains anew).
        runs = CHAINS["reasoner"] if self.reasoner_from is not None else tuple(RUNS)
        return [run for run in runs if run in done]

    def check(self) -> None:
        if self.reasoner_from is not None and self.continue_from is not None:
            raise BasesError("pass --reasoner-from or --continue-from, not both")
        base = self.kept_base
        if base is not None and not (base / BASE_FILE).is_file():
            raise BasesError(
                f"{base}: not a toy base (no {BASE_FILE}); pass the base/ directory of "
                "`vans reproduce toybases` or vans.assets.TOYWORLD_BASE"
            )
        kept = set(self.kept_runs())
        for chain, runs in CHAINS.items():
            done = [run in kept for run in runs]
            if done != sorted(done, reverse=True):  # what a base has must begin its chain
                have = [run for run in runs if run in kept]
                raise BasesError(
                    f"{base}: its {chain} runs {have} are not the start of {list(runs)}"
                )
        known = {"embedder", *RUNS}
        unknown = sorted(set(self.overrides) - known)
        if unknown:
            raise BasesError(f"overrides for unknown runs {unknown}; known: {sorted(known)}")
        missing = [
            f"{config}.yaml"
            for _, config, _ in RUNS.values()
            if not (Path(self.configs) / f"{config}.yaml").is_file()
        ]
        if missing:
            raise BasesError(
                f"{self.configs}: missing stage configs {missing} (pass --configs, the "
                "configs/toy/ directory of a source checkout)"
            )


def base_splits(config: ToyBasesConfig) -> dict[str, ToyWorldConfig]:
    """The bases' toy sets: seeds apart from every set of `vans reproduce toyworld`."""
    return {
        "train": ToyWorldConfig(num=config.train_num, seed=10, multi_future=0.0),
        "val": ToyWorldConfig(num=config.val_num, seed=11, multi_future=0.0),
        "judge": ToyWorldConfig(num=config.judge_num, seed=3),
    }


class _Bases:
    def __init__(self, config: ToyBasesConfig, console: Console) -> None:
        self.config = config
        self.console = console
        self.out = Path(config.out)
        self.steps = RecipeSteps(self.out, console)
        self.step = self.steps.step
        self.timings = self.steps.timings

    def manifest(self, split: str) -> Path:
        return self.out / "data" / split / "manifest.jsonl"

    def data(self) -> None:
        for split, toy in base_splits(self.config).items():
            if split == "judge" and self.config.kept_base is not None:
                continue  # only the embedder trains on it
            if not self.manifest(split).is_file():
                with self.step(f"data/{split}"):
                    write_toyworld(toy, self.out / "data" / split)

    def embedder(self) -> Path:
        if self.config.kept_base is not None:
            return self.config.kept_base / EMBEDDER_DIR
        out = self.out / EMBEDDER_DIR
        if not out.is_dir():
            with self.step("embedder"):
                config = load_config(
                    EmbedderTrainConfig,
                    None,
                    [
                        f"data_dir={self.out / 'data' / 'judge'}",
                        f"out_dir={out}",
                        *self.config.overrides.get("embedder", []),
                    ],
                )
                train_embedder(config)
        return out

    def train(self, run: str, start: Path) -> Path:
        stage, config_file, own = RUNS[run]
        final = self.out / run / FINAL_DIR
        if (final / SETTINGS_FILE).is_file():
            return final
        overrides = [
            f"checkpoint={start}",
            f"train_manifest={self.manifest('train')}",
            f"eval_manifest={self.manifest('val')}",
            f"train.out_dir={self.out / run}",
            *own,
            *self.config.overrides.get(run, []),
        ]
        with self.step(run):
            run_stage(
                stage,
                Path(self.config.configs) / f"{config_file}.yaml",
                overrides,
                resume=True,
                console=self.console,
            )
        return final

    def assemble(self, reasoner: Path, renderer: Path, embedder: Path) -> Path:
        """One checkpoint: the reasoner base's vlm/, the renderer base's vdm/ and settings,
        the judge, every run's resolved config and the figures the bases reached."""
        target = self.out / BASE_DIR
        with atomic_dir(target) as tmp:
            shutil.copy(renderer / SETTINGS_FILE, tmp / SETTINGS_FILE)
            shutil.copytree(reasoner / "vlm", tmp / "vlm")
            shutil.copytree(renderer / "vdm", tmp / "vdm")
            shutil.copytree(embedder, tmp / EMBEDDER_DIR)
            (tmp / "training").mkdir()
            kept = self.config.kept_runs()
            figures, timings = {}, {k: round(v, 1) for k, v in self.timings.items()}
            if kept:
                source = self.config.kept_base
                previous = base_info(source)
                timings |= {run: previous["timings_s"][run] for run in kept}
            for run in RUNS:
                if run in kept:
                    shutil.copy(source / "training" / f"{run}.yaml", tmp / "training")
                    figures[run] = previous["figures"][run]
                else:
                    shutil.copy(self.out / run / "config.yaml", tmp / "training" / f"{run}.yaml")
                    figures[run] = final_eval(self.out / run / "metrics.jsonl")
            held_out = load_manifest(self.manifest("val"))
            info = {
                "accepted": base_figures(tmp, held_out),
                "check": base_figures(tmp, held_out[:CHECK_SAMPLES], t2v_samples=2),
                "figures": figures,
                "timings_s": timings,
                "recipe": json.loads(json.dumps(asdict(self.config), default=str)),
            }
            (tmp / BASE_FILE).write_text(json.dumps(info, indent=2) + "\n")
        return target


def final_eval(metrics: Path) -> dict[str, float]:
    """The last held-out figures (`eval_*`) a run logged."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    evaluated = [r for r in rows if any(k.startswith("eval_") for k in r)]
    if not evaluated:
        return {}
    last = evaluated[-1]
    return {"step": last["step"], **{k: v for k, v in last.items() if k.startswith("eval_")}}


def run_toybases(
    config: ToyBasesConfig, console: Console | None = None, *, overwrite: bool = False
) -> Path:
    """Run the recipe (see the module docstring); return the assembled base directory. An
    `out` holding a run with other settings is refused (`vans.outputs`) unless `overwrite`."""
    config.check()
    settings = {k: v for k, v in asdict(config).items() if k != "out"}
    claim_output(config.out, "reproduce toybases", settings, resumable=True, overwrite=overwrite)
    bases = _Bases(config, console or Console())
    bases.data()
    init = bases.out / "init"
    if not (init / SETTINGS_FILE).is_file():
        with bases.step("init"):
            init_tiny(init, preset=config.preset)
    embedder = bases.embedder()
    kept = config.kept_runs()
    finals = {}
    for base, runs in CHAINS.items():
        todo = [run for run in runs if run not in kept]
        start = init if len(todo) == len(runs) else config.kept_base
        for run in todo:
            start = bases.train(run, start)
        finals[base] = start
    return bases.assemble(finals["reasoner"], finals["renderer"], embedder)


def base_info(base: Path) -> dict[str, Any]:
    """base.json of a base directory."""
    return json.loads((Path(base) / BASE_FILE).read_text())
