"""Seconds to sample a Joint-GRPO group of G answers to one long video prompt: one prefill
per group (`Reasoner.generate_completions`: the prompt read once, its KV cache repeated for
the G samples) against the formulation before issue 14, transformers'
`generate(num_return_sequences=G)`, which repeats the prompt G times before prefilling it.
Both encode the video once (the vision tower's output is passed in) and sample the same
answers for a seed (checked here, and in tests/test_vlm.py).

The reasoner is the "toy" preset (`REASONER_PRESETS`: 4 layers, width 128, 8-pixel patches)
with a pixel budget of `--height`x`--width` per frame, so that `--frames` frames of a toy
clip make a prompt of >= 1,000 video tokens (16 frames at 128x256: 1,024), as the paper's
Qwen2.5-VL sees a few hundred to thousands. G = `--group` (8, the paper's), answers of at
most `--new-tokens` tokens. The two ways alternate after a warm-up of each; medians over
`--repeats` rounds are printed, with the ratio. One torch thread by default (a shared
2-core machine); the load average is printed at the start and the end.

Run: `python benchmarks/bench_group_sampling.py [--repeats 5]` (about a minute).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vans.models.tiny import toy_tokenizers
from vans.models.video_processing import second_per_grid_t
from vans.models.vlm import REASONER_PRESETS, Completion, Reasoner, SamplingConfig

QUESTION = "What happens next?"


def repeated_prompts(
    reasoner: Reasoner, frames: torch.Tensor, group: int, sampling: SamplingConfig, seed: int
) -> list[Completion]:
    """The group as sampled before issue 14: the video encoded once, the prompt repeated
    `group` times by `generate` and prefilled for every copy."""
    r = reasoner
    with torch.no_grad(), r._seeded(seed):
        _, grids, embeds = r._encode_videos([frames])
        input_ids, attention_mask = r._pad([r.prompt_ids(QUESTION, grids[0])], [[]])
        spg = second_per_grid_t(r.fps, r.temporal_patch_size)
        out = r.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            mm_token_type_ids=r._token_types(input_ids),
            video_grid_thw=grids[0],
            second_per_grid_ts=torch.full((1,), spg),
            mm_encoder_outputs={"video": BaseModelOutputWithPooling(pooler_output=[embeds[0]])},
            generation_config=r._generation_config(sampling, group),
        )
    return [r._completion(row) for row in out[:, input_ids.shape[1] :]]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.2f}, torch threads {torch.get_num_threads()}")
    pixels = args.height * args.width
    preset = {**REASONER_PRESETS["toy"], "min_pixels": pixels, "max_pixels": pixels}
    reasoner = Reasoner.random(toy_tokenizers()[0], seed=0, fps=2.0, **preset)
    reasoner.model.eval()
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (args.frames, args.height, args.width, 3), generator=g)
    frames = frames.to(torch.uint8)
    _, grid = reasoner.video_inputs(frames)
    prompt = reasoner.prompt_ids(QUESTION, grid)
    video_tokens = prompt.count(reasoner.video_token_id)
    sampling = SamplingConfig(max_new_tokens=args.new_tokens)
    print(
        f"toy reasoner, G={args.group}, {args.frames} frames at {args.height}x{args.width}: "
        f"{video_tokens} video tokens, prompt {len(prompt)} tokens, answers <= "
        f"{args.new_tokens} tokens"
    )

    def one_prefill(seed: int) -> list[Completion]:
        return reasoner.generate_completions(
            frames, [QUESTION], num_samples=args.group, sampling=sampling, seed=seed
        )[0]

    def timed(fn, seed: int) -> tuple[float, list[Completion]]:
        start = time.perf_counter()
        out = fn(seed)
        return time.perf_counter() - start, out

    def repeated(seed: int) -> list[Completion]:
        return repeated_prompts(reasoner, frames, args.group, sampling, seed)

    ways = {"one prefill per group": one_prefill, "prompt repeated G times (before)": repeated}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    same, tokens = True, []
    for round_ in range(1 + args.repeats):  # round 0 is the warm-up
        results = {}
        for name, fn in ways.items():
            took, results[name] = timed(fn, round_)
            if round_:
                seconds[name].append(took)
        a, b = results.values()
        same &= [c.token_ids.tolist() for c in a] == [c.token_ids.tolist() for c in b]
        tokens += [len(c.token_ids) for c in a]
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    for name, value in medians.items():
        print(f"  {name:<34} {value:7.3f} s per group (median of {args.repeats})")
    ratio = medians["prompt repeated G times (before)"] / medians["one prefill per group"]
    print(f"  speed-up {ratio:.2f}x (goal >= 2); {statistics.mean(tokens):.1f} tokens per answer")
    print(f"  identical answers for every seed: {'yes' if same else 'NO'}")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
