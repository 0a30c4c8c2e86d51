"""The toy video-QA benchmark: rows that load in the published format, the toy teacher's
traces scoring full marks by every reward (the truth passes its own checks), and the toy
judge refusing observations that leave a needed fact out."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from vans.data.toyworld.config import HELD_OUT
from vans.videoqa.judge import PerceptionJudge
from vans.videoqa.prompting import parse_trace
from vans.videoqa.rewards import RewardConfig, rule_rewards
from vans.videoqa.rows import load_rows
from vans.videoqa.toy import ToyJudge, needs_met


def test_every_split_loads_with_traces_and_videos(toy_qa) -> None:
    for split in ("train", "test", "test_heldout"):
        rows = load_rows([toy_qa / split / "rows.json"], check_files=True, require_trace=True)
        kinds = Counter(r.data_source.split("/")[1] for r in rows)
        assert {"next_event", "next_event_text", "appearance", "objects", "movers"} <= set(kinds)
        assert {r.problem_type for r in rows} == {"multiple choice", "numerical", "free-form"}
    heldout = load_rows([toy_qa / "test_heldout" / "rows.json"])
    captions = [r.answer for r in heldout if r.problem_type == "free-form"]
    assert all(any(pair in c for pair in HELD_OUT) for c in captions)
    train = load_rows([toy_qa / "train" / "rows.json"])
    assert not any(pair in f"{r.problem} {r.answer}" for r in train for pair in HELD_OUT)


def test_the_teachers_traces_score_full_marks(toy_qa) -> None:
    """The truth passes its own checks: every trace is well formed and right, and the toy
    judge finds every observation sufficient (the sufficiency check keeps them all)."""
    rows = load_rows([toy_qa / "train" / "rows.json"], require_trace=True)
    config = RewardConfig()
    for row in rows:
        out = rule_rewards(row.output, row, {}, config)
        assert out["format"] == 1.0 and out["accuracy"] == 1.0, row.id
    judge = PerceptionJudge(ToyJudge())
    assert judge.rewards(rows, [r.observation for r in rows]) == [1.0] * len(rows)


def test_the_toy_judge_needs_every_fact(toy_qa) -> None:
    rows = load_rows([toy_qa / "train" / "rows.json"])
    counts = [r for r in rows if r.data_source == "toyworld/objects" and int(r.answer) >= 2]
    row = counts[0]
    sentences = row.observation.split(". ")
    partial = ". ".join(s for s in sentences if row.extra["needs"][0][0] not in s)
    judge = PerceptionJudge(ToyJudge())
    assert judge.rewards([row, row, row], [row.observation, partial, None]) == [1.0, 0.0, 0.0]
    assert judge.stats.missing_observation == 1
    parsed = parse_trace(row.output)
    assert parsed.observation == row.observation


@pytest.mark.parametrize(
    ("observation", "met"),
    [
        ("The red circle moves left and ends at the bottom.", True),
        ("The Red Circle MOVES LEFT.", True),  # case does not matter
        ("The red circle is here. It moves left.", False),  # not in one sentence
        ("The red circles moves left.", False),  # whole words only
        ("The red circle moves leftward.", False),
    ],
)
def test_needs_are_phrases_together_in_one_sentence(observation, met) -> None:
    assert needs_met(observation, [["red circle", "moves left"]]) is met


def test_rows_file_is_a_json_list_in_video_r1_format(toy_qa) -> None:
    rows = json.loads((toy_qa / "test" / "rows.json").read_text())
    first = rows[0]
    assert first["solution"].startswith("<answer>") and first["data_type"] == "video"
    assert set(first) >= {"problem_id", "problem", "options", "problem_type", "path"}
    assert set(first) >= {"observation", "process", "output"}
