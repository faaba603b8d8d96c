"""A fake server's plumbing: a Starlette app on a real 127.0.0.1 port, in a thread of its own."""

from __future__ import annotations

import threading
import time
from typing import Any, Self

from batchjob.sandbox_server import listening_socket


class Served:
    def __init__(self) -> None:
        self.sock = listening_socket()  # answers without Nagle's delay, as real servers do
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def serve(self, app: Any) -> None:
        import uvicorn

        self.server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1)
        )
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> Self:
        self.thread.start()
        for _ in range(1000):  # a server that never starts fails the test, not hangs it
            if self.server.started:
                return self
            time.sleep(0.01)
        raise AssertionError("the fake server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
