from __future__ import annotations

import dataclasses
import logging
import os

import pytest

from batchjob.client import BatchJobClient, Timeouts
from batchjob.sandbox_server import SandboxServer
from batchjob.sandbox_state import SandboxConfig

TOKEN = "test-token-Z9q"
# Secrets used across the run: none may appear in any log record (checked at the end).
SECRETS = (TOKEN, "123456:TEST-token-aBcDeF", "s3cret-value", "s3cr3t-token-value")


class _SecretWatch(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record is not a leak
            return
        if record.exc_info and record.exc_info[1] is not None:
            text += " " + repr(record.exc_info[1])
        for secret in SECRETS:
            if secret in text:
                self.leaks.append(f"{record.name}: {text[:200]}")


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_logs():
    """Across the whole test run, the bot token and the bearer tokens never reach a log."""
    watch = _SecretWatch()
    root = logging.getLogger()
    root.addHandler(watch)
    # Every logger that could see a URL, a header or a setting, at its most talkative.
    talkative = ["httpx", "telegram", "batchjob", "conversation", "bot", "uvicorn", "starlette", "redis"]
    old = {name: logging.getLogger(name).level for name in talkative}
    for name in talkative:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield watch
    root.removeHandler(watch)
    for name, level in old.items():
        logging.getLogger(name).setLevel(level)
    assert not watch.leaks, watch.leaks


@pytest.fixture
def write(tmp_path):
    """write(name, text_or_bytes, encoding="utf-8") -> Path"""

    def _write(name: str, data: str | bytes, encoding: str = "utf-8"):
        path = tmp_path / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode(encoding))
        return path

    return _write


@pytest.fixture(scope="session")
def sandbox_server():
    with SandboxServer(SandboxConfig(token=TOKEN)) as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server):
    """The shared sandbox with default knobs, fast jobs and a fresh balance."""
    state = sandbox_server.state
    fresh = SandboxConfig(token=TOKEN, records_per_second=200.0, queue_seconds=0.05)
    for f in dataclasses.fields(SandboxConfig):
        setattr(state.config, f.name, getattr(fresh, f.name))
    state.balance = fresh.balance
    state.submits = 0
    state.requests = 0
    return sandbox_server


@pytest.fixture
async def client(sandbox):
    c = BatchJobClient(sandbox.url, TOKEN, timeouts=Timeouts(read=5), backoff_base=0.01)
    yield c
    await c.aclose()


@pytest.fixture(autouse=True)
def own_keys(monkeypatch):
    """Each test writes under its own key prefix, so that on a shared Redis it touches (and
    removes) only its own keys."""
    import secrets

    from conversation import keys

    k = keys.Keys(prefix=f"t{secrets.token_hex(4)}")
    monkeypatch.setattr(keys, "default", k)
    return k


@pytest.fixture
async def redis(own_keys):
    """fakeredis by default; the Redis (standalone or cluster) named by REDIS_URL when set.
    Nothing is flushed: the test's own keys are removed at the end."""
    url = os.environ.get("REDIS_URL")
    if url:
        from conversation.store import connect

        r, _ = await connect(url)
    else:
        r = in_process_redis()
    yield r
    if url:
        async for key in r.scan_iter(match=f"{own_keys.prefix}:*", count=1000):
            await r.delete(key)
    await r.aclose()


def in_process_redis():
    """fakeredis as the bot runs it without a Redis (`conversation.store.in_process_redis`)."""
    from conversation.store import in_process_redis as make

    return make()
