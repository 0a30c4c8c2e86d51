"""Learning check of the SFT stages on the toy world (issue 5, item 7).

Runs the toy recipe in WORKDIR (a `--preset toy` checkpoint, configs/toy/vae.yaml,
configs/toy/sft_vlm.yaml, configs/toy/sft_vdm.yaml; a toy embedder trained on a separate
toy set as the judge) and prints, for the model before and after each stage:

* VAE: held-out reconstruction PSNR of full-length (17-frame) clips;
* SFT-VLM: the held-out loss, and ROUGE-L of greedy captions against the ground truth;
* SFT-VDM: the held-out flow-matching loss (fixed noise); CLIP-V (toy embedder) of the clip
  rendered from each held-out sample's ground-truth caption against its ground-truth clip;
  and "right object": for scenes with two futures (same input video, different
  questions), how often the clip rendered from one future's caption has a higher CLIP-V
  with that future's ground truth than with the other one's (chance: 50%). The captions
  are the ground truth, so only the renderer is tested.

Run: `python benchmarks/sft_learning_check.py --workdir runs/toy` (tens of minutes on two
CPU cores; the layout is the toy configs', so the runs are theirs). Rerunning reuses the
data, the checkpoints and finished runs.
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
from vans.evaluation.embedders import VideoTextEmbedder, load_embedder
from vans.evaluation.text_metrics import DEFAULT_ROUGE_VARIANT, corpus_rouge_l
from vans.evaluation.video_metrics import clip_v, psnr
from vans.models.checkpoint import init_tiny, load_checkpoint
from vans.models.pipeline import load_input
from vans.models.vdm import video_to_unit
from vans.models.vlm import SamplingConfig
from vans.training.config import load_config
from vans.training.embedder import EmbedderTrainConfig, train_embedder
from vans.training.loop import FINAL_DIR, train
from vans.training.sft_vdm import SFTVDMConfig, build_sft_vdm_task
from vans.training.sft_vlm import SFTVLMConfig, build_sft_vlm_task
from vans.training.vae import VAEConfig, build_vae_task

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


@torch.no_grad()
def reconstruction_psnr(task) -> float:
    """Mean PSNR (dB) of the VAE's reconstruction (posterior mode) of the eval clips."""
    vae = task.renderer.vae.eval()
    values = []
    for item in task.eval_dataset():
        x = video_to_unit(item["frames"]).unsqueeze(0)
        values.append(float(psnr(vae.decode(vae.encode(x).latent_dist.mode()).sample, x)))
    return sum(values) / len(values)


