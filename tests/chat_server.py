"""A real OpenAI-compatible chat-completions server on 127.0.0.1, for the HTTP judge's tests
and benchmark: `POST /v1/chat/completions` answers a judge question by reading the
description (the first option whose text it mentions, else "unknown"). Behaviours for
faults: a delay per request, replies slower than any timeout, garbage, failing with 503
the first N times, and a required bearer key."""

from __future__ import annotations

import contextlib
import json
import re
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
    """Answer 503 to this many requests before answering normally."""
    key: str | None = None
    """The bearer key every request must carry (401 otherwise)."""
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def answer(messages: list[dict]) -> str:
    user = messages[-1]["content"]
    description = re.search(r"Description of the video: (.*)", user)
    seen = description.group(1).lower() if description else ""
    for letter, text in re.findall(r"^([A-Z])\. (.+)$", user, re.MULTILINE):
        if text.lower() in seen:
            return f"<answer>{letter}</answer>"
    return "The description does not say. <answer>unknown</answer>"


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
                if number <= behaviour.fail_first:
                    return self._send(503, b'{"error": "overloaded"}')
                if behaviour.garbage:
                    return self._send(200, b"<html>not a completion</html>")
                reply = {
                    "choices": [
                        {"message": {"role": "assistant", "content": answer(body["messages"])}}
                    ]
                }
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


@contextlib.contextmanager
def chat_server(
    behaviour: Behaviour | None = None, port: int = 0
) -> Iterator[tuple[str, Behaviour]]:
    """Serve on 127.0.0.1 (`port`, or a free one) in a thread; yields the base URL and the
    behaviour (with its request counts)."""
    behaviour = behaviour or Behaviour()
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(behaviour))
    server.daemon_threads = True
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
    args = parser.parse_args()
    with chat_server(Behaviour(delay_s=args.delay)) as (url, _):
        print(url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or kills us)


if __name__ == "__main__":
    main()
