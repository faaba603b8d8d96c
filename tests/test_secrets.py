"""Secrets stay out of start-up failures, tracebacks in logs, and what the service says.

Start-up failures run the real `batchjob-bot` process against a fake Bot API that refuses
the token, a base that answers 404, an unreachable API, an unreachable Redis and a bad
setting: each is one line saying what to fix, exit code 3, with no token anywhere.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import httpx
import pytest

from batchjob import redaction
from batchjob.client import BatchJobClient
from batchjob.errors import ValidationError
from conversation.submission import service_failure
from tests.e2e.fake_telegram import TOKEN as FAKE_API_TOKEN
from tests.e2e.fake_telegram import FakeTelegram

BOT_TOKEN = "999999:Wrong-TOKEN-never-shown"
BEARER = "bearer-TOKEN-never-shown"
REDIS_PASSWORD = "redis-password-never-shown"


@pytest.fixture(scope="module")
def fake_api():
    fake = FakeTelegram().start()
    yield fake
    fake.stop()


def _run(**env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "BATCHJOB_", "TELEGRAM_", "REDIS_"))
    }
    full = {
        **base,
        "LANG": "C.UTF-8",
        "BATCHJOB_BEARER_TOKEN": BEARER,
        "TELEGRAM_BOT_TOKEN": BOT_TOKEN,
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "bot.main"],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("refused", "refused TELEGRAM_BOT_TOKEN"),
        ("404", "refused TELEGRAM_BOT_TOKEN"),
        ("unreachable", "cannot be reached"),
        ("redis", "REDIS_URL"),
        ("setting", "BOT_POLL_MIN_SECONDS"),
        ("half a webhook", "BOT_WEBHOOK_SECRET is not set"),
    ],
)
def test_a_start_failure_is_one_line_without_secrets(case, says, fake_api):
    env = {
        "refused": {"TELEGRAM_API_BASE_URL": fake_api.api_base},
        "404": {"TELEGRAM_API_BASE_URL": fake_api.api_base.replace("/bot", "/missing")},
        "unreachable": {"TELEGRAM_API_BASE_URL": "http://127.0.0.1:9/bot"},
        "redis": {"REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:9/0"},
        "setting": {"BOT_POLL_MIN_SECONDS": "soon"},
        "half a webhook": {"BOT_WEBHOOK_URL": "https://bot.example.com/hook"},  # no silent polling
    }[case]
    r = _run(**env)
    out = r.stdout + r.stderr
    assert r.returncode == 3, out
    for secret in (BOT_TOKEN, BOT_TOKEN.split(":")[1], BEARER, REDIS_PASSWORD):
        assert secret not in out
    assert "Traceback" not in out
    errors = [line for line in r.stderr.splitlines() if line.startswith("batchjob-bot:")]
    assert len(errors) == 1 and says in errors[0], out
    assert (
        len([line for line in out.splitlines() if line.strip()]) <= 2
    )  # that line and the memory-store warning


def test_a_traceback_in_a_log_record_is_redacted(caplog):
    redaction.register("tb-secret-token-123")
    redaction.install_log_redaction()
    try:
        raise RuntimeError("The token `tb-secret-token-123` was rejected by the server.")
    except RuntimeError:
        with caplog.at_level(logging.DEBUG):
            logging.getLogger("telegram.ext").exception("start failed")
    assert "tb-secret-token-123" not in caplog.text and "The token `***`" in caplog.text


async def test_a_service_echoing_our_token_never_shows_it():
    """A service that echoes the Authorization header into its error message: the error,
    and the sentence the user would see, carry neither the token nor control characters."""

    def echo(request: httpx.Request) -> httpx.Response:
        auth = request.headers["Authorization"]
        body = {"error": {"code": "bad_request", "message": f"bad header {auth}\x1b[31m " + "x" * 2000}}
        return httpx.Response(400, json=body)

    client = BatchJobClient("http://svc.test", "echoed-bearer-token-1", transport=httpx.MockTransport(echo))
    async with client:
        with pytest.raises(ValidationError) as caught:
            await client.precheck(3, "m/x", "fast")
    e = caught.value
    assert "echoed-bearer-token-1" not in e.message and "Bearer ***" in e.message
    assert len(e.message) <= 500 and "\x1b" not in e.message
    failed = service_failure("precheck", e)
    assert "echoed-bearer-token-1" not in failed.message and len(failed.message) <= 300


def test_polling_mode_serves_health_and_metrics_when_a_port_is_set(fake_api, tmp_path):
    """Long polling with BOT_LISTEN_PORT: /healthz and /metrics are there too."""
    import signal
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "BATCHJOB_", "TELEGRAM_", "REDIS_"))
    }
    env = {
        **base,
        "LANG": "C.UTF-8",
        "BATCHJOB_BEARER_TOKEN": BEARER,
        "BATCHJOB_BASE_URL": "http://127.0.0.1:9",
        "TELEGRAM_BOT_TOKEN": FAKE_API_TOKEN,
        "TELEGRAM_API_BASE_URL": fake_api.api_base,
        "TELEGRAM_FILE_BASE_URL": fake_api.file_base,
        "BOT_LISTEN_HOST": "127.0.0.1",
        "BOT_LISTEN_PORT": str(port),
        "BOT_MEDIA_DIR": str(tmp_path / "media"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.main"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        answer = None
        deadline = time.monotonic() + 30
        while answer is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
            except httpx.HTTPError:
                time.sleep(0.1)
        assert answer is not None, proc.stderr.read().decode() if proc.poll() is not None else "no answer"
        # The service at port 9 is down: unhealthy, and saying so; metrics from this machine.
        assert answer.status_code == 503 and answer.json()["batchjob"] is False
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
