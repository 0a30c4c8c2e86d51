"""Judgments per second of the HTTP perception judge against a real chat-completions server
on 127.0.0.1 (tests/chat_server.py, in a process of its own, as a vLLM server is) that
takes `--latency` seconds per request, a remote server's round trip: one request at a time
(`concurrency=1`) against `--concurrency` requests in flight, side by side on the same
`--num` distinct observations; then the same judgments rerun on the first run's cache (the
hit rate, and the calls made).

Run: `python benchmarks/bench_judge.py [--num 64 --latency 0.05 --concurrency 16]`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vans.chat import ChatEndpoint
from vans.videoqa.judge import JudgeConfig, PerceptionJudge
from vans.videoqa.rows import QARow

SERVER = Path(__file__).resolve().parents[1] / "tests" / "chat_server.py"
OPTIONS = ("A. two cups", "B. three cups", "C. four cups")


def judge(url: str, concurrency: int, cache: str | None = None) -> PerceptionJudge:
    return PerceptionJudge(
        ChatEndpoint(url, model="judge", concurrency=concurrency), JudgeConfig(cache=cache)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    row = QARow("r", "How many cups?", "multiple choice", "video", Path("v.mp4"), "B", OPTIONS)
    observations = [f"Three cups stand on table {i}." for i in range(args.num)]
    server = subprocess.Popen(
        [sys.executable, str(SERVER), "--delay", str(args.latency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().strip()
        rates = {}
        for name, concurrency in (
            ("one at a time", 1),
            (f"{args.concurrency} in flight", args.concurrency),
        ):
            one = judge(url, concurrency)
            began = time.perf_counter()
            rewards = one.rewards([row] * args.num, observations)
            rates[name] = args.num / (time.perf_counter() - began)
            assert rewards == [1.0] * args.num and one.stats.failed == 0
            print(f"{name:>16}: {rates[name]:7.1f} judgments/s")
        single, many = rates.values()
        print(f"{'ratio':>16}: {many / single:7.2f}x (target >= 4x)")
        with tempfile.TemporaryDirectory() as tmp:
            cache = str(Path(tmp) / "cache.db")
            judge(url, args.concurrency, cache).rewards([row] * args.num, observations)
            rerun = judge(url, args.concurrency, cache)
            rerun.rewards([row] * args.num, observations)
            hits = rerun.stats.cache_hits / args.num
            print(f"{'rerun on cache':>16}: {hits:.0%} cache hits, {rerun.stats.calls} calls")
    finally:
        server.stdin.close()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
