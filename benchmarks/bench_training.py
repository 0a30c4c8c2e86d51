"""Training throughput and peak memory of the toy SFT configs, through `vans.training.loop.train`.

For configs/toy/sft_vlm.yaml and configs/toy/sft_vdm.yaml it writes a tiny checkpoint and a
small toy-world data set into a temporary directory, points the config at them, and trains
a few steps, each config in its own process so that the peak resident memory (ru_maxrss)
is that config's alone. It prints samples/s over the training steps (eval and checkpoint
writing excluded), split into the first epoch (which carries one-off work such as the VDM
stage's latent caching) and the later ones, and the peak RSS after building the task and
at the end of training.

Run: `python benchmarks/bench_training.py [--steps 6] [--num 32]`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "sft-vlm": ROOT / "configs/toy/sft_vlm.yaml",
    "sft-vdm": ROOT / "configs/toy/sft_vdm.yaml",
}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_one(stage: str, data: Path, steps: int) -> None:
    """Train one stage for `steps` steps in this process and print its figures."""
    from vans.cli.loading import quiet_model_libraries

    quiet_model_libraries()
    from vans.training.config import load_config
    from vans.training.loop import METRICS_FILE, train

    if stage == "sft-vlm":
        from vans.training.sft_vlm import SFTVLMConfig as Config
        from vans.training.sft_vlm import build_sft_vlm_task as build
    else:
        from vans.training.sft_vdm import SFTVDMConfig as Config
        from vans.training.sft_vdm import build_sft_vdm_task as build
    with tempfile.TemporaryDirectory() as out:
        config = load_config(
            Config,
            CONFIGS[stage],
            [
                f"checkpoint={data / 'checkpoint'}",
                f"train_manifest={data / 'train' / 'manifest.jsonl'}",
                "eval_manifest=null",
                f"train.out_dir={out}",
                f"train.steps={steps}",
                "train.warmup_steps=0",
                f"train.save_every={steps}",
                "train.eval_every=0",
                "train.log_every=1",
            ],
        )
        start = time.perf_counter()
        task = build(config)
        build_s, build_rss = time.perf_counter() - start, peak_rss_mib()
        result = train(task, config.train)
        rows = [json.loads(line) for line in (Path(out) / METRICS_FILE).read_text().splitlines()]
    batch, size = config.train.batch_size, len(task.train_dataset())
    first = [r for r in rows if r["step"] * batch <= size]  # steps within the first epoch
    later = rows[len(first) :]
    print(
        f"  {stage}: {result.samples_per_s:7.2f} samples/s over {steps} steps of {batch} "
        f"(loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f})\n"
        f"    first epoch {_mean_rate(first)}, later epochs {_mean_rate(later)} samples/s\n"
        f"    peak RSS {build_rss:.0f} MiB after building the task ({build_s:.1f} s), "
        f"{peak_rss_mib():.0f} MiB after training"
    )


def _mean_rate(rows: list[dict]) -> str:
    """Samples/s over metrics rows of one step each (harmonic: total samples / total time)."""
    if not rows:
        return "-"
    return f"{len(rows) / sum(1 / r['samples_per_s'] for r in rows):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=6, help="Optimizer steps per config.")
    parser.add_argument("--num", type=int, default=16, help="Toy-world training samples.")
    parser.add_argument("--one", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.one, args.data, args.steps)
        return

    from vans.cli.loading import quiet_model_libraries
    from vans.data.toyworld import ToyWorldConfig, write_toyworld
    from vans.models.checkpoint import init_tiny

    quiet_model_libraries()

    print(f"toy SFT training, {args.steps} steps per config, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        init_tiny(data / "checkpoint", seed=0)
        write_toyworld(ToyWorldConfig(num=args.num, seed=0), data / "train")
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        for stage in CONFIGS:
            command = [sys.executable, __file__, "--one", stage, "--data", str(data)]
            subprocess.run([*command, "--steps", str(args.steps)], check=True, env=env)


if __name__ == "__main__":
    main()
