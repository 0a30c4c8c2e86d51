"""VANS-Data through the shared HTTP chat backend against a real chat-completions server on
127.0.0.1 (tests/chat_server.py: it captions the clips it is sent from their pixels and
writes from the captions in its prompts): a rerun makes no request, 429s are retried,
timeouts and malformed replies are listed rejections that a rerun retries, a leaking writer
is rewritten, and a server killed mid-run loses nothing and repeats nothing."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from chat_server import Behaviour, chat_server
from vans.chat import BackendError, ChatEndpoint
from vans.data.manifest import validate_manifest
from vans.data.toyworld.long import LongVideos, write_long_videos
from vans.vansdata.backends import OfflineBackend
from vans.vansdata.build import BuildSettings, build

SERVER = Path(__file__).with_name("chat_server.py")
REQUESTS = 8 + 6  # 8 clips captioned, 6 pairs written


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> LongVideos:
    return write_long_videos(tmp_path_factory.mktemp("long"), num_videos=2, steps=4)


@pytest.fixture
def port() -> int:
    """A free port, so a restarted server is the same URL (backends' names key the cache)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoint(port: int, **kwargs) -> ChatEndpoint:
    defaults = dict(timeout_s=5.0, retries=2, backoff_s=0.01, concurrency=4)
    return ChatEndpoint(f"http://127.0.0.1:{port}/v1", "vlm", **{**defaults, **kwargs})


def run_build(toy: LongVideos, out: Path, backend: ChatEndpoint, fmt: str = "coin", **kw) -> dict:
    settings = BuildSettings(toy.annotations, fmt, toy.videos, **kw)  # type: ignore[arg-type]
    return build(settings, out, backend, backend)


def test_through_a_server_and_a_rerun_makes_no_request(toy, tmp_path, port) -> None:
    with chat_server(port=port) as (_, server):
        report = run_build(toy, tmp_path / "out", endpoint(port))
        assert server.requests == REQUESTS and report["rejections"] == []
        samples = validate_manifest(tmp_path / "out" / "manifest.jsonl").samples
        assert len(samples) == 6
        # The server watched each clip (sent inline) and measured it: 1.5 s toy steps.
        assert all(s.answer.startswith("A 1.5-second ") for s in samples)
        assert all(s.answer == s.extra["target_caption"] for s in samples)
        assert samples[0].extra["provenance"]["write"]["backend"] == f"{server_url(port)}#vlm"
        manifest = (tmp_path / "out" / "manifest.jsonl").read_bytes()
        again = run_build(toy, tmp_path / "out", endpoint(port))
        assert server.requests == REQUESTS  # zero repeated calls
        assert again["calls"]["captioner"] == {"cache_hits": 8, "calls": 0, "failed": 0}
        assert (tmp_path / "out" / "manifest.jsonl").read_bytes() == manifest


def server_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1"


def test_429s_are_retried_with_back_off(toy, tmp_path, port) -> None:
    with chat_server(Behaviour(fail_first=3, fail_status=429), port=port) as (_, server):
        backend = endpoint(port, retries=3, concurrency=1)
        report = run_build(toy, tmp_path / "out", backend)
        assert report["rejections"] == [] and backend.failures == []
        assert server.requests == REQUESTS + 3


def test_timeouts_are_listed_and_a_rerun_finishes_the_job(toy, tmp_path, port) -> None:
    with chat_server(port=port):
        run_build(toy, tmp_path / "whole", endpoint(port))
    with chat_server(Behaviour(delay_s=1.0), port=port):
        backend = endpoint(port, timeout_s=0.1, retries=0, concurrency=8)
        report = run_build(toy, tmp_path / "out", backend)
    assert backend.failures == ["timeout"] * 8
    assert report["calls"]["captioner"] == {"cache_hits": 0, "calls": 8, "failed": 8}
    assert [r["reason"] for r in report["rejections"]] == [
        "the captioner's call failed: timeout (a rerun retries it)"
    ] * 8
    # calls failed: what the run has is a partial manifest, and says so
    assert report["counts"]["samples"] == 0 and report["complete"] is False
    assert (tmp_path / "out" / "manifest.partial.jsonl").exists()
    assert not (tmp_path / "out" / "manifest.jsonl").exists()
    with chat_server(port=port) as (_, server):
        again = run_build(toy, tmp_path / "out", endpoint(port))
        assert server.requests == REQUESTS and again["complete"] is True
    whole = (tmp_path / "whole" / "manifest.jsonl").read_bytes()
    assert (tmp_path / "out" / "manifest.jsonl").read_bytes() == whole
    assert not (tmp_path / "out" / "manifest.partial.jsonl").exists()


def test_a_failed_caption_breaks_the_chain_until_the_rerun(toy, tmp_path, port) -> None:
    """A step whose caption call failed is unknown, not unusable: the first run must not
    pair over it (0->2 jumping step 1), which a complete run would never write."""
    with chat_server(port=port):
        run_build(toy, tmp_path / "whole", endpoint(port))
    whole = validate_manifest(tmp_path / "whole" / "manifest.jsonl").samples
    # one at a time: request 2 is video 0's step 1
    with chat_server(Behaviour(fail_on=(2,)), port=port):
        first = run_build(toy, tmp_path / "out", endpoint(port, retries=0, concurrency=1))
    assert first["calls"]["captioner"]["failed"] == 1
    partial = validate_manifest(tmp_path / "out" / "manifest.partial.jsonl").samples
    assert {s.id for s in partial} < {s.id for s in whole}
    assert [s.extra["steps"] for s in partial if s.extra["videos"][0] == "toytower0-000"] == [
        [2, 3]
    ]
    reason = "step 1's caption call failed (a rerun pairs it)"
    assert {"step": "pair", "item": "video toytower0-000 steps 0->1", "reason": reason} in first[
        "rejections"
    ]
    with chat_server(port=port):
        run_build(toy, tmp_path / "out", endpoint(port))
    assert (tmp_path / "out" / "manifest.jsonl").read_bytes() == (
        tmp_path / "whole" / "manifest.jsonl"
    ).read_bytes()


def test_a_refused_request_says_a_rerun_will_not_fix_it(toy, tmp_path, port) -> None:
    with chat_server(Behaviour(fail_first=100, fail_status=404), port=port) as (_, server):
        backend = endpoint(port, retries=3)
        report = run_build(toy, tmp_path / "out", backend)
    assert server.requests == 8 and backend.failures == ["HTTP 404"] * 8  # not retried
    assert {r["reason"] for r in report["rejections"]} == {
        "the captioner's call failed: HTTP 404: the server refused the request; a rerun sends "
        "it unchanged and will not fix that (check the URL, the model name and the key)"
    }


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:99999/v1", "port must be a number 1-65535"),
        ("http://127.0.0.1:0/v1", "port must be a number 1-65535"),
        ("http://:abc/v1", "port must be a number 1-65535"),
        ("http://[::1/v1", "Invalid IPv6 URL"),
        ("http://127.0.0.1:8000/v 1", "must not be empty or contain whitespace"),
        ("http://127.0.0.1:8000/v1\n", "must not be empty or contain whitespace"),
        ("ftp://127.0.0.1/v1", "the scheme must be http or https"),
        ("http:///v1", "names no host"),
    ],
)
def test_bad_urls_are_one_line_errors(url: str, why: str) -> None:
    with pytest.raises(BackendError) as caught:
        ChatEndpoint(url, "m")
    assert str(caught.value) == f"chat url must be http(s)://host[:port]/..., got {url!r}: {why}"


