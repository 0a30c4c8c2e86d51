"""A real OpenAI-compatible chat-completions server on 127.0.0.1, for the HTTP backends'
tests and benchmarks: `POST /v1/chat/completions` answers

- a judge question by reading the description (the first option whose text it mentions,
  else "unknown");
- a VANS-Data caption request (a video part, sent inline as a data URL) with a caption
  measured from the video's pixels (`vans.vansdata.backends.measured_caption`);
- a VANS-Data writing, leak-check or rewrite request from the captions in its prompt.

Behaviours for faults: a delay per request, replies slower than any timeout, garbage (not a
completion), a completion whose text is not what was asked, failing with 503, 429 or 4xx
the first N times or on given requests, a required bearer key, a writer whose reasoning
leaks the next clip, and (in a process of its own, `--die-after N`) dying on request N + 1
as a killed server does."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Behaviour:
    delay_s: float = 0.0
    garbage: bool = False
    fail_first: int = 0
    """Answer `fail_status` to this many requests before answering normally."""
    fail_status: int = 503
    fail_on: tuple[int, ...] = ()
    """Answer `fail_status` to these requests (numbered from 1 in arrival order)."""
    content: str | None = None
    """Every completion's text, whatever was asked (a model that ignores the format)."""
    leaky: bool = False
    """The writer's reasoning restates the next clip's caption (a leak to catch)."""
    die_after: int | None = None
    """Exit the process on request die_after + 1, before answering (only with `main`)."""
    key: str | None = None
    """The bearer key every request must carry (401 otherwise)."""
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def answer(messages: list[dict], leaky: bool = False) -> str:
    user = messages[-1]["content"]
    if isinstance(user, list):
        return _caption(user)
    if "Reply with one JSON object" in user:
        return _written(user, leaky)
    description = re.search(r"Description of the video: (.*)", user)
    seen = description.group(1).lower() if description else ""
    for letter, text in re.findall(r"^([A-Z])\. (.+)$", user, re.MULTILINE):
        if text.lower() in seen:
            return f"<answer>{letter}</answer>"
    return "The description does not say. <answer>unknown</answer>"


def _field(text: str, label: str) -> str:
    found = re.search(rf"^{re.escape(label)}: (.*)$", text, re.MULTILINE)
    return found.group(1) if found else ""


def _caption(parts: list[dict]) -> str:
    from vans.vansdata.backends import measured_caption

    text = next(p["text"] for p in parts if p["type"] == "text")
    url = next(p["video_url"]["url"] for p in parts if p["type"] == "video_url")
    seconds = float(re.search(r"this ([0-9.]+)-second clip", text).group(1))
    with tempfile.TemporaryDirectory() as tmp:
        clip = os.path.join(tmp, "clip.mp4")
        with open(clip, "wb") as f:
            f.write(base64.b64decode(url.split(",", 1)[1]))
        return json.dumps(measured_caption(clip, seconds))


def _written(prompt: str, leaky: bool) -> str:
    seen = _field(prompt, "Input clip (what the user's video shows)")
    seen = seen or _field(prompt, "Input clip")
    after = (
        _field(prompt, "Next step (what the answer must show)")
        or _field(prompt, "What actually happens next (the answer must show it)")
        or _field(prompt, "Next clip")
    )
    if prompt.startswith("Input clip: ") and "Does the question" in prompt:  # the leak check
        # what the reasoning says beyond restating the input: there, the next clip must not be
        leak = after in _field(prompt, "Reasoning").replace(seen, "", 1)
        return json.dumps({"leak": leak, "details": after if leak else ""})
    reasoning = f"The clip shows: {seen}"
    if leaky and "These parts state" not in prompt:  # a rewrite request never leaks again
        reasoning += f" Then: {after}"
    return json.dumps({"question": "What happens next?", "reasoning": reasoning, "answer": after})


def _handler(behaviour: Behaviour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as vLLM and SGLang serve

        def log_message(self, *args) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with behaviour.lock:
                behaviour.requests += 1
                number = behaviour.requests
                behaviour.in_flight += 1
                behaviour.max_in_flight = max(behaviour.max_in_flight, behaviour.in_flight)
            try:
                time.sleep(behaviour.delay_s)
                if behaviour.key and self.headers.get("Authorization") != f"Bearer {behaviour.key}":
                    return self._send(401, b'{"error": "bad key"}')
                if self.path != "/v1/chat/completions":
                    return self._send(404, b'{"error": "no such route"}')
                if behaviour.die_after is not None and number > behaviour.die_after:
                    os._exit(1)  # as a SIGKILL leaves it: no reply, connections dropped
                if number <= behaviour.fail_first or number in behaviour.fail_on:
                    return self._send(behaviour.fail_status, b'{"error": "overloaded"}')
                if behaviour.garbage:
                    return self._send(200, b"<html>not a completion</html>")
                content = behaviour.content or answer(body["messages"], behaviour.leaky)
                reply = {"choices": [{"message": {"role": "assistant", "content": content}}]}
                self._send(200, json.dumps(reply).encode())
            finally:
                with behaviour.lock:
                    behaviour.in_flight -= 1

        def _send(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    """A server's listen backlog (uvicorn, under vLLM: 2048). The default, 5, drops the
    connections a 16-wide client opens at once, and each dropped one waits a second for
    the kernel to resend it."""


@contextlib.contextmanager
def chat_server(
    behaviour: Behaviour | None = None, port: int = 0
) -> Iterator[tuple[str, Behaviour]]:
    """Serve on 127.0.0.1 (`port`, or a free one) in a thread; yields the base URL and the
    behaviour (with its request counts)."""
    behaviour = behaviour or Behaviour()
    server = _Server(("127.0.0.1", port), _handler(behaviour))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", behaviour
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    """Serve in this process until killed, printing the base URL first: a judge server of
    its own, as a real one runs (the benchmark's client then has the interpreter to itself)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="A chat-completions server on 127.0.0.1.")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--die-after", type=int, default=None, help="requests before dying")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    args = parser.parse_args()
    behaviour = Behaviour(delay_s=args.delay, die_after=args.die_after)
    with chat_server(behaviour, port=args.port) as (url, _):
        print(url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or kills us)


if __name__ == "__main__":
    main()
