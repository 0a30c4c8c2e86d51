"""Peak memory of one Joint-GRPO Stage-2 step against the number of trained timesteps: the
whole step in one autograd graph (the formulation before issue 14: `task.loss` then one
backward) against the per-step backward the loop now runs (`task.backward`: each trained
SDE step of each prompt backpropagated as soon as it is scored).

Setup (in a temporary directory): the "toy" preset checkpoint (`init_tiny`: a 4-layer DiT),
rendering `--frames` frames at `--size`x`--size` with 6 reference latents and CFG 5; G =
`--group` rollouts of one toy-world prompt with `--sde-steps` SDE steps; the trained steps
are `timestep_fraction = k / sde-steps` of them, k in `--trained` (1, 2, 4, 8); beta 0.004
(the KL reference means are part of the step). The anchor is the reasoner's first caption.

Each (formulation, k) runs in a fresh Python process, so that memory freed by one
measurement cannot be reused by the next; a thread samples the process's resident set size
(RSS, /proc/self/statm) every millisecond during the step, and the figure is the peak over
the RSS just before the step (what the step itself adds: rollouts, graphs, gradients).
The child processes run with `MALLOC_MMAP_THRESHOLD_=131072` (glibc's initial value, held
fixed): by default glibc raises that threshold each time a large block is freed, so the
memory of a freed graph stays in the heap and RSS then reports the allocator's high-water
mark (fragmentation) rather than the tensors alive; with it fixed, every block above 128 KiB
goes back to the system when freed. Both formulations are measured side by side in one run;
the "after" column must be flat within 10% from k = 1 to k = 8.

Run: `python benchmarks/bench_stage2_memory.py [--trained 1 2 4 8] [--size 96]` (a few
minutes on one CPU thread).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

MODES = {"loss": "whole graph (before)", "backward": "per-step backward (after)"}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """The largest RSS seen while the block runs, sampled every millisecond."""

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def child(args: argparse.Namespace) -> None:
    """One measurement: build the task, take one step in `args.mode`, print JSON."""
    import dataclasses

    from vans.data.manifest import load_manifest
    from vans.data.toyworld import ToyWorldConfig, write_toyworld
    from vans.evaluation.toy_embedder import ToyEmbedder, build_vocab
    from vans.models.checkpoint import init_tiny, load_checkpoint, save_checkpoint
    from vans.training.joint_grpo_vdm import JointGRPOVDMConfig, build_joint_grpo_vdm_task

    try:  # the configs' home since issue 14; before it, training.joint_grpo / rl.flow_grpo
        from vans.rl.config import FlowGRPOConfig, GRPOConfig
    except ImportError:
        from vans.rl.flow_grpo import FlowGRPOConfig
        from vans.training.joint_grpo import GRPOConfig

    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp())
    reasoner, renderer, settings = load_checkpoint(init_tiny(root / "toy", preset="toy"))
    settings = dataclasses.replace(
        settings, num_frames=args.frames, height=args.size, width=args.size
    )
    checkpoint = save_checkpoint(root / "ckpt", reasoner, renderer, settings)
    size = (args.size, args.size)
    toy = ToyWorldConfig(num=2, seed=0, size=size, input_frames=33, target_frames=args.frames)
    manifest = write_toyworld(toy, root / "data")
    captions = [s.answer for s in load_manifest(manifest)]
    ToyEmbedder.untrained(build_vocab(captions)).save_pretrained(root / "embedder")
    config = JointGRPOVDMConfig(
        checkpoint=str(checkpoint),
        train_manifest=str(manifest),
        embedder=str(root / "embedder"),
        grpo=GRPOConfig(group_size=args.group),
        flow=FlowGRPOConfig(num_steps=args.sde_steps, timestep_fraction=args.k / args.sde_steps),
        anchor_min_rouge=0.0,
        anchor_tries=1,
    )
    task = build_joint_grpo_vdm_task(config)
    task.model.train()
    batch = task.collate([task.train_dataset()[0]], [0])
    with PeakRSS() as peak:
        if args.mode == "loss":
            task.loss(task.model, batch)["loss"].backward()
        else:
            task.backward(task.model, batch, 1.0)
    print(json.dumps({"peak_mb": peak.peak - peak.start}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trained", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--sde-steps", type=int, default=8)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=list(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(f"load average {os.getloadavg()[0]:.2f}, torch threads {args.threads}")
    print(
        f"Stage-2 step, toy DiT, G={args.group}, {args.frames} frames at {args.size}x"
        f"{args.size}, {args.sde_steps} SDE steps, CFG 5, beta 0.004: peak RSS added by the "
        "step (MB), one fresh process per figure"
    )
    common = [
        f"--{name.replace('_', '-')}={getattr(args, name)}"
        for name in ("sde_steps", "group", "frames", "size", "threads")
    ]
    figures: dict[str, dict[int, float]] = {mode: {} for mode in args.modes}
    for k in args.trained:
        for mode in args.modes:
            out = subprocess.run(
                [sys.executable, __file__, "--child", f"--mode={mode}", f"--k={k}", *common],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"},
            ).stdout
            figures[mode][k] = json.loads(out.strip().splitlines()[-1])["peak_mb"]
    header = "trained steps  " + "  ".join(f"{MODES[m]:>26}" for m in args.modes)
    print(header)
    for k in args.trained:
        print(f"{k:>13}  " + "  ".join(f"{figures[m][k]:>23.0f} MB" for m in args.modes))
    first, last = args.trained[0], args.trained[-1]
    for mode in args.modes:
        growth = figures[mode][last] / figures[mode][first]
        print(f"{MODES[mode]}: {last} steps / {first} step = {growth:.2f}x")
    if len(args.modes) == 2:
        saved = figures["loss"][last] / figures["backward"][last]
        print(f"at {last} trained steps the whole graph needs {saved:.2f}x the per-step peak")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
