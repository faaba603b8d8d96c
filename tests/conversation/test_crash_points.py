"""kill -9 the bot at every step between "user confirmed" and "summary sent", restart it.

Real processes: the console bot (`batchjob-bot --console`) against the sandbox of the test
process and the test's own redis-server. The file's caption confirms (`fast`), so the crash
lands after the user's confirmation. After the restart: at most one POST, the job watched to
its end, exactly one summary.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import TOKEN
from tests.conversation.test_redis_faults import OwnRedis

pytestmark = [
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
    pytest.mark.slow,  # processes killed and restarted: CI runs them (scripts/test, CI=true)
]

POINTS = [
    "effect.before:Precheck",  # the upload's step is not saved yet: the restart uploads again
    "handle.after_load:Prechecked",
    "handle.after_step:Prechecked",
    "handle.after_save:Prechecked",
    "effect.before:Reply",
    "effect.before:Submit",
    "submit.before_intent",
    "submit.after_post",
    "submit.after_record",
    "handle.after_load:Submitted",
    "handle.after_step:Submitted",
    "handle.after_save:Submitted",
    "effect.before:Watch",
    "watch.after_announce",
    "watch.after_add",
    "watcher.after_claim",
    "progress.after_edit",
    "watcher.before_reschedule",
    "watcher.after_reschedule",
    "watcher.after_get:completed",
    "summary.after_claim",
    "summary.after_send",  # its request had left: counted as sent, never repeated
    "watcher.after_finish",
]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    r = OwnRedis(tmp_path_factory.mktemp("redis"))
    r.start()
    yield r
    r.kill()


@pytest.fixture(autouse=True)
def own_tmp(tmp_path, monkeypatch):
    # A bot killed on purpose cannot remove its work folder: it goes under the test's own.
    monkeypatch.setenv("TMPDIR", str(tmp_path))


def bot_env(redis_server: OwnRedis, sandbox: Any, **extra: str) -> dict[str, str]:
    """This machine's environment without the bot's own settings, then the test's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "BATCHJOB_", "BJB_"))}
    env.update(
        REDIS_URL=redis_server.url,
        BATCHJOB_BASE_URL=sandbox.url,
        BATCHJOB_BEARER_TOKEN=TOKEN,
        BOT_WATCH_LEASE_SECONDS="1",
        LANG="C.UTF-8",
        **extra,
    )
    return env


def bot(env: dict[str, str], script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.main", "--console", "--wait", "60"],
        input=script,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize("point", POINTS)
def test_crash_then_restart(point, redis_server, sandbox, tmp_path):
    subprocess.run(["redis-cli", "-s", redis_server.sock, "flushall"], check=True, capture_output=True)
    sandbox.state.config.records_per_second = 2  # three records: long enough to see progress
    sandbox.state.submits = 0
    jobs_before = set(sandbox.state.jobs)
    src = tmp_path / "p.csv"
    src.write_text("prompt\nfox\nowl\ncat\n")
    env = bot_env(
        redis_server,
        sandbox,
        BOT_POLL_MIN_SECONDS="0.2",
        BOT_POLL_MAX_SECONDS="0.4",
        BOT_PROGRESS_EDIT_SECONDS="0",
    )
    first = bot({**env, "BJB_CRASH_AT": point}, f"/file {src} fast\n")
    assert first.returncode == -signal.SIGKILL, f"{point} was not reached:\n{first.stdout[-2000:]}"
    second = bot(env, "")
    assert second.returncode == 0, second.stderr[-2000:]
    new_jobs = set(sandbox.state.jobs) - jobs_before
    assert sandbox.state.submits <= 1 and len(new_jobs) == 1, (sandbox.state.submits, new_jobs)
    (job_id,) = new_jobs
    out = first.stdout + second.stdout
    assert len(re.findall(rf"Job {job_id} finished", out)) == 1, out[-3000:]
    assert sandbox.state.jobs[job_id].cancelled is None


def test_crash_between_recording_the_intent_and_the_post(redis_server, sandbox, tmp_path):
    """The intent says SUBMITTING and no job exists: whether the POST left cannot be known, so
    the bot looks for the job, finds none, and tells the user instead of posting again."""
    subprocess.run(["redis-cli", "-s", redis_server.sock, "flushall"], check=True, capture_output=True)
    sandbox.state.submits = 0
    src = tmp_path / "p.csv"
    src.write_text("prompt\nfox\n")
    env = bot_env(redis_server, sandbox)
    first = bot({**env, "BJB_CRASH_AT": "submit.after_intent"}, f"/file {src} fast\n")
    assert first.returncode == -signal.SIGKILL
    second = bot(env, "")
    assert second.returncode == 0 and sandbox.state.submits == 0
    assert "no matching job was found" in second.stdout and "It was not repeated" in second.stdout
