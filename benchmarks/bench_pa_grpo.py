"""Step rate of PA-GRPO against GRPO on one config (configs/toy/pa_grpo.yaml), side by side.

The two runs differ only in the recipe's switches (`vans.recipes.videop2r.VARIANTS`): GRPO is
one advantage of the summed rewards on every token and no perception reward. Both start from
the same toy reasoner (random, `vans init-tiny --preset toy`, so answers run to
`max_new_tokens`, the slowest case) with a learning rate too small to move a weight, so every
step samples the same rollouts in both and the difference is what PA-GRPO adds: its rewards,
its per-process advantages and token masks. The variants alternate `--repeats` times, so a
machine that slows down slows both. The judge's own time is measured apart: the same number of
judgments per step as a step makes, on the benchmark's teacher observations (the offline toy
judge here; an HTTP judge's time is `bench_judge.py`'s).

Run: `python benchmarks/bench_pa_grpo.py [--steps 4 --repeats 2]` (steps after the first are
timed: the first decodes the videos).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/toy/pa_grpo.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from vans.cli.loading import quiet_model_libraries

    quiet_model_libraries()
    from vans.cli.main import run
    from vans.io import read_appended_records
    from vans.models.checkpoint import init_tiny
    from vans.recipes.videop2r import VARIANTS
    from vans.training.config import load_config
    from vans.training.loop import METRICS_FILE, train
    from vans.training.pa_grpo import PAGRPOConfig, build_pa_grpo_task
    from vans.videoqa.judge import build_judge
    from vans.videoqa.rows import load_rows

    with tempfile.TemporaryDirectory() as tmp:
        bench, checkpoint = Path(tmp) / "qa", Path(tmp) / "init"
        assert run(["qa", "toy", "--out", str(bench), "--train-num", "8", "--test-num", "2"]) == 0
        init_tiny(checkpoint, preset="toy")
        seconds: dict[str, list[float]] = {"pa_grpo": [], "grpo": []}
        for repeat in range(args.repeats):
            for variant in seconds:
                config = load_config(
                    PAGRPOConfig,
                    CONFIG,
                    [
                        f"reasoner={checkpoint / 'vlm'}",
                        f"train_rows=[{bench / 'train' / 'rows.json'}]",
                        "eval_rows=null",
                        f"train.out_dir={Path(tmp) / f'{variant}-{repeat}'}",
                        f"train.steps={args.steps}",
                        "train.lr=1e-30",  # > 0 as the config asks; no weight moves
                        f"train.save_every={args.steps}",
                        "train.log_every=1",
                        *VARIANTS[variant],
                    ],
                )
                train(build_pa_grpo_task(config), config.train)
                logged = read_appended_records(Path(config.train.out_dir) / METRICS_FILE)
                # The first step carries one-off work (decoding the videos, warming up).
                rates = [r["samples_per_s"] for r in logged if r["step"] > 1]
                seconds[variant].append(config.train.batch_size / statistics.mean(rates))

        rows = load_rows([bench / "train" / "rows.json"])
        per_step = config.grpo.group_size * config.train.batch_size
        judged = [rows[i % len(rows)] for i in range(per_step)]
        judge = build_judge(config.judge)
        began = time.perf_counter()
        judge.rewards(judged, [r.observation for r in judged])
        judge_s = time.perf_counter() - began

    pa, grpo = (min(s) for s in seconds.values())
    for name, best in (("GRPO", grpo), ("PA-GRPO", pa)):
        runs = _rounded(seconds[name.lower().replace("-", "_")])
        print(f"{name + ':':8} {best:6.2f} s/step (best of {args.repeats} runs: {runs})")
    print(f"judge ({config.judge.kind}): {judge_s:.4f} s for the {per_step} judgments of a step")
    print(
        f"PA-GRPO / GRPO step time: {pa / grpo:.3f}x; without the judge: "
        f"{(pa - judge_s) / grpo:.3f}x (target <= 1.2x)"
    )


def _rounded(values: list[float]) -> list[float]:
    return [round(v, 2) for v in values]


if __name__ == "__main__":
    main()
