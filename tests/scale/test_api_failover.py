"""A submission accepted by one `batchjob-bot --api` process whose callback is still owed
when that process is killed (-9): another replica, on the same Redis, sends it — with the
same webhook-id, signed, once the receiver takes it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import TOKEN
from tests.conversation.test_redis_faults import OwnRedis
from tests.scale.harness import free_port

pytestmark = [
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
    pytest.mark.slow,  # two processes and a kill -9: CI runs it (scripts/test, CI=true)
]
ROOT = Path(__file__).resolve().parents[2]


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.refuse = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                outer.got.append((dict(self.headers.items()), body))
                self.send_response(503 if outer.refuse else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/cb"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def wait(predicate, what: str, tries: int = 600):
    for _ in range(tries):  # bounded: a replica that never answers fails the test
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_callback_owed_by_a_killed_replica_is_sent_by_another(sandbox, tmp_path):
    (tmp_path / "redis").mkdir()
    redis = OwnRedis(tmp_path / "redis")
    redis.start()
    receiver = Receiver()
    procs: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "REDIS_URL": redis.url,
        "BOT_REDIS_PREFIX": "apifail",
        "BATCHJOB_BASE_URL": sandbox.url,
        "BATCHJOB_BEARER_TOKEN": TOKEN,
        "BOT_UNSAFE_ALLOW_LOOPBACK_URLS": "true",
        "BOT_REPLICA_LEASE_SECONDS": "1",
    }

    def replica(name: str) -> str:
        port = free_port()
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bot.main", "--api"],
                env={**env, "BOT_LISTEN_PORT": str(port), "BOT_MEDIA_DIR": str(tmp_path / name)},
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        base = f"http://127.0.0.1:{port}"
        wait(lambda: _up(base), f"replica {name}")
        return base

    try:
        made = subprocess.run(
            [sys.executable, "-m", "bot.main", "keys", "create", "--name", "failover"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        key = made.split("key: ", 1)[1].split()[0]
        secret = made.split("callback signing secret: ", 1)[1].split()[0]
        first = replica("a")
        r = httpx.post(
            f"{first}/v1/submissions",
            headers={"Authorization": f"Bearer {key}"},
            json={"rows": [{"prompt": "a fox"}], "callback": {"url": receiver.url}, "metadata": {"run": 1}},
            timeout=60,
        )
        assert r.status_code == 202 and r.json()["state"] == "awaiting_confirmation"
        wait(lambda: receiver.got, "the first (refused) attempt")
        os.killpg(procs[0].pid, signal.SIGKILL)  # dies with the callback still owed
        procs[0].wait()
        attempts = len(receiver.got)
        receiver.refuse = False
        replica("b")
        # Retried with backoff (5 s after the first refusal): the new replica's sender sends it.
        wait(lambda: len(receiver.got) > attempts, "the callback from the other replica", tries=800)
        headers, body = receiver.got[-1]
        ids = {h["webhook-id"] for h, _ in receiver.got}
        assert len(ids) == 1  # one delivery, retried across replicas: receivers dedupe
        Webhook(secret).verify(body, headers)
        doc = json.loads(body)
        assert doc["event"] == "awaiting_confirmation" and doc["metadata"] == {"run": 1}
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        receiver.shutdown()
        redis.kill()


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
