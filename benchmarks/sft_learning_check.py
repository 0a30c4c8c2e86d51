"""Learning check of the two SFT stages on the toy world (issue 5, item 7).

Runs the toy recipe (configs/toy/sft_vlm.yaml, then configs/toy/sft_vdm.yaml) in WORKDIR and
prints, for the model before and after each stage:

* SFT-VLM: the held-out loss, and ROUGE-L of greedy captions against the ground truth;
* SFT-VDM: the held-out flow-matching loss (fixed noise), and "right object": for scenes with
  two futures (same input video, different questions), how often the clip generated from
  one future's caption is closer (MSE of VAE latents) to that future's ground-truth clip
  than to the other one's. Chance is 50%; the captions are the ground truth, so only
  the VDM is tested.

Run: `python benchmarks/sft_learning_check.py --workdir runs/learning_check` (tens of
minutes on two CPU cores). Rerunning reuses the data, the checkpoint and finished runs.
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from pathlib import Path

import torch
from rich.console import Console

from vans.data.manifest import load_manifest
from vans.data.toyworld import ToyWorldConfig, write_toyworld
from vans.data.video import read_video
from vans.evaluation.text_metrics import DEFAULT_ROUGE_VARIANT, corpus_rouge_l
from vans.models.checkpoint import init_tiny, load_checkpoint
from vans.models.pipeline import load_input
from vans.models.vlm import SamplingConfig
from vans.training.config import load_config
from vans.training.loop import FINAL_DIR, train
from vans.training.sft_vdm import SFTVDMConfig, build_sft_vdm_task
from vans.training.sft_vlm import SFTVLMConfig, build_sft_vlm_task

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "toy"
console = Console()


@torch.no_grad()
def held_out_loss(task, batch_size: int = 8) -> float:
    """Mean loss over the task's eval items, sample j drawing from seed j."""
    items = task.eval_dataset()
    task.model.eval()
    total = 0.0
    for start in range(0, len(items), batch_size):
        chunk = list(range(start, min(start + batch_size, len(items))))
        batch = task.collate([items[j] for j in chunk], chunk)
        total += float(task.sample_losses(task.model, batch).sum())
    return total / len(items)


def caption_rouge(checkpoint: Path, manifest: Path) -> float:
    reasoner, _, settings = load_checkpoint(checkpoint)
    greedy = SamplingConfig(do_sample=False, max_new_tokens=256)
    captions, references = [], []
    for sample in load_manifest(manifest):
        frames = read_video(sample.input.path, fps=settings.vlm_fps).frames
        captions.append(reasoner.predict(frames, [sample.question], greedy)[0].caption)
        references.append(sample.answer)
    return corpus_rouge_l(captions, references)


def right_object_rate(checkpoint: Path, manifest: Path) -> float:
    """See the module docstring; every pair of futures of a scene counts both ways. Compared
    in the VAE's latent space, where the DiT works: the tiny VAE is random, so its decoded
    pixels do not resemble the toy world."""
    _, renderer, settings = load_checkpoint(checkpoint)
    scenes = defaultdict(list)
    for sample in load_manifest(manifest):
        scenes[sample.input].append(sample)
    hits = trials = 0
    size = (settings.height, settings.width)
    for futures in scenes.values():
        if len(futures) < 2:
            continue
        clip = load_input(settings, video=futures[0].input.path)
        generated = renderer.generate_latents(
            [s.answer for s in futures],
            reference_frames=clip.vdm_frames,
            num_reference=settings.num_reference_frames,
            num_frames=settings.num_frames,
            height=settings.height,
            width=settings.width,
            steps=settings.steps,
            guidance_scale=settings.guidance_scale,
            negative_prompt=settings.negative_prompt,
        )
        truths = [
            renderer.encode_video(
                read_video(s.target.path, num_frames=settings.num_frames, size=size).frames
            )[0]
            for s in futures
        ]
        for i, latents in enumerate(generated):
            errors = [float((latents - truth).square().mean()) for truth in truths]
            for j in range(len(futures)):
                if j != i:
                    hits += errors[i] < errors[j]
                    trials += 1
    return hits / trials


