"""Seconds to render the reward videos of one Joint-GRPO group (G=8), one by one vs batched
and de-duplicated (`vans.rewards.reward_videos.render_reward_videos`).

The tiny renderer (the random Wan2.1 `vans init-tiny` writes) at the toy settings
(`TINY_SETTINGS`: 17 frames at 64x64, 6 reference latents, CFG 5), conditioned on a toy-world
input video, with the reward-video steps (`RewardVideoConfig().steps`). Two groups of 8
toy-world captions:

- with duplicates, as an SFT policy samples them: 3 unique captions (one written 5 times,
  once with stray whitespace; one twice; one once);
- all different: batching alone.

One by one is `Renderer.render([caption])` per caption (the reference video is encoded each
time, as a naive loop does). Both ways run side by side in one process: a warm-up of each,
then `--repeats` rounds that alternate them; medians are printed. Numbers only: other
processes on the machine skew them (the load average is printed at the start and the end).

One torch thread by default: on a shared 2-core machine two threads contend with other
processes and the figures swing by several times from run to run.

Run: `python benchmarks/bench_reward_videos.py [--repeats 5] [--threads 1]` (about 1 min).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from vans.data.toyworld import ToyWorldConfig, iter_samples
from vans.models.checkpoint import TINY_SETTINGS
from vans.models.tiny import toy_corpus, train_text_encoder_tokenizer
from vans.models.vdm import Renderer
from vans.rewards.reward_videos import render_reward_videos
from vans.rl.config import RewardVideoConfig

SEED = 0


def groups() -> tuple[torch.Tensor, list[str], list[str]]:
    """The input video of one toy sample, a group with duplicates and one without."""
    samples = list(iter_samples(ToyWorldConfig(num=16, seed=0)))
    answers = list(dict.fromkeys(s.answer for s in samples))
    a, b, c = answers[:3]
    with_duplicates = [a, a, b, a, f" {a}  ", c, b, a]
    return torch.from_numpy(samples[0].input_frames), with_duplicates, answers[:8]


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.2f}, torch threads {torch.get_num_threads()}")

    s = TINY_SETTINGS
    config = RewardVideoConfig()
    renderer = Renderer.tiny(train_text_encoder_tokenizer(toy_corpus()), seed=0)
    reference, with_duplicates, distinct = groups()

    def one_by_one(captions: list[str]) -> None:
        for caption in captions:
            renderer.render(
                [caption],
                reference_frames=reference,
                settings=s,
                steps=config.steps,
                seed=SEED,
            )

    def batched(captions: list[str]) -> None:
        render_reward_videos(
            renderer, captions, reference_frames=reference, settings=s, config=config, seed=SEED
        )

    print(
        f"G=8, {s.num_frames} frames at {s.height}x{s.width}, {s.num_reference_frames} "
        f"reference latents, {config.steps} steps, CFG {s.guidance_scale}, "
        f"batch size {config.batch_size}"
    )
    for name, captions in (("with duplicates", with_duplicates), ("no duplicates", distinct)):
        one_by_one(captions[:1])  # warm-up: batch-1 and batch-n shapes
        batched(captions)
        naive, fast = [], []
        for _ in range(args.repeats):
            naive.append(seconds(lambda captions=captions: one_by_one(captions)))
            fast.append(seconds(lambda captions=captions: batched(captions)))
        unique = len({" ".join(c.split()) for c in captions})
        n, f = statistics.median(naive), statistics.median(fast)
        print(
            f"{name} ({unique} unique): one by one {n:.3f} s/group, batched + de-duplicated "
            f"{f:.3f} s/group, ratio {n / f:.2f}x (median of {args.repeats})"
        )
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
