"""What every recipe does around its steps: announce each one, and keep the wall-clock it
took in OUT/timings.json, accumulated over interrupted and resumed runs."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from vans.io import write_json

TIMINGS_FILE = "timings.json"


class RecipeSteps:
    """Timed, announced steps of a recipe writing into `out`."""

    def __init__(self, out: Path, console: Console) -> None:
        self.console = console
        self.file = Path(out) / TIMINGS_FILE
        self._lock = threading.Lock()
        self.timings: dict[str, float] = (
            json.loads(self.file.read_text()) if self.file.is_file() else {}
        )

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.console.rule(name)
        start = time.perf_counter()
        yield
        with self._lock:  # steps may run in parallel threads (a recipe's `jobs`)
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
            write_json(self.file, self.timings)
