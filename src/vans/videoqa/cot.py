"""VideoP2R's 3-step chain-of-thought pipeline (docs/videop2r.md#the-cot-pipeline): a
teacher turns Video-R1 rows into VideoP2R rows with a trace.

1. observation: the teacher watches the video and writes what it sees that matters for the
   question (not the answer);
2. reasoning: given the question, the observation and the right answer, the teacher writes
   the reasoning from the observation to that answer;
3. verification, the observation sufficiency check: the perception judge answers from the
   observation alone (`videoqa.judge`); the row is kept only if that answer is right.

Teachers (`Teacher`): `ModelTeacher` over a local Qwen2.5-VL directory (`vans.models.vlm
.Reasoner`, the video in its input) and `ToyTeacher`, which writes the toy world's ground
truth (the clip's description, the sample's reasoning). Every rejection is recorded with its
step and reason; the run is resumable (kept and rejected rows are appended as they are
decided, a rerun skips every decided id).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vans.io import read_appended_records, write_text
from vans.models.vlm import Reasoner, SamplingConfig
from vans.videoqa.frames import question_frames
from vans.videoqa.judge import PerceptionJudge
from vans.videoqa.prompting import format_trace
from vans.videoqa.rows import QARow

KEPT_FILE = "kept.jsonl"
REJECTED_FILE = "rejected.jsonl"
ROWS_FILE = "rows.json"

OBSERVE = (
    "{question}\nDescribe what you see in the video that matters for this question: the "
    "objects, how they move, where they are. Do not answer the question."
)
REASON = (
    "Question: {question}\nWhat the video shows: {observation}\nThe answer is {answer}. "
    "Reason step by step from what the video shows to this answer, in a few sentences."
)


class Teacher(Protocol):
    """A model that writes the first two steps of a trace."""

    def observe(self, rows: Sequence[QARow]) -> list[str | None]:
        """Step 1 for each row (all about one video): its observation, None if it failed."""
        ...

    def reason(self, rows: Sequence[QARow], observations: Sequence[str]) -> list[str | None]:
        """Step 2 for each row: the reasoning from its observation to its answer."""
        ...


@dataclass
class Decision:
    """What became of one row."""

    id: str
    kept: bool
    step: str | None = None
    """The step that rejected it ("observation", "reasoning", "verification")."""
    reason: str | None = None


class ModelTeacher:
    """A local Qwen2.5-VL directory as the teacher (greedy)."""

    def __init__(
        self,
        directory: str | Path,
        *,
        fps: float = 2.0,
        min_frames: int = 4,
        max_frames: int = 32,
        max_new_tokens: int = 512,
    ) -> None:
        self.reasoner = Reasoner.from_pretrained(directory)
        self.frames = {"fps": fps, "min_frames": min_frames, "max_frames": max_frames}
        self.sampling = SamplingConfig(do_sample=False, max_new_tokens=max_new_tokens)

    def _ask(self, row: QARow, questions: list[str]) -> list[str | None]:
        video = question_frames(row.path, row.data_type, **self.frames)
        texts = self.reasoner.generate(
            video.frames, questions, sampling=self.sampling, fps=video.fps
        )
        return [t[0].strip() or None for t in texts]

    def observe(self, rows: Sequence[QARow]) -> list[str | None]:
        return self._ask(rows[0], [OBSERVE.format(question=_question(r)) for r in rows])

    def reason(self, rows: Sequence[QARow], observations: Sequence[str]) -> list[str | None]:
        prompts = [
            REASON.format(question=_question(r), observation=o, answer=r.answer)
            for r, o in zip(rows, observations, strict=True)
        ]
        return self._ask(rows[0], prompts)


class ToyTeacher:
    """The toy world's ground truth as the teacher: the clip's description and the
    sample's reasoning (`vans qa toy` rows carry them)."""

    def observe(self, rows: Sequence[QARow]) -> list[str | None]:
        return [r.extra.get("teacher", {}).get("observation") for r in rows]

    def reason(self, rows: Sequence[QARow], observations: Sequence[str]) -> list[str | None]:
        return [r.extra.get("teacher", {}).get("process") for r in rows]


