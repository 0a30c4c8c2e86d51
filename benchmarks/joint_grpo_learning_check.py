"""Learning check of Joint-GRPO on the toy world (issue 6, item 7).

Starts from the toy SFT model (WORKDIR/sft_vdm/final, made by benchmarks/sft_learning_check.py
or the toy recipe) and the toy embedder (WORKDIR/embedder), then:

* Stage 1 (configs/toy/joint_grpo_stage1.yaml) for `--stage1-steps`: held-out rewards
  (r_f, r_t1, r_v1 and r_t1 + r_v1) of G sampled answers per prompt, before and after;
* Stage 2 (configs/toy/joint_grpo_stage2.yaml) from the Stage-1 model for `--stage2-steps`:
  held-out r_v2, r_c2 and r_v2 + r_c2, and the mean frame-to-frame difference of the
  generated videos, before and after;
* the paper's ablation: Stage 2 again with r_c2's weight 0, reporting whether the videos
  become static (frame difference) while r_v2 rises.

Held-out numbers average `task.evaluate` over the first `--eval-prompts` prompts of the
eval manifest, prompt i with seed 1000 + i, so "before" and "after" see the same prompts and
noise. Run: `python benchmarks/joint_grpo_learning_check.py --workdir runs/toy`. Rerunning
reuses finished runs.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import torch
from rich.console import Console

from vans.training.config import load_config
from vans.training.joint_grpo_vdm import JointGRPOVDMConfig, build_joint_grpo_vdm_task
from vans.training.joint_grpo_vlm import JointGRPOVLMConfig, build_joint_grpo_vlm_task
from vans.training.loop import FINAL_DIR, nan_mean, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "toy"
console = Console()


@torch.no_grad()
def held_out(task, prompts: int) -> dict[str, float]:
    """Every scalar of `task.evaluate`, averaged over the first `prompts` eval prompts."""
    items = task.eval_dataset()
    task.model.eval()
    rows = [task.evaluate(task.model, task.collate([items[i]], [1000 + i])) for i in range(prompts)]
    return {key: nan_mean([float(r[key]) for r in rows]) for key in rows[0]}


def before_and_after(
    config_cls, build, config_file: Path, overrides: list[str], start: Path, prompts: int
) -> tuple[dict[str, float], dict[str, float], Path]:
    def measure(checkpoint: Path) -> dict[str, float]:
        config = load_config(config_cls, config_file, [*overrides, f"checkpoint={checkpoint}"])
        return held_out(build(config), prompts)

    before = measure(start)
    config = load_config(config_cls, config_file, [*overrides, f"checkpoint={start}"])
    train(build(config), config.train, resume=True, console=console)
    final = Path(config.train.out_dir) / FINAL_DIR
    return before, measure(final), final


def show(title: str, rows: list[tuple[str, dict[str, float]]], keys: list[str]) -> None:
    print(f"\n{title}")
    print("  " + f"{'model':<22}" + "".join(f"{k:>16}" for k in keys))
    for name, values in rows:
        cells = "".join(f"{values.get(k, math.nan):>16.4f}" for k in keys)
        print(f"  {name:<22}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("runs/toy"))
    parser.add_argument("--stage1-steps", type=int, default=120)
    parser.add_argument("--stage2-steps", type=int, default=30)
    parser.add_argument("--eval-prompts", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--stage2",
        nargs="*",
        default=["grpo.group_size=4", "train.batch_size=2", "flow.num_steps=6"],
        help="extra overrides of the Stage-2 runs (CPU budget)",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    w = args.workdir
    data = [
        f"train_manifest={w / 'data' / 'train' / 'manifest.jsonl'}",
        f"eval_manifest={w / 'data' / 'eval' / 'manifest.jsonl'}",
        f"embedder={w / 'embedder'}",
        "train.eval_every=0",
    ]
    s1_before, s1_after, s1_final = before_and_after(
        JointGRPOVLMConfig,
        build_joint_grpo_vlm_task,
        CONFIGS / "joint_grpo_stage1.yaml",
        [*data, f"train.out_dir={w / 'joint_grpo_stage1'}", f"train.steps={args.stage1_steps}"],
        w / "sft_vdm" / FINAL_DIR,
        args.eval_prompts,
    )
    for row in (s1_before, s1_after):
        row["r_t1+r_v1"] = row["reward/r_t1"] + row["reward/r_v1"]
    stage2 = [*data, *args.stage2, f"train.steps={args.stage2_steps}"]
    s2_before, s2_after, _ = before_and_after(
        JointGRPOVDMConfig,
        build_joint_grpo_vdm_task,
        CONFIGS / "joint_grpo_stage2.yaml",
        [*stage2, f"train.out_dir={w / 'joint_grpo_stage2'}"],
        s1_final,
        args.eval_prompts,
    )
    _, ablation, _ = before_and_after(
        JointGRPOVDMConfig,
        build_joint_grpo_vdm_task,
        CONFIGS / "joint_grpo_stage2.yaml",
        [*stage2, "grpo.reward_weights.r_c2=0", f"train.out_dir={w / 'joint_grpo_stage2_no_rc2'}"],
        s1_final,
        args.eval_prompts,
    )
    for row in (s2_before, s2_after, ablation):
        row["r_v2+r_c2"] = row["reward/r_v2"] + row["reward/r_c2"]

    show(
        f"Stage 1 ({args.stage1_steps} steps), {args.eval_prompts} held-out prompts",
        [("SFT", s1_before), ("Stage 1", s1_after)],
        ["reward/r_f", "reward/r_t1", "reward/r_v1", "r_t1+r_v1"],
    )
    show(
        f"Stage 2 ({args.stage2_steps} steps, {' '.join(args.stage2)}), same prompts",
        [("Stage 1", s2_before), ("Stage 2", s2_after), ("Stage 2 without r_c2", ablation)],
        ["reward/r_v2", "reward/r_c2", "r_v2+r_c2", "video/frame_diff", "anchor/skipped"],
    )


if __name__ == "__main__":
    main()
