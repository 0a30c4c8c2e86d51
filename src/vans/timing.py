"""Wall-clock timings of named stages, for per-stage reports (`vans predict`, benchmarks)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Timings(dict[str, float]):
    """Seconds per stage; a stage timed twice accumulates."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - start


@contextmanager
def maybe_stage(timings: Timings | None, name: str) -> Iterator[None]:
    """`timings.stage(name)`, or nothing when no timings are being kept."""
    if timings is None:
        yield
    else:
        with timings.stage(name):
            yield