def run_cot(
    rows: Sequence[QARow],
    teacher: Teacher,
    judge: PerceptionJudge,
    out: Path,
    on_row: Callable[[Decision], None] | None = None,
) -> list[Decision]:
    """Run the three steps over every row not decided in `out` yet (one video's rows
    together), appending each decision as it is made; then write `rows.json`, the kept
    rows in VideoP2R's format (the input row's fields plus `observation`, `process`,
    `output`), in input order. Returns every row's decision."""
    out.mkdir(parents=True, exist_ok=True)
    decided = {d.id: d for d in _read_decisions(out)}
    pending: dict[Path, list[QARow]] = {}
    for row in rows:
        if row.id not in decided:
            pending.setdefault(row.path, []).append(row)
    with (
        (out / KEPT_FILE).open("a", encoding="utf-8") as kept,
        (out / REJECTED_FILE).open("a", encoding="utf-8") as rejected,
    ):
        for video_rows in pending.values():
            for row, decision, record in _decide(video_rows, teacher, judge):
                file = kept if decision.kept else rejected
                file.write(json.dumps(record, ensure_ascii=False) + "\n")
                file.flush()
                decided[row.id] = decision
                if on_row:
                    on_row(decision)
    records = {r["problem_id"]: r for r in read_appended_records(out / KEPT_FILE)}
    ordered = [records[row.id] for row in rows if row.id in records]
    write_text(out / ROWS_FILE, json.dumps(ordered, indent=1, ensure_ascii=False) + "\n")
    return [decided[row.id] for row in rows]


def _decide(
    rows: list[QARow], teacher: Teacher, judge: PerceptionJudge
) -> list[tuple[QARow, Decision, dict[str, Any]]]:
    observations = teacher.observe(rows)
    steps: dict[str, tuple[str, str]] = {}
    for row, observation in zip(rows, observations, strict=True):
        if not observation:
            steps[row.id] = ("observation", "the teacher wrote no observation")
    alive = [(r, o) for r, o in zip(rows, observations, strict=True) if r.id not in steps]
    reasonings = teacher.reason([r for r, _ in alive], [o for _, o in alive]) if alive else []
    traces: dict[str, tuple[str, str, str]] = {}
    for (row, observation), reasoning in zip(alive, reasonings, strict=True):
        if not reasoning:
            steps[row.id] = ("reasoning", "the teacher wrote no reasoning")
            continue
        try:
            traces[row.id] = (
                observation,
                reasoning,
                format_trace(observation, reasoning, row.answer),
            )
        except ValueError as exc:
            steps[row.id] = ("reasoning", str(exc))
    checked = [r for r in rows if r.id in traces]
    verdicts = judge.rewards(checked, [traces[r.id][0] for r in checked])
    for row, verdict in zip(checked, verdicts, strict=True):
        if verdict != 1.0:
            why = (
                "the judge failed" if verdict != verdict else "the observation alone is not enough"
            )
            steps[row.id] = ("verification", why)
    out = []
    for row in rows:
        if row.id in steps:
            step, reason = steps[row.id]
            decision = Decision(row.id, False, step, reason)
            out.append((row, decision, {"id": row.id, "step": step, "reason": reason}))
        else:
            observation, reasoning, output = traces[row.id]
            record = {**_published(row), "observation": observation, "process": reasoning}
            out.append((row, Decision(row.id, True), {**record, "output": output}))
    return out


def _published(row: QARow) -> dict[str, Any]:
    """The row's Video-R1 fields as published (the path as the row gave it is lost once
    resolved; the resolved one is written)."""
    return {
        "problem_id": row.id,
        "problem": row.problem,
        "data_type": row.data_type,
        "problem_type": row.problem_type,
        "options": list(row.options),
        "solution": f"<answer>{row.answer}</answer>",
        "path": str(row.path),
        "data_source": row.data_source,
        **{k: v for k, v in row.extra.items() if k != "teacher"},
    }


def _question(row: QARow) -> str:
    lines = [row.problem, *(["Options:", *row.options] if row.options else [])]
    return "\n".join(lines)


def _read_decisions(out: Path) -> list[Decision]:
    kept = [Decision(str(r["problem_id"]), True) for r in read_appended_records(out / KEPT_FILE)]
    rejected = [
        Decision(str(r["id"]), False, r["step"], r["reason"])
        for r in read_appended_records(out / REJECTED_FILE)
    ]
    return kept + rejected
