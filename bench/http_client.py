"""HTTP client benchmark: CPU per request through httpx's client (on our asyncio transport,
as the bot used it before) against `batchjob.http_pool` (what the Telegram and BatchJob
calls use now), in the same run.

A server in another process answers every POST with a small JSON body (a Bot API answer's
size) on kept-alive connections; the client sends `--requests` POSTs, `--concurrency` at a
time, and reads each answer as JSON. Only the client's process time is counted; the tools
alternate over `--repeats` rounds so a burst of other load cannot land on one of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import describe  # noqa: E402 (bench/ is on the path: the scripts run from there)

BODY = json.dumps(
    {"ok": True, "result": {"message_id": 5, "date": 1, "chat": {"id": 1, "type": "private"}, "text": "hi"}}
).encode()
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(BODY),
    BODY,
)


class Server(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            length = 0
            for line in self.buffer[:end].split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.transport.write(ANSWER)  # type: ignore[attr-defined]


def serve(sock: socket.socket) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Server, sock=sock)
        await server.serve_forever()

    asyncio.run(main())


async def one_round(tool: str, url: str, requests: int, concurrency: int) -> float:
    """Process seconds per request for `tool`."""
    if tool == "httpx":
        import httpx

        from batchjob.http_transport import asyncio_transport

        client = httpx.AsyncClient(transport=asyncio_transport(max_connections=concurrency))

        async def call() -> None:
            answer = await client.post(url, data={"chat_id": "1", "text": "hi"})
            answer.json()

        close = client.aclose
    else:
        from batchjob.http_pool import ConnectionPool

        pool = ConnectionPool(max_connections=concurrency)
        headers = [(b"Content-Type", b"application/x-www-form-urlencoded")]

        async def call() -> None:
            answer = await pool.request("POST", url, headers=headers, content=b"chat_id=1&text=hi")
            json.loads(answer.body)

        close = pool.aclose

    async def worker(n: int) -> None:
        for _ in range(n):
            await call()

    await asyncio.gather(*(worker(10) for _ in range(concurrency)))  # connections made, warm
    start = time.process_time()
    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    spent = time.process_time() - start
    await close()
    return spent / (requests // concurrency * concurrency)


def main(requests: int, concurrency: int, repeats: int) -> None:
    from batchjob.sandbox_server import listening_socket

    sock = listening_socket()  # no Nagle's delay on kept connections
    sock.listen(256)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/bot1:x/sendMessage"
    server = mp.get_context("fork").Process(target=serve, args=(sock,), daemon=True)
    server.start()
    results: dict[str, list[float]] = {"httpx": [], "pool": []}
    try:
        for _ in range(repeats):
            for tool in results:
                results[tool].append(asyncio.run(one_round(tool, url, requests, concurrency)))
    finally:
        server.kill()
    print(describe())
    print(f"{requests} POSTs, {concurrency} at a time, small JSON answers; CPU of the client per request")
    for tool, runs in results.items():
        print(f"{tool:6} " + " ".join(f"{r * 1e6:7.0f} us" for r in runs))
    ratio = statistics.median(results["pool"]) / statistics.median(results["httpx"])
    print(f"pool / httpx: {ratio:.2f}x")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    main(a.requests, a.concurrency, a.repeats)
