"""VideoP2R's template and rule rewards: the parser on well-formed and broken traces, each
problem type's accuracy on hand-computed cases (and Video-R1's exact rule beside the
paper's), and the length reward's gate."""

from __future__ import annotations

from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from vans.errors import ConfigError
from vans.videoqa.accuracy import accuracy, choice_letter, first_number
from vans.videoqa.prompting import format_trace, parse_trace, question_text, trace_spans
from vans.videoqa.rewards import RewardConfig, rule_rewards
from vans.videoqa.rows import QARow

GOOD = "<observation>Three cups.</observation>\n<think>I count three.</think> <answer>B</answer>"
OPTIONS = ("A. two cups", "B. three cups", "C. four cups")


def row(problem_type="multiple choice", answer="B", options=OPTIONS) -> QARow:
    return QARow("r", "How many cups?", problem_type, "video", Path("v.mp4"), answer, options)


def test_a_well_formed_trace_parses_into_its_blocks() -> None:
    parsed = parse_trace(GOOD)
    assert parsed.well_formed
    assert (parsed.observation, parsed.think, parsed.answer) == (
        "Three cups.",
        "I count three.",
        "B",
    )
    assert parse_trace(format_trace("Three cups.", "I count three.", "B")) == parsed
    spans = trace_spans(GOOD)
    assert GOOD[slice(*spans["observation"])] == "<observation>Three cups.</observation>"
    assert GOOD[slice(*spans["answer"])] == "<answer>B</answer>"


@pytest.mark.parametrize(
    "text",
    [
        "<think>I count three.</think><answer>B</answer>",  # no observation
        "<observation>x</observation><answer>B</answer><think>y</think>",  # out of order
        "Sure! <observation>x</observation><think>y</think><answer>B</answer>",  # text before
        "<observation>x</observation>so<think>y</think><answer>B</answer>",  # text between
        "<observation> </observation><think>y</think><answer>B</answer>",  # blank block
        "<observation>x<think>y</think></observation><answer>B</answer>",  # nested
        "<observation>x</observation><think>y</think><answer>B</answer><answer>C</answer>",
    ],
)
def test_broken_traces_are_not_well_formed(text) -> None:
    assert not parse_trace(text).well_formed


def test_missing_blocks_parse_to_what_the_rewards_need() -> None:
    """No observation tag: None (the judge scores 0 without a call, and never sees the
    answer); no answer tag: the whole text without tags (Video-R1's evaluation fallback)."""
    parsed = parse_trace("<think>three</think><answer>B</answer>")
    assert parsed.observation is None and parsed.answer == "B"
    assert (
        parse_trace("<observation>cups</observation> The answer is B").answer
        == "cups The answer is B"
    )
    assert trace_spans("<observation>cups <think>three") == {
        "observation": (0, 18),
        "think": (18, 30),
    }


def test_question_text_lists_options_and_the_answer_kind() -> None:
    text = question_text(row())
    assert text.startswith("How many cups?\nOptions:\nA. two cups\nB. three cups\nC. four cups\n")
    assert "<observation> </observation>" in text and text.endswith(
        "letter of one option (e.g. A, B, C) as the answer."
    )
    assert "Options" not in question_text(row("numerical", "3", ()))


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("B. three cups", "B"),
        ("three cups", "B"),  # an option's text
        ("Three cups.", "B"),
        ("The answer is C.", "C"),
        ("Option: (A)", "A"),
        ("D", None),  # no such option
        ("Because", None),  # a word starting with a capital is not a letter
        ("", None),
    ],
)
def test_choice_letter(text, letter) -> None:
    assert choice_letter(text, OPTIONS) == letter


def test_multiple_choice_accuracy() -> None:
    assert accuracy("multiple choice", "B. three cups", "B", OPTIONS) == 1.0
    assert accuracy("multiple choice", "A", "B", OPTIONS) == 0.0
    assert accuracy("multiple choice", "I am not sure", "B", OPTIONS) == 0.0


def test_numbers_relative_and_exact() -> None:
    assert first_number("about 1,250.5 metres") == 1250.5 and first_number("none") is None
    assert accuracy("regression", "8", "10") == pytest.approx(0.8)
    assert accuracy("regression", "25", "10") == 0.0  # relative error clipped at 1
    assert accuracy("regression", "0", "0") == 1.0 and accuracy("regression", "n/a", "3") == 0.0
    # "numerical": the paper's relative error by default; Video-R1's exact rule on request.
    assert accuracy("numerical", "9", "10") == pytest.approx(0.9)
    assert accuracy("numerical", "9", "10", numerical="exact") == 0.0
    assert accuracy("numerical", "3.141", "3.14", numerical="exact") == 1.0  # equal at 2 places
    assert accuracy("numerical", "3.0", "3", numerical="exact") == 0.0  # decimal-ness differs
    assert accuracy("numerical", "3", "3", numerical="exact") == 1.0


def test_ocr_is_one_minus_word_error_rate() -> None:
    assert accuracy("OCR", "STOP here now", "STOP here now") == 1.0
    # one substitution in four reference words
    assert accuracy("OCR", "open 24 hours daily", "open 24 hours today") == pytest.approx(0.75)
    assert accuracy("OCR", "open", "open 24 hours today") == pytest.approx(0.25)  # 3 deletions
    assert accuracy("OCR", "a b c d e f g h", "x") == 0.0  # WER above 1, clipped
    assert accuracy("OCR", "Stop", "STOP") == 0.0  # case is kept, as Video-R1


def test_free_form_is_mean_rouge_f() -> None:
    # "a man opens the door" vs "a man closes the door": ROUGE-1 F 4/5, ROUGE-2 F 2/4,
    # ROUGE-L F 4/5 (LCS "a man the door").
    got = accuracy("free-form", "a man closes the door", "a man opens the door")
    assert got == pytest.approx((0.8 + 0.5 + 0.8) / 3)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    ref = scorer.score("The dog runs home", "dogs running home")  # the stemmer matches forms
    assert accuracy("free-form", "dogs running home", "The dog runs home") == pytest.approx(
        sum(s.fmeasure for s in ref.values()) / 3
    )


def test_length_reward_is_paid_only_when_right_and_well_formed() -> None:
    config = RewardConfig()
    inside = {"observation": 200, "think": 300, "answer": 40}
    out = rule_rewards(GOOD, row(), inside, config)
    assert out == {
        "accuracy": 1.0,
        "format": 1.0,
        "length/perception": 0.2,
        "length/reasoning": 0.2,
    }
    short = rule_rewards(GOOD, row(), {"observation": 20, "think": 30, "answer": 2}, config)
    assert short["length/perception"] == short["length/reasoning"] == 0.0
    wrong = rule_rewards(GOOD, row(answer="A"), inside, config)
    assert (
        wrong["accuracy"] == 0.0 and wrong["length/perception"] == wrong["length/reasoning"] == 0.0
    )
    broken = rule_rewards(GOOD.replace("</think>", ""), row(), inside, config)
    assert (
        broken["format"] == 0.0 and broken["accuracy"] == 1.0 and broken["length/reasoning"] == 0.0
    )


def test_reward_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="perception_length must be"):
        RewardConfig(perception_length=(300, 100))
    with pytest.raises(ConfigError, match="numerical must be one of relative, exact"):
        RewardConfig(numerical="rounded")