def render_truths(checkpoint: Path, samples) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per sample, the clip the renderer draws from its input and ground-truth caption (the
    checkpoint's settings, seed 0) and the ground-truth clip, uint8 (T, H, W, 3)."""
    _, renderer, settings = load_checkpoint(checkpoint)
    size = (settings.height, settings.width)
    out = []
    for sample in samples:
        clip = load_input(settings, video=sample.input.path)
        video = renderer.render(
            [sample.answer],
            reference_frames=clip.vdm_frames,
            settings=settings,
        )[0]
        truth = read_video(sample.target.path, num_frames=settings.num_frames, size=size).frames
        out.append((video, truth))
    return out


def mean_clip_v(embedder: VideoTextEmbedder, checkpoint: Path, manifest: Path) -> float:
    pairs = render_truths(checkpoint, load_manifest(manifest))
    return sum(clip_v(embedder, video, truth) for video, truth in pairs) / len(pairs)


def right_object_rate(embedder: VideoTextEmbedder, checkpoint: Path, manifest: Path) -> float:
    """See the module docstring; every pair of futures of a scene counts both ways."""
    scenes = defaultdict(list)
    for sample in load_manifest(manifest):
        scenes[sample.input].append(sample)
    hits = trials = 0
    for futures in scenes.values():
        if len(futures) < 2:
            continue
        pairs = render_truths(checkpoint, futures)
        for i, (video, _) in enumerate(pairs):
            scores = [clip_v(embedder, video, truth) for _, truth in pairs]
            for j in range(len(futures)):
                if j != i:
                    hits += scores[i] > scores[j]
                    trials += 1
    return hits / trials


def prepare(workdir: Path) -> dict[str, Path]:
    paths = {
        "init": workdir / "init",
        "train": workdir / "data" / "train",
        "eval": workdir / "data" / "eval",
        "pairs": workdir / "data" / "pairs",
        "judge_data": workdir / "data" / "judge",
        "judge": workdir / "embedder",
    }
    if not paths["init"].exists():
        init_tiny(paths["init"], preset="toy")
    data = {
        "train": ToyWorldConfig(num=400, seed=0),
        "eval": ToyWorldConfig(num=64, seed=1),
        # Every scene with a hypothetical variant emits both futures.
        "pairs": ToyWorldConfig(num=48, seed=2, multi_future=1.0),
        # The judge (toy embedder) learns from scenes the renderer never sees.
        "judge_data": ToyWorldConfig(num=2000, seed=3),
    }
    for name, config in data.items():
        if not (paths[name] / "manifest.jsonl").exists():
            write_toyworld(config, paths[name])
    if not paths["judge"].exists():
        train_embedder(
            EmbedderTrainConfig(data_dir=str(paths["judge_data"]), out_dir=str(paths["judge"]))
        )
    return paths


def before_and_after(
    stage_cls, build, config_file: Path, overrides: list[str], start: Path, steps: int, score
) -> tuple[list[tuple[str, float, float]], Path]:
    """Held-out loss and `score(checkpoint, task)` of the stage's starting checkpoint, then
    train the stage for `steps` and measure its final checkpoint the same way."""

    def measure(name: str, checkpoint: Path) -> tuple[str, float, float]:
        task = build(load_config(stage_cls, config_file, [*overrides, f"checkpoint={checkpoint}"]))
        return name, held_out_loss(task), score(checkpoint, task)

    rows = [measure("untrained", start)]
    config = load_config(
        stage_cls, config_file, [*overrides, f"checkpoint={start}", f"train.steps={steps}"]
    )
    train(build(config), config.train, resume=True, console=console)
    final = Path(config.train.out_dir) / FINAL_DIR
    rows.append(measure("trained", final))
    return rows, final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("runs/learning_check"))
    parser.add_argument("--vae-steps", type=int, default=1500)
    parser.add_argument("--vlm-steps", type=int, default=400)
    parser.add_argument("--vdm-steps", type=int, default=1500)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (more than the free cores is slow)"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    paths = prepare(args.workdir)
    judge = load_embedder(paths["judge"])
    data = [
        f"train_manifest={paths['train'] / 'manifest.jsonl'}",
        f"eval_manifest={paths['eval'] / 'manifest.jsonl'}",
    ]
    eval_manifest = paths["eval"] / "manifest.jsonl"
    pairs_manifest = paths["pairs"] / "manifest.jsonl"

    vae_rows, vae_final = before_and_after(
        VAEConfig,
        build_vae_task,
        CONFIGS / "vae.yaml",
        [*data, f"train.out_dir={args.workdir / 'vae'}"],
        paths["init"],
        args.vae_steps,
        lambda checkpoint, task: full_length_psnr(checkpoint, data),
    )
    vlm_rows, vlm_final = before_and_after(
        SFTVLMConfig,
        build_sft_vlm_task,
        CONFIGS / "sft_vlm.yaml",
        [*data, f"train.out_dir={args.workdir / 'sft_vlm'}"],
        vae_final,
        args.vlm_steps,
        lambda checkpoint, task: caption_rouge(checkpoint, eval_manifest),
    )
    vdm_rows, vdm_final = before_and_after(
        SFTVDMConfig,
        build_sft_vdm_task,
        CONFIGS / "sft_vdm.yaml",
        [*data, f"train.out_dir={args.workdir / 'sft_vdm'}"],
        vlm_final,
        args.vdm_steps,
        lambda checkpoint, task: mean_clip_v(judge, checkpoint, eval_manifest),
    )
    right = {
        name: right_object_rate(judge, checkpoint, pairs_manifest)
        for name, checkpoint in (("untrained", vlm_final), ("trained", vdm_final))
    }

    print(f"\nVAE ({args.vae_steps} steps), {eval_manifest}")
    print(f"  {'model':<10} {'held-out loss':>14} {'PSNR 17 frames':>18}")
    for name, loss, value in vae_rows:
        print(f"  {name:<10} {loss:>14.4f} {value:>15.2f} dB")
    print(f"\nSFT-VLM ({args.vlm_steps} steps), {eval_manifest}")
    print(f"  {'model':<10} {'held-out loss':>14} {'ROUGE-L (' + DEFAULT_ROUGE_VARIANT + ')':>18}")
    for name, loss, rouge in vlm_rows:
        print(f"  {name:<10} {loss:>14.4f} {rouge:>18.4f}")
    print(f"\nSFT-VDM ({args.vdm_steps} steps), {eval_manifest}; right object on {pairs_manifest}")
    print(f"  {'model':<10} {'held-out loss':>14} {'CLIP-V (toy)':>14} {'right object':>14}")
    for name, loss, value in vdm_rows:
        print(f"  {name:<10} {loss:>14.4f} {value:>14.4f} {right[name]:>13.1%}")


def full_length_psnr(checkpoint: Path, data: list[str]) -> float:
    """`reconstruction_psnr` on the held-out clips at the checkpoint's own length (17
    frames), whatever length the VAE trained on."""
    config = load_config(
        VAEConfig,
        CONFIGS / "vae.yaml",
        [*data, f"checkpoint={checkpoint}", "num_frames=null", "clips=target"],
    )
    return reconstruction_psnr(build_vae_task(config))


if __name__ == "__main__":
    main()
