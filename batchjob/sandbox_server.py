"""The sandbox served: on a socket that answers as real front ends do, in a background
thread (tests, demos) or in the foreground (`batchjob sandbox`)."""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time

from batchjob.sandbox import create_app
from batchjob.sandbox_state import SandboxConfig, SandboxState


def listening_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A bound TCP socket for uvicorn's `sockets=`. Made with IPPROTO_TCP spelled out: its
    connections inherit the protocol number, and asyncio turns Nagle's algorithm off only on
    sockets that report it. With proto 0, every answer after the first on a kept connection
    waited ~40 ms for the peer's delayed ACK (uvicorn issue #3149) - a server that does not
    answer as Telegram's or the service's front ends do."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


class SandboxServer:
    """The sandbox on a free port of 127.0.0.1, in a background thread (tests, demos)."""

    _ids = itertools.count()

    def __init__(self, config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.app = create_app(config)
        self.sock = listening_socket(host, port)
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, log_level="warning", access_log=False, timeout_graceful_shutdown=1)
        )
        self.thread = threading.Thread(target=self._run, name=f"sandbox-{next(self._ids)}", daemon=True)

    @property
    def state(self) -> SandboxState:
        return self.app.state.sandbox

    def _run(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self) -> SandboxServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("sandbox did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self.sock.close()
        self.app.state.tmp.cleanup()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(host: str, port: int, config: SandboxConfig) -> None:
    import uvicorn

    uvicorn.run(create_app(config), host=host, port=port, log_level="info")
