"""Throughput of `vans data build` through the HTTP chat backend against a real
chat-completions server on 127.0.0.1 (tests/chat_server.py, in a process of its own, as a
vLLM server is; it takes `--latency` seconds per request, a remote model's time): one
request at a time (`concurrency=1`, chunks of 1) against `--concurrency` requests in flight
in chunks of `--chunk`, side by side on the same toy long videos; then a rerun of the
second on its own output (the calls it makes: none).

Run: `python benchmarks/bench_vansdata_http.py [--videos 4 --steps 6 --latency 0.2]`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vans.chat import ChatEndpoint
from vans.data.toyworld.long import write_long_videos
from vans.vansdata.build import BuildSettings, build

SERVER = Path(__file__).resolve().parents[1] / "tests" / "chat_server.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=32)
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, str(SERVER), "--delay", str(args.latency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp:
            toy = write_long_videos(Path(tmp) / "toy", num_videos=args.videos, steps=args.steps)
            out = Path(tmp) / "out"
            settings = BuildSettings(toy.annotations, "coin", toy.videos)
            warm = ChatEndpoint(url, "warm-up", concurrency=args.concurrency)
            build(settings, out, warm, warm)  # cuts the clips the timed runs share
            rates = {}
            runs = (("sequential", 1, 1), ("concurrent+batched", args.concurrency, args.chunk))
            for name, concurrency, chunk in runs:
                settings = BuildSettings(toy.annotations, "coin", toy.videos, chunk=chunk)
                # the model name keys the cache: each run asks everything anew
                backend = ChatEndpoint(url, name, concurrency=concurrency)
                began = time.perf_counter()
                report = build(settings, out, backend, backend)
                seconds = time.perf_counter() - began
                calls = sum(c["calls"] for c in report["calls"].values())
                assert report["rejections"] == [] and not backend.failures
                rates[name] = calls / seconds
                print(f"{name:>20}: {calls} calls in {seconds:6.2f} s, {rates[name]:6.1f} calls/s")
            print(f"{'ratio':>20}: {rates['concurrent+batched'] / rates['sequential']:6.2f}x "
                  "(target >= 4x)")  # fmt: skip
            rerun = build(settings, out, backend, backend)
            calls = sum(c["calls"] for c in rerun["calls"].values())
            print(f"{'rerun':>20}: {calls} calls (every reply from the cache)")
    finally:
        server.stdin.close()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
