"""A real HTTP receiver on 127.0.0.1 for the webhook tests: records every request and answers
from a script (status, headers, delay) so retries, Retry-After and 410 can be driven."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Receiver:
    url: str
    received: list[Received]
    #: Called with each request; returns the answer (default: 200 at once).
    answer: Callable[[Received], Answer]

    def ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.received]


@contextmanager
def receiver(answer: Callable[[Received], Answer] | None = None) -> Iterator[Receiver]:
    received: list[Received] = []
    lock = threading.Lock()
    state = Receiver(url="", received=received, answer=answer or (lambda _: Answer()))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            got = Received({k.lower(): v for k, v in self.headers.items()}, body)
            with lock:
                received.append(got)
            reply = state.answer(got)
            if reply.delay:
                time.sleep(reply.delay)
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_: object) -> None:
            return None

    class Server(ThreadingHTTPServer):
        # The default backlog of 5 overflows when a sender opens dozens of connections at
        # once; the kernel then resets some of them, which is the receiver's fault, not ours.
        request_queue_size = 1024

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