def test_malformed_replies_are_rejections_with_reasons(toy, tmp_path, port) -> None:
    with chat_server(Behaviour(content="Sure! A person cooks."), port=port):
        report = run_build(toy, tmp_path / "a", endpoint(port))
    reasons = {r["reason"] for r in report["rejections"]}
    assert reasons == {"the captioner's reply is unusable: no JSON object in the reply"}
    assert len(report["rejections"]) == 8
    with chat_server(Behaviour(content='{"caption": "", "usable": true}'), port=port):
        report = run_build(toy, tmp_path / "b", endpoint(port))
    assert {r["reason"] for r in report["rejections"]} == {
        "the captioner's reply is unusable: caption: must be a non-empty str"
    }
    with chat_server(Behaviour(garbage=True), port=port) as (_, server):
        backend = endpoint(port, retries=3)
        report = run_build(toy, tmp_path / "c", backend)
    assert backend.failures == ["reply is not a chat completion"] * 8
    assert server.requests == 8  # a reply that is not a completion is not retried


def test_a_leaking_writer_is_rewritten(toy, tmp_path, port) -> None:
    with chat_server(Behaviour(leaky=True), port=port) as (_, server):
        settings = BuildSettings(toy.activitynet, "activitynet", toy.videos)
        report = build(settings, tmp_path / "out", endpoint(port), endpoint(port))
        # 8 captions; the server measures every toy step as the same sentence, so the six
        # pairs are one distinct request per round: write, leak check (it leaks), rewrite,
        # leak check (it passes).
        assert server.requests == 8 + 4
        assert report["calls"]["writer"] == {"cache_hits": 0, "calls": 4, "failed": 0}
    samples = validate_manifest(tmp_path / "out" / "manifest.jsonl").samples
    assert len(samples) == 6 and report["rejections"] == []
    for sample in samples:
        assert sample.reasoning == f"The clip shows: {sample.extra['input_caption']}"
        assert {"leak", "rewrite", "leak_again"} <= set(sample.extra["provenance"])


