"""A fake server's plumbing: a Starlette app on a real 127.0.0.1 port, in a thread of its own."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Self


class Served:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
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
