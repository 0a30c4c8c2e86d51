"""Start-up time of the `vans` commands that load no model, beside `import torch` (what each
of them paid before the CLI imported its commands lazily), median of 5 fresh processes each.

    python benchmarks/cli_startup.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPEATS = 5


def median_seconds(argv: list[str]) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "m.jsonl"
        manifest.write_text("")
        vans = [sys.executable, "-m", "vans.cli.main"]
        reference = median_seconds([sys.executable, "-c", "import torch"])
        rows = {
            "vans --help": [*vans, "--help"],
            "vans data --help": [*vans, "data", "--help"],
            "vans data validate (empty)": [*vans, "data", "validate", str(manifest)],
        }
        print(f"{'import torch':28s} {reference:6.2f} s")
        for name, argv in rows.items():
            seconds = median_seconds(argv)
            print(f"{name:28s} {seconds:6.2f} s  ({seconds / reference:.2f} of import torch)")


if __name__ == "__main__":
    main()
