"""What the video-QA reasoner reads and writes (docs/videop2r.md#output-format).

VideoP2R's answer is three blocks: what the model sees, then how it reasons, then the answer:

    <observation>...</observation><think>...</think><answer>...</answer>

The perception process is the observation block; the reasoning process is the think and
answer blocks. The question is Video-R1's: the problem, its options for multiple choice,
an instruction for the template and one for the answer's kind. Chat markup and video tokens
are the reasoner's own (`vans.models.prompting.build_prompt`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vans.models.prompting import block_spans
from vans.videoqa.rows import QARow

SEGMENTS = ("observation", "think", "answer")
PERCEPTION = ("observation",)
REASONING = ("think", "answer")
"""The blocks of each process: PA-GRPO gives each process its own advantage on its own
blocks' tokens."""

INSTRUCTION = (
    "First describe what you observe in the video that matters for the question between "
    "<observation> </observation> tags, then reason about it between <think> </think> tags, "
    "and give the final answer between <answer> </answer> tags."
)
ANSWER_KIND = {
    "multiple choice": "Give only the letter of one option (e.g. A, B, C) as the answer.",
    "numerical": "Give a number (e.g. 42 or 3.14) as the answer.",
    "regression": "Give a number (e.g. 42 or 3.14) as the answer.",
    "OCR": "Give the text as it is written as the answer.",
    "free-form": "Give a short text as the answer.",
}
"""What each problem type asks of the answer block, as Video-R1's per-type instructions."""

_TAG = re.compile(r"<\s*(/?)\s*(observation|think|answer)\s*>", re.IGNORECASE)


def question_text(row: QARow) -> str:
    """The user's text for a row: the problem, its options (multiple choice) one per line,
    the template instruction and the answer kind's."""
    lines = [row.problem.strip()]
    if row.problem_type == "multiple choice":
        lines += ["Options:", *row.options]
    lines += [INSTRUCTION, ANSWER_KIND[row.problem_type]]
    return "\n".join(lines)


def format_trace(observation: str, reasoning: str, answer: str) -> str:
    """The assistant's target for SFT on a trace (VideoP2R's `observation`, `process`, and
    the solution's answer). Refuses parts that hold a tag: the blocks would not parse back."""
    for name, part in (("observation", observation), ("reasoning", reasoning), ("answer", answer)):
        if _TAG.search(part):
            raise ValueError(f"the {name} contains a template tag: {part[:80]!r}")
    return (
        f"<observation>{observation.strip()}</observation><think>{reasoning.strip()}</think>"
        f"<answer>{answer.strip()}</answer>"
    )


@dataclass(frozen=True)
class ParsedTrace:
    """A generated answer split into its blocks."""

    observation: str | None
    """The first observation block's text, stripped; None without an `<observation>` tag (the
    perception judge then scores 0 without a call, never the whole text)."""
    think: str
    answer: str
    """The answer block's text; without an `<answer>` tag, the whole text with every tag
    removed (Video-R1's evaluation fallback; a reward sees a broken format separately)."""
    well_formed: bool
    """True iff the text is exactly the three blocks in order (whitespace around them only),
    none blank, none holding another tag: the format reward."""


def parse_trace(text: str) -> ParsedTrace:
    """Split a generated answer into observation, reasoning and answer. Never raises."""
    tags = [(m.start(), m.end(), bool(m.group(1)), m.group(2).lower()) for m in _TAG.finditer(text)]
    kinds = [(closing, name) for _, _, closing, name in tags]
    blocks = {name: _first_block(text, tags, name) for name in SEGMENTS}
    well_formed = kinds == [(closing, name) for name in SEGMENTS for closing in (False, True)]
    if well_formed:  # nothing but whitespace before, between and after the blocks
        edges = [0, *[edge for i in range(0, 6, 2) for edge in (tags[i][0], tags[i + 1][1])]]
        gaps = [text[edges[i] : edges[i + 1]] for i in range(0, 6, 2)] + [text[edges[-1] :]]
        well_formed = not "".join(gaps).strip() and all(blocks.values())
    answer = blocks["answer"]
    if answer is None:
        answer = " ".join(_TAG.sub(" ", text).split())
    return ParsedTrace(blocks["observation"], blocks["think"] or "", answer, well_formed)


def trace_spans(text: str) -> dict[str, tuple[int, int]]:
    """Character spans `[start, end)` of the observation, think and answer blocks, tags
    included (`vans.models.prompting.block_spans`): the tokens of a span take the advantage
    of its process."""
    return block_spans(text, _TAG, {name: name for name in SEGMENTS})


def _first_block(text: str, tags: list, name: str) -> str | None:
    """The text after the first opening tag of `name` up to the next tag (or the end),
    stripped; None without that tag."""
    for i, (_, end, closing, kind) in enumerate(tags):
        if kind == name and not closing:
            stop = tags[i + 1][0] if i + 1 < len(tags) else len(text)
            return text[end:stop].strip()
    return None