def prepare(workdir: Path) -> dict[str, Path]:
    paths = {
        "init": workdir / "init",
        "train": workdir / "data" / "train",
        "eval": workdir / "data" / "eval",
        "pairs": workdir / "data" / "pairs",
    }
    if not paths["init"].exists():
        init_tiny(paths["init"])
    data = {
        "train": ToyWorldConfig(num=400, seed=0),
        "eval": ToyWorldConfig(num=64, seed=1),
        # Every scene with a hypothetical variant emits both futures.
        "pairs": ToyWorldConfig(num=48, seed=2, multi_future=1.0),
    }
    for name, config in data.items():
        if not (paths[name] / "manifest.jsonl").exists():
            write_toyworld(config, paths[name])
    return paths


def before_and_after(
    stage_cls, build, config_file: Path, overrides: list[str], start: Path, steps: int, score
) -> tuple[list[tuple[str, float, float]], Path]:
    """Held-out loss and `score(checkpoint)` of the stage's starting checkpoint, then train the
    stage for `steps` and measure its final checkpoint the same way."""

    def measure(name: str, checkpoint: Path) -> tuple[str, float, float]:
        task = build(load_config(stage_cls, config_file, [*overrides, f"checkpoint={checkpoint}"]))
        return name, held_out_loss(task), score(checkpoint)

    rows = [measure("untrained", start)]
    config = load_config(
        stage_cls, config_file, [*overrides, f"checkpoint={start}", f"train.steps={steps}"]
    )
    train(build(config), config.train, resume=True, console=console)
    final = Path(config.train.out_dir) / FINAL_DIR
    rows.append(measure("SFT", final))
    return rows, final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("runs/learning_check"))
    parser.add_argument("--vlm-steps", type=int, default=400)
    parser.add_argument("--vdm-steps", type=int, default=400)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (more than the free cores is slow)"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    paths = prepare(args.workdir)
    data = [
        f"train_manifest={paths['train'] / 'manifest.jsonl'}",
        f"eval_manifest={paths['eval'] / 'manifest.jsonl'}",
    ]
    eval_manifest = paths["eval"] / "manifest.jsonl"
    pairs_manifest = paths["pairs"] / "manifest.jsonl"

    vlm_rows, vlm_final = before_and_after(
        SFTVLMConfig,
        build_sft_vlm_task,
        CONFIGS / "sft_vlm.yaml",
        [*data, f"train.out_dir={args.workdir / 'sft_vlm'}"],
        paths["init"],
        args.vlm_steps,
        lambda checkpoint: caption_rouge(checkpoint, eval_manifest),
    )
    vdm_rows, _ = before_and_after(
        SFTVDMConfig,
        build_sft_vdm_task,
        CONFIGS / "sft_vdm.yaml",
        [*data, f"train.out_dir={args.workdir / 'sft_vdm'}"],
        vlm_final,
        args.vdm_steps,
        lambda checkpoint: right_object_rate(checkpoint, pairs_manifest),
    )

    print(f"\nSFT-VLM ({args.vlm_steps} steps), {eval_manifest}")
    print(f"  {'model':<10} {'held-out loss':>14} {'ROUGE-L (' + DEFAULT_ROUGE_VARIANT + ')':>18}")
    for name, loss, rouge in vlm_rows:
        print(f"  {name:<10} {loss:>14.4f} {rouge:>18.4f}")
    print(f"\nSFT-VDM ({args.vdm_steps} steps), held-out loss on {eval_manifest}")
    print(f"  {'model':<10} {'held-out loss':>14} {'right object':>18}")
    for name, loss, rate in vdm_rows:
        print(f"  {name:<10} {loss:>14.4f} {rate:>17.1%}")


if __name__ == "__main__":
    main()
