"""Toy-world generation speed on one core: rendering alone, and rendering + MP4 writing.

Target (foundation issue): 1,000 samples at 64x64 in under 60 s on one core.
Run: `make bench` or `python benchmarks/bench_toyworld.py [--num 1000] [--size 64x64]`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from vans.cli.data import parse_size
from vans.data.toyworld import ToyWorldConfig, iter_samples, write_toyworld


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num", type=int, default=1000)
    parser.add_argument("--size", default="64x64")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)
    config = ToyWorldConfig(num=args.num, size=parse_size(args.size))

    start = time.perf_counter()
    for _ in iter_samples(config):
        pass
    render_s = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_toyworld(config, tmp)
        total_s = time.perf_counter() - start

    print(f"toy world, {args.num} samples at {args.size}, 1 core")
    print(f"  render only        : {render_s:7.2f} s  ({args.num / render_s:7.1f} samples/s)")
    print(f"  render + write MP4 : {total_s:7.2f} s  ({args.num / total_s:7.1f} samples/s)")
    verdict = "met" if total_s * 1000 / args.num < 60 else "MISSED"
    print(f"  target             : 1000 samples in < 60 s -> {verdict}")


if __name__ == "__main__":
    main()