def test_a_pair_that_still_leaks_after_its_rewrite_is_dropped(toy, tmp_path, port) -> None:
    stubborn = {"leak": True, "details": "the basket", "question": "Q?", "reasoning": "R.",
                "answer": "A."}  # fmt: skip
    with chat_server(Behaviour(content=json.dumps(stubborn)), port=port):
        settings = BuildSettings(toy.activitynet, "activitynet", toy.videos)
        report = build(settings, tmp_path / "out", OfflineBackend(toy.truth), endpoint(port))
    assert report["counts"]["samples"] == 0 and len(report["rejections"]) == 6
    assert {r["step"] for r in report["rejections"]} == {"leak"}
    assert {r["reason"] for r in report["rejections"]} == {
        "still leaks after a rewrite: the basket"
    }


def test_a_server_killed_mid_run_loses_and_repeats_nothing(toy, tmp_path, port) -> None:
    with chat_server(port=port):
        run_build(toy, tmp_path / "whole", endpoint(port))
    server = subprocess.Popen(
        [sys.executable, str(SERVER), "--port", str(port), "--die-after", "5"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout.readline().strip() == server_url(port)
        # One at a time and no timeout that a loaded machine could hit: the five replies
        # before the kill are exactly the five calls that succeed.
        slow_ok = endpoint(port, retries=1, concurrency=1, timeout_s=120.0)
        first = run_build(toy, tmp_path / "out", slow_ok)
    finally:
        server.kill()
        server.wait()
    assert server.returncode == 1  # it died on request 6
    calls = first["calls"]["captioner"]
    assert calls["calls"] - calls["failed"] == 5 and first["counts"]["samples"] == 0
    with chat_server(port=port) as (_, again):
        run_build(toy, tmp_path / "out", endpoint(port))
        assert again.requests == REQUESTS - 5  # the 5 answered before the kill: not asked again
    whole = (tmp_path / "whole" / "manifest.jsonl").read_bytes()
    assert (tmp_path / "out" / "manifest.jsonl").read_bytes() == whole


def test_cache_keys_follow_the_clips_bytes_not_their_paths(tmp_path) -> None:
    from vans.chat import content_key, file_url

    def key(path: Path) -> str:
        part = {"type": "video_url", "video_url": {"url": file_url(path)}}
        return content_key("m", [{"role": "user", "content": [part]}])

    (tmp_path / "a.mp4").write_bytes(b"clip one")
    (tmp_path / "b.mp4").write_bytes(b"clip one")
    (tmp_path / "c.mp4").write_bytes(b"clip two")
    assert key(tmp_path / "a.mp4") == key(tmp_path / "b.mp4") != key(tmp_path / "c.mp4")


def test_the_command_exits_1_while_calls_failed(toy, tmp_path, port, capsys) -> None:
    from vans.cli.main import run

    command = ["data", "build", "--annotations", str(toy.annotations), "--videos", str(toy.videos)]
    command += ["--out", str(tmp_path / "out"), "--retries", "0"]
    assert run([*command, "--format", "youtube"]) == 2
    assert "--format must be one of coin, youcook2, activitynet, pairs" in capsys.readouterr().err
    # nothing listens on the port: every caption call fails, and the exit code says so
    assert run([*command, "--format", "coin", "--captioner", f"{server_url(port)}#vlm"]) == 1
    assert (
        "8 model calls failed (connection: ConnectError (a rerun retries it)): "
        f"{tmp_path / 'out' / 'manifest.partial.jsonl'} is incomplete; run the same command again"
    ) in capsys.readouterr().err
    with chat_server(port=port):
        assert run([*command, "--format", "coin", "--captioner", f"{server_url(port)}#vlm"]) == 0
    assert len(validate_manifest(tmp_path / "out" / "manifest.jsonl").samples) == 6
