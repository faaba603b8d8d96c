"""Redis faults with a real redis-server of the test's own (AOF on, on a free port)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from batchjob.client import BatchJobClient
from conversation.app import ConversationApp
from conversation.events import FileReceived, TextReceived
from conversation.settings import ConversationSettings
from conversation.store import redis_from_url
from tests.conftest import TOKEN

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
CHAT = 300


class OwnRedis:
    """redis-server with AOF (fsync always) in a temp dir; can be killed and restarted."""

    def __init__(self, directory) -> None:
        self.dir = directory
        # A Unix socket of its own, not a TCP port: while it is down for an outage, no other
        # test (tests run in parallel) can take its address and answer in its place.
        self.sock = os.path.join(tempfile.mkdtemp(prefix="bjb-redis-"), "redis.sock")
        self.url = f"unix://{self.sock}?db=0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                "0",
                "--unixsocket",
                self.sock,
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            assert self.proc.poll() is None, "redis-server exited"
            try:
                with socket.socket(socket.AF_UNIX) as c:
                    c.settimeout(0.2)
                    c.connect(self.sock)
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # no clean shutdown: AOF is all there is
        self.proc.wait()


@pytest.fixture
def own_redis(tmp_path):
    r = OwnRedis(tmp_path)
    r.start()
    yield r
    if r.proc and r.proc.poll() is None:
        r.kill()


def settings(tmp_path):
    return ConversationSettings(
        media_dir=tmp_path / "media", poll_min_seconds=0.05, poll_max_seconds=0.2, progress_edit_seconds=0
    )


async def wait_for(predicate, timeout=30.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline
        await asyncio.sleep(0.05)


async def test_aof_restart_loses_no_state(own_redis, channel, sandbox, write, tmp_path):
    client = BatchJobClient(sandbox.url, TOKEN)
    redis = redis_from_url(own_redis.url)
    app = ConversationApp(redis, client, channel, settings(tmp_path))
    src = write("p.csv", "prompt\nfox\nowl\n")
    await app.runner.handle(CHAT, FileReceived(str(src), "p.csv", 20), client_lang="en")
    assert (await app.store.load(CHAT)).phase == "awaiting_confirm"
    own_redis.kill()
    own_redis.start()  # same directory: the AOF is replayed
    state = await app.store.load(CHAT)
    assert state.phase == "awaiting_confirm" and state.pending is not None and state.pending.file_id
    await app.runner.handle(CHAT, TextReceived("ok"))
    app.start_watcher()
    await wait_for(_done(channel, "finished"))
    await app.stop()
    await client.aclose()
    await redis.aclose()
    assert sandbox.state.submits == 1 and sum("finished" in t for t in channel.texts()) == 1


def _done(channel, needle):
    async def check() -> bool:
        return any(needle in t for t in channel.texts())

    return check


@pytest.mark.slow  # a real 30-second outage: CI runs it (scripts/test, CI=true)
async def test_redis_unreachable_for_30_seconds(own_redis, channel, sandbox, write, tmp_path):
    sandbox.state.config.records_per_second = 1  # the job outlives the outage
    client = BatchJobClient(sandbox.url, TOKEN)
    redis = redis_from_url(own_redis.url)
    app = ConversationApp(redis, client, channel, settings(tmp_path))
    app.start_watcher()
    src = write("p.csv", "prompt\n" + "".join(f"p{i}\n" for i in range(40)))
    await app.runner.handle(CHAT, FileReceived(str(src), "p.csv", 200), client_lang="zh")
    await app.runner.handle(CHAT, TextReceived("ok"), client_lang="zh")
    assert len((await app.store.load(CHAT)).jobs) == 1
    own_redis.kill()
    loop = asyncio.get_running_loop()
    outage_end = loop.time() + 30
    await app.runner.handle(CHAT, TextReceived("/status"), client_lang="zh")
    assert channel.texts()[-1] == "机器人暂时不可用，请一分钟后再试。"
    other = CHAT + 1
    await app.runner.handle(other, FileReceived(str(src), "p.csv", 200), client_lang="en")
    assert channel.texts(other) == ["The bot is temporarily unavailable. Please try again in a minute."]
    await asyncio.sleep(max(0.0, outage_end - loop.time()))  # the outage itself: 30 s without Redis
    assert app._task is not None and not app._task.done()  # the watcher survived
    own_redis.start()
    await wait_for(_done(channel, "已结束"), timeout=90)
    await app.runner.handle(other, FileReceived(str(src), "p.csv", 200), client_lang="en")
    assert "Estimate" in channel.texts(other)[-1]  # flows continue after recovery
    await app.stop()
    await client.aclose()
    await redis.aclose()
    assert sandbox.state.submits == 1 and sum("已结束" in t for t in channel.texts(CHAT)) == 1
