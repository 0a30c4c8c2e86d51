"""Reasoning accuracy by rule, one rule per problem type (docs/videop2r.md#rewards), each a
score in [0, 1] of the predicted answer (the answer block) against the row's answer.

- multiple choice: 1 iff the option letter read from the prediction (`choice_letter`) is
  the answer's letter.
- numerical: `NumericalRule` "relative" (the VideoP2R paper: 1 - relative error, clipped
  to [0, 1], as regression; the default) or "exact" (Video-R1's code: 1 iff both or neither
  are written with a decimal point or comma and they are equal after rounding to 2 places).
- regression: 1 - |p - t| / |t|, clipped to [0, 1], as Video-R1 (whose 1e-9 guard on
  both sides scores a right answer of 0 as wrong; here |t| alone is guarded).
- OCR: 1 - word error rate (jiwer), clipped to [0, 1]; words split on whitespace, case kept.
- free-form: the mean of ROUGE-1, ROUGE-2 and ROUGE-L F-measures (rouge-score, Porter
  stemmer), as Video-R1.

A number is the first decimal number in the text ("about 3.5 m" is 3.5; thousands commas
are dropped first, as Video-R1 does); a prediction without one scores 0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from typing import Literal

NumericalRule = Literal["relative", "exact"]
NUMERICAL_RULES = ("relative", "exact")

_LETTER = re.compile(r"^\(?([A-Z])\)?(?=$|[\s.:,)])")
_STATED = re.compile(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-Z])\b\)?", re.IGNORECASE)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def choice_letter(text: str, options: Sequence[str] = ()) -> str | None:
    """The option letter a multiple-choice answer names, or None. In order: a leading
    capital letter standing alone ("B", "(B)", "B.", "B. two cups"); the text of one option
    without its letter ("two cups" for "B. two cups", case and end punctuation ignored);
    "the answer is B" / "Option: B" anywhere. With `options`, a letter beyond them is
    not an answer."""
    text = text.strip()
    letters = {_letter_of(o) for o in options} - {None}
    match = _LETTER.match(text)
    if match and (not letters or match.group(1) in letters):
        return match.group(1)
    wanted = _plain(text)
    for option in options:
        letter = _letter_of(option)
        if (
            letter is not None
            and _plain(option[option.index(letter) + 1 :].lstrip(".:) ")) == wanted
        ):
            return letter
    return stated_choice(text, options)


def stated_choice(text: str, options: Sequence[str] = ()) -> str | None:
    """The letter of the first "the answer is B" / "option (B)" / "choice: B" in `text`
    (one of the options' letters, when given), or None."""
    letters = {_letter_of(o) for o in options} - {None}
    for match in _STATED.finditer(text):
        letter = match.group(1).upper()
        if not letters or letter in letters:
            return letter
    return None


def first_number(text: str) -> float | None:
    """The first decimal number in `text` (thousands commas dropped), or None."""
    match = _NUMBER.search(text.replace(",", ""))
    return float(match.group()) if match else None


def relative_accuracy(predicted: str, truth: str) -> float:
    """1 - |p - t| / |t| clipped to [0, 1] (|t| at least 1e-9, so a truth of 0 is met only
    by 0); 0 when either has no number."""
    p, t = first_number(predicted), first_number(truth)
    if p is None or t is None:
        return 0.0
    error = abs(p - t) / max(abs(t), 1e-9)
    return 1.0 - min(1.0, max(0.0, error))


def exact_numerical_accuracy(predicted: str, truth: str) -> float:
    """Video-R1's numerical rule: the same decimal-ness, equal after rounding to 2 places."""
    if any(c in predicted for c in ".,") != any(c in truth for c in ".,"):
        return 0.0
    p, t = first_number(predicted), first_number(truth)
    return float(p is not None and t is not None and round(p, 2) == round(t, 2))


def ocr_accuracy(predicted: str, truth: str) -> float:
    """1 - WER of the prediction against the truth, clipped to [0, 1] (an empty truth is
    matched only by an empty prediction)."""
    import jiwer

    if not truth.split():
        return float(not predicted.split())
    return 1.0 - min(1.0, max(0.0, jiwer.wer(truth, predicted or " ")))


def free_form_accuracy(predicted: str, truth: str) -> float:
    """Mean ROUGE-1/2/L F-measure (rouge-score, Porter stemmer), clipped to [0, 1]."""
    scores = _rouge().score(truth, predicted)
    return min(1.0, max(0.0, sum(s.fmeasure for s in scores.values()) / 3))


def accuracy(
    problem_type: str,
    predicted: str,
    truth: str,
    options: Sequence[str] = (),
    numerical: NumericalRule = "relative",
) -> float:
    """The accuracy of `predicted` (an answer block) against `truth` by `problem_type`'s
    rule (module docstring)."""
    if problem_type == "multiple choice":
        letter = choice_letter(predicted, options)
        return float(letter is not None and letter == choice_letter(truth, options))
    if problem_type == "numerical":
        if numerical == "exact":
            return exact_numerical_accuracy(predicted, truth)
        return relative_accuracy(predicted, truth)
    if problem_type == "regression":
        return relative_accuracy(predicted, truth)
    if problem_type == "OCR":
        return ocr_accuracy(predicted, truth)
    if problem_type == "free-form":
        return free_form_accuracy(predicted, truth)
    raise ValueError(f"unknown problem_type {problem_type!r}")


def _letter_of(option: str) -> str | None:
    match = _LETTER.match(option.strip())
    return match.group(1) if match else None


def _plain(text: str) -> str:
    return " ".join(text.lower().strip().rstrip(".!?").split())


@cache
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
