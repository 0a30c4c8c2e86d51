"""The perception judge through a real chat-completions server on 127.0.0.1 (tests/
chat_server.py) and a real local causal LM: rewards, no call without an observation, the
content-hash cache, bounded concurrency, retries, and NaN (never 0) for timeouts, garbage,
refused keys and dead servers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from chat_server import Behaviour, chat_server
from vans.chat import BackendError, ChatEndpoint, LocalCausalLM
from vans.models.tiny import train_reasoner_tokenizer
from vans.videoqa.judge import JudgeConfig, JudgeRequest, PerceptionJudge, judge_messages
from vans.videoqa.rows import QARow

OPTIONS = ("A. two cups", "B. three cups", "C. four cups")
ROW = QARow(
    "r", "How many cups are on the table?", "multiple choice", "video", Path("v.mp4"), "B", OPTIONS
)
RIGHT = "Three cups stand on a table."
WRONG = "Two cups stand on a table."
VAGUE = "A kitchen."


def endpoint(url: str, **kwargs) -> ChatEndpoint:
    defaults = dict(model="judge", timeout_s=5.0, retries=1, backoff_s=0.01)
    return ChatEndpoint(url, **{**defaults, **kwargs})


def test_the_judge_reads_only_the_question_and_the_observation() -> None:
    messages = judge_messages(ROW, RIGHT)
    text = " ".join(m["content"] for m in messages)
    assert RIGHT in text and "B. three cups" in text and "<think>" not in text


def test_rewards_through_a_local_server(tmp_path) -> None:
    with chat_server() as (url, server):
        judge = PerceptionJudge(endpoint(url), JudgeConfig(cache=str(tmp_path / "cache.db")))
        rewards = judge.rewards([ROW] * 5, [RIGHT, WRONG, VAGUE, None, "  "])
        assert rewards == [1.0, 0.0, 0.0, 0.0, 0.0]
        assert server.requests == 3  # no call for a missing or blank observation
        stats = judge.stats
        assert (stats.judged, stats.calls, stats.missing_observation, stats.failed) == (5, 3, 2, 0)

        # A rerun, in a new judge on the same cache file: every reply from the cache.
        again = PerceptionJudge(endpoint(url), JudgeConfig(cache=str(tmp_path / "cache.db")))
        assert again.rewards([ROW] * 5, [RIGHT, WRONG, VAGUE, None, "  "]) == rewards
        assert server.requests == 3 and again.stats.cache_hits == 3 and again.stats.calls == 0


def test_duplicate_observations_are_judged_once() -> None:
    with chat_server() as (url, server):
        judge = PerceptionJudge(endpoint(url))
        assert judge.rewards([ROW] * 4, [RIGHT, RIGHT, WRONG, RIGHT]) == [1.0, 1.0, 0.0, 1.0]
        assert server.requests == 2


def test_concurrency_is_bounded() -> None:
    with chat_server(Behaviour(delay_s=0.05)) as (url, server):
        judge = PerceptionJudge(endpoint(url, concurrency=4))
        observations = [f"{RIGHT} Cup {i}." for i in range(16)]
        assert judge.rewards([ROW] * 16, observations) == [1.0] * 16
        assert server.max_in_flight == 4


def test_a_timeout_is_nan_counted_and_not_cached(tmp_path) -> None:
    with chat_server(Behaviour(delay_s=1.0)) as (url, server):
        backend = endpoint(url, timeout_s=0.1, retries=1)
        judge = PerceptionJudge(backend, JudgeConfig(cache=str(tmp_path / "c.db")))
        (reward,) = judge.rewards([ROW], [RIGHT])
        assert math.isnan(reward) and judge.stats.failed == 1
        assert backend.failures == ["timeout"] and server.requests == 2  # tried, retried
        judge.rewards([ROW], [RIGHT])
        assert judge.stats.cache_hits == 0  # a failure is not remembered as an answer


def test_garbage_is_nan_without_retrying() -> None:
    with chat_server(Behaviour(garbage=True)) as (url, server):
        backend = endpoint(url, retries=3)
        assert math.isnan(PerceptionJudge(backend).rewards([ROW], [RIGHT])[0])
        assert backend.failures == ["reply is not a chat completion"] and server.requests == 1


def test_overload_is_retried_with_back_off() -> None:
    with chat_server(Behaviour(fail_first=2)) as (url, server):
        backend = endpoint(url, retries=2)
        assert PerceptionJudge(backend).rewards([ROW], [RIGHT]) == [1.0]
        assert server.requests == 3 and backend.failures == []
    with chat_server(Behaviour(fail_first=5)) as (url, server):
        backend = endpoint(url, retries=2)
        assert math.isnan(PerceptionJudge(backend).rewards([ROW], [RIGHT])[0])
        assert backend.failures == ["HTTP 503"] and server.requests == 3


def test_the_key_comes_from_the_environment(monkeypatch) -> None:
    with chat_server(Behaviour(key="s3cret")) as (url, server):
        monkeypatch.delenv("JUDGE_KEY", raising=False)
        backend = endpoint(url, api_key_env="JUDGE_KEY", retries=2)
        assert math.isnan(PerceptionJudge(backend).rewards([ROW], [RIGHT])[0])
        assert backend.failures == ["HTTP 401"] and server.requests == 1  # not retried
        monkeypatch.setenv("JUDGE_KEY", "s3cret")
        assert PerceptionJudge(endpoint(url, api_key_env="JUDGE_KEY")).rewards([ROW], [RIGHT]) == [
            1.0
        ]


def test_a_dead_server_is_nan() -> None:
    with chat_server() as (url, _):
        pass  # closed: nothing listens on that port any more
    backend = endpoint(url, retries=1)
    assert math.isnan(PerceptionJudge(backend).rewards([ROW], [RIGHT])[0])
    assert backend.failures[0].startswith("connection")


def test_an_observation_that_states_the_answer_is_flagged() -> None:
    with chat_server() as (url, _):
        judge = PerceptionJudge(endpoint(url))
        judge.rewards([ROW] * 3, [RIGHT, "The answer is B.", "Option (A) looks likely."])
        assert judge.stats.leaks == 1


def test_bad_settings_are_named(tmp_path) -> None:
    with pytest.raises(BackendError, match="chat url must be"):
        ChatEndpoint("localhost:8000", model="m")
    with pytest.raises(BackendError, match="not a model directory"):
        LocalCausalLM(tmp_path)
    bad = tmp_path / "cache.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BackendError, match="not a reply cache"):
        PerceptionJudge(endpoint("http://127.0.0.1:1/v1"), JudgeConfig(cache=str(bad))).rewards(
            [ROW], [RIGHT]
        )


def test_a_local_causal_lm_judges_in_batches(tmp_path) -> None:
    """A tiny random Qwen2 LM saved to a directory: it answers every conversation (its
    answers are noise, so each reward is 0 or 1, never NaN), batch by batch."""
    tokenizer = train_reasoner_tokenizer(["How many cups are on the table?", RIGHT, *OPTIONS])
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "judge")
    tokenizer.save_pretrained(tmp_path / "judge")
    backend = LocalCausalLM(tmp_path / "judge", max_new_tokens=8, batch_size=2)
    requests = [JudgeRequest(ROW, o, judge_messages(ROW, o)) for o in (RIGHT, WRONG, VAGUE)]
    replies = backend.complete(requests)
    assert len(replies) == 3 and all(isinstance(r, str) for r in replies)
    assert replies == backend.complete(requests)
    rewards = PerceptionJudge(backend).rewards([ROW] * 3, [RIGHT, WRONG, VAGUE])
    assert all(r in (0.0, 1.0) for r in rewards)
