"""Video-QA evaluation in Video-R1's protocol (docs/videop2r.md#evaluation): a reasoner
answers every row of one or more evaluation files (Video-R1's `eval_<benchmark>.json`, or
the toy benchmark's rows), greedy, and each answer is scored by its problem type's rule.

- The answer is read tag-aware: the `<answer>` block; without one, the whole output with
  every tag removed (Video-R1's fallback). Multiple choice then takes `choice_letter`'s
  letter; numbers the first number.
- Per file (a benchmark): the mean accuracy over its rows, and per problem type and per
  `data_source` (a benchmark's task). VSI-Bench's numeric rows also get the mean relative
  accuracy (MRA: the fraction of thresholds 0.50, 0.55, ..., 0.95 whose relative error
  bound 1 - threshold the answer meets), and the file two summaries: the mean over rows
  (Video-R1's average) and the mean over tasks (VSI-Bench's official task mean).
- Resumable: answers go to `predictions.jsonl` as they are made (one line per row, flushed),
  a rerun answers only the rows not there yet and rescores everything.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vans.io import read_appended_records
from vans.models.vlm import Reasoner, SamplingConfig
from vans.videoqa.accuracy import NumericalRule, accuracy, first_number
from vans.videoqa.frames import question_frames
from vans.videoqa.prompting import parse_trace, question_text
from vans.videoqa.rows import QARow

PREDICTIONS_FILE = "predictions.jsonl"
MRA_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


@dataclass(frozen=True)
class EvalSettings:
    """How the reasoner watches and answers (per benchmark, not in code)."""

    fps: float = 2.0
    min_frames: int = 4
    max_frames: int = 32
    """VideoP2R: 32 frames at inference."""
    max_new_tokens: int = 1024
    numerical: NumericalRule = "relative"


def mean_relative_accuracy(predicted: str, truth: str) -> float:
    """VSI-Bench's MRA: the mean over thresholds t in 0.50..0.95 of 1[|p - g| / |g| < 1 - t];
    0 without a number."""
    p, g = first_number(predicted), first_number(truth)
    if p is None or g is None:
        return 0.0
    error = abs(p - g) / max(abs(g), 1e-9)
    return sum(error < 1 - t for t in MRA_THRESHOLDS) / len(MRA_THRESHOLDS)


def answer_rows(
    reasoner: Reasoner,
    rows: Sequence[QARow],
    settings: EvalSettings,
    out: Path,
    on_row: Callable[[], None] | None = None,
) -> dict[str, str]:
    """The reasoner's output for every row, by row id: those already in `out`'s
    predictions.jsonl are kept, the others answered (all questions about one video in one
    batched call, greedy) and appended as they come."""
    path = out / PREDICTIONS_FILE
    done = {str(r["id"]): str(r["output"]) for r in read_appended_records(path)}
    sampling = SamplingConfig(do_sample=False, max_new_tokens=settings.max_new_tokens)
    by_video: dict[Path, list[QARow]] = defaultdict(list)
    for row in rows:
        if row.id in done:
            if on_row:
                on_row()
        else:
            by_video[row.path].append(row)
    out.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as file:
        for video_rows in by_video.values():
            first = video_rows[0]
            video = question_frames(
                first.path,
                first.data_type,
                fps=settings.fps,
                min_frames=settings.min_frames,
                max_frames=settings.max_frames,
            )
            questions = [question_text(r) for r in video_rows]
            texts = reasoner.generate(video.frames, questions, sampling=sampling, fps=video.fps)
            for row, (text,) in zip(video_rows, texts, strict=True):
                done[row.id] = text
                file.write(json.dumps({"id": row.id, "output": text}, ensure_ascii=False) + "\n")
                file.flush()
                if on_row:
                    on_row()
    return done


def score_rows(
    rows: Sequence[QARow], outputs: dict[str, str], numerical: NumericalRule = "relative"
) -> dict[str, Any]:
    """Accuracy of each row's output, and the means: overall, by problem type, by
    data_source, the format rate, and (for numeric rows) MRA with its row and task means."""
    scores: list[float] = []
    kinds: dict[str, list[float]] = defaultdict(list)
    tasks: dict[str, list[float]] = defaultdict(list)
    mra_tasks: dict[str, list[float]] = defaultdict(list)
    formed = []
    for row in rows:
        parsed = parse_trace(outputs[row.id])
        score = accuracy(row.problem_type, parsed.answer, row.answer, row.options, numerical)
        scores.append(score)
        kinds[row.problem_type].append(score)
        tasks[row.data_source or "all"].append(score)
        formed.append(float(parsed.well_formed))
        if row.problem_type in ("numerical", "regression"):
            mra_tasks[row.data_source or "all"].append(
                mean_relative_accuracy(parsed.answer, row.answer)
            )
    result: dict[str, Any] = {
        "rows": len(rows),
        "accuracy": _mean(scores),
        "well_formed": _mean(formed),
        "by_type": {k: _mean(v) for k, v in sorted(kinds.items())},
        "by_source": {k: _mean(v) for k, v in sorted(tasks.items())},
    }
    if mra_tasks:
        every = [s for v in mra_tasks.values() for s in v]
        result["mra"] = {
            "row_mean": _mean(every),
            "task_mean": _mean([_mean(v) for v in mra_tasks.values()]),
        }
    return result


def results_table(results: dict[str, dict[str, Any]]) -> str:
    """A Markdown table per benchmark: rows, accuracy, format rate, per problem type."""
    types = sorted({t for r in results.values() for t in r["by_type"]})
    head = ["benchmark", "rows", "accuracy", "well formed", *types]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, r in results.items():
        cells = [name, str(r["rows"]), _pct(r["accuracy"]), _pct(r["well_formed"])]
        cells += [_pct(r["by_type"].get(t, math.nan)) for t in types]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}%"
