"""Several real `batchjob-bot` processes in webhook mode behind a forwarder that delivers
updates as Telegram does: each POST to the next replica (round robin, as a load balancer);
a refused, dropped, timed-out or non-200 delivery is tried again on another replica, after
a growing pause, until one answers 200. Used by the failover test and bench/scale.py."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.fake_telegram import TOKEN as TELEGRAM_TOKEN

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-value"
HOOK_PATH = "/tg/hook"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Fleet:
    """N bot processes on one Redis, each with a media directory of its own (no shared disk),
    against the fake Bot API server and the sandbox."""

    def __init__(
        self,
        n: int,
        *,
        redis_url: str,
        telegram: Any,
        sandbox: Any,
        service_token: str,
        workdir: Path,
        prefix: str,
        shared_media: bool = False,
        **env: str,
    ) -> None:
        self.n = n
        self.shared_media = shared_media
        self.workdir = workdir
        self.ports = [free_port() for _ in range(n)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n
        self.dead: set[int] = set()
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("BOT_", "BATCHJOB_", "BJB_", "TELEGRAM_"))
        }
        base.update(
            REDIS_URL=redis_url,
            TELEGRAM_BOT_TOKEN=TELEGRAM_TOKEN,
            TELEGRAM_API_BASE_URL=telegram.api_base,
            TELEGRAM_FILE_BASE_URL=telegram.file_base,
            BATCHJOB_BASE_URL=sandbox.url,
            BATCHJOB_BEARER_TOKEN=service_token,
            BOT_WEBHOOK_URL=f"https://bot.example.com{HOOK_PATH}",
            BOT_WEBHOOK_SECRET=SECRET,
            BOT_LISTEN_HOST="127.0.0.1",
            BOT_REDIS_PREFIX=prefix,
            LANG="C.UTF-8",
            PYTHONPATH=str(ROOT),
            **env,
        )
        self.env = base

    def start(self) -> None:
        for i in range(self.n):
            media = self.workdir / ("media" if self.shared_media else f"media-{i}")
            log = open(self.workdir / f"replica-{i}.log", "wb")  # noqa: SIM115 (closed with the process)
            self.procs[i] = subprocess.Popen(
                [sys.executable, "-m", "bot.main"],
                env={
                    **self.env,
                    "BOT_LISTEN_PORT": str(self.ports[i]),
                    "BOT_MEDIA_DIR": str(media),
                    "BOT_REPLICA_ID": f"r{i}",
                },
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()

    async def ready(self, attempts: int = 600) -> None:
        """Every replica answers /healthz with 200. A replica that exits, or is still not up
        after `attempts` tries a tenth of a second apart, fails with its log."""
        async with httpx.AsyncClient(timeout=2) as c:
            for i, port in enumerate(self.ports):
                for _ in range(attempts):
                    proc = self.procs[i]
                    assert proc is not None and proc.poll() is None, self.log(i)[-3000:]
                    try:
                        if (await c.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError(f"replica {i} did not start:\n{self.log(i)[-3000:]}")

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}{HOOK_PATH}"

    def kill(self, i: int) -> float:
        """kill -9; returns the moment (time.monotonic)."""
        proc = self.procs[i]
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        at = time.monotonic()
        proc.wait(10)
        self.dead.add(i)
        return at

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            if proc is not None:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)

    def log(self, i: int) -> str:
        path = self.workdir / f"replica-{i}.log"
        return path.read_text(errors="replace") if path.exists() else ""


class Forwarder:
    """Telegram's webhook delivery through a round-robin load balancer."""

    def __init__(self, fleet: Fleet, timeout: float = 60.0) -> None:
        self.fleet = fleet
        self.client = httpx.AsyncClient(timeout=timeout)
        self.turn = 0
        self.in_flight: Counter[int] = Counter()
        self.attempts = 0
        self.retries = 0
        self.answers: Counter[str] = Counter()

    async def deliver(self, update: dict[str, Any], give_up_s: float = 120.0) -> None:
        deadline = time.monotonic() + give_up_s
        pause = 0.1
        while True:
            i = self.turn % self.fleet.n
            self.turn += 1
            self.attempts += 1
            self.in_flight[i] += 1
            try:
                r = await self.client.post(
                    self.fleet.url(i), json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
                )
                self.answers[str(r.status_code)] += 1
                if r.status_code == 200:
                    return
            except httpx.HTTPError as e:
                self.answers[type(e).__name__] += 1
            finally:
                self.in_flight[i] -= 1
            self.retries += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"update {update.get('update_id')} never delivered")
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, 1.0)

    async def aclose(self) -> None:
        await self.client.aclose()


@dataclass
class Run:
    """What happened to each chat, in time.monotonic() seconds (one clock: the fake Bot API
    server runs in this process)."""

    doc_at: dict[int, float] = field(default_factory=dict)
    first_reply: dict[int, float] = field(default_factory=dict)
    confirm_at: dict[int, float] = field(default_factory=dict)
    accepted: dict[int, float] = field(default_factory=dict)
    finished: dict[int, float] = field(default_factory=dict)
    kill_at: float | None = None
    jobs: dict[int, str] = field(default_factory=dict)  # chat -> job id (from "submitted")
    unsummarized: dict[int, str] = field(default_factory=dict)  # job ended, its summary cut by a kill
    deliveries: list[asyncio.Task[None]] = field(default_factory=list)


def _press(telegram: Any, chat: int, data: str) -> dict[str, Any]:
    update = {
        "callback_query": {
            "id": f"cb{chat}-{time.monotonic_ns()}",
            "from": telegram.user(chat),
            "chat_instance": "ci",
            "data": data,
            "message": {"message_id": 1, "date": int(time.time()), "chat": telegram.chat(chat), "text": "x"},
        }
    }
    telegram._push(update)
    return update


async def drive(
    telegram: Any,
    fwd: Forwarder,
    files: dict[int, Path],
    *,
    confirm: str = "google/gemini-2.5-flash-image fast",
    on_tick: Callable[[Run], Awaitable[None]] | None = None,
    summary_cut: Callable[[str], Awaitable[bool]] | None = None,
    timeout: float = 180.0,
) -> Run:
    """Every chat drops its file at once, answers the invalid-rows question with "send the
    valid rows" and the estimate with `confirm`, and waits for its summary. `on_tick` runs
    every few ms (the test's chance to kill a replica at the moment it chooses).
    `summary_cut(job_id)` says whether a job ended with its summary's request cut short by a
    kill (it may or may not have arrived, and is never sent twice): such a chat is done too."""
    run = Run()

    def send(update: dict[str, Any]) -> None:
        run.deliveries.append(asyncio.create_task(fwd.deliver(update)))

    for chat, path in files.items():
        update = telegram.send_document(chat, telegram.user(chat), path)
        run.doc_at[chat] = time.monotonic()
        send(update)
    pressed: set[int] = set()
    asked: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(run.finished) + len(run.unsummarized) < len(files):
        with telegram.lock:
            messages = list(telegram.messages)
        for m in messages:
            chat = m.chat_id
            if chat not in files:
                continue
            run.first_reply.setdefault(chat, m.at)
            valid = [b["callback_data"] for row in (m.markup or {}).get("inline_keyboard", []) for b in row]
            valid = [d for d in valid if d.startswith("c:valid:")]
            if valid and chat not in pressed:
                pressed.add(chat)
                send(_press(telegram, chat, valid[0]))
            estimate = m.text.startswith("Estimate:") or "\nEstimate:" in m.text
            if estimate and chat not in run.confirm_at:
                run.confirm_at[chat] = time.monotonic()
                send(telegram.send_text(chat, telegram.user(chat), confirm))
            if "may be missing" in m.text and chat not in run.confirm_at and chat not in asked:
                # As a user would: the bot says a message may be missing; ask for it again.
                asked.add(chat)
                send(telegram.send_text(chat, telegram.user(chat), "/again"))
            if " submitted (" in m.text:
                run.accepted.setdefault(chat, m.at)
                run.jobs.setdefault(chat, m.text.split()[1])
            if " finished: " in m.text:
                run.finished.setdefault(chat, m.at)
        if on_tick is not None:
            await on_tick(run)
        if summary_cut is not None and run.kill_at is not None:
            for chat, job_id in run.jobs.items():
                if chat not in run.finished and chat not in run.unsummarized and await summary_cut(job_id):
                    run.unsummarized[chat] = job_id
        if time.monotonic() > deadline:
            missing = sorted(set(files) - set(run.finished) - set(run.unsummarized))
            raise AssertionError(f"chats without a summary: {missing}\n{_last_words(telegram, missing)}")
        await asyncio.sleep(0.02)
    await asyncio.gather(*run.deliveries)
    return run


def _last_words(telegram: Any, chats: list[int]) -> str:
    """What each chat last saw from the bot: where a stalled run stopped."""
    lines = []
    for chat in chats:
        shown = telegram.shown(chat)
        last = shown[-1][:160].replace("\n", " | ") if shown else "(nothing)"
        lines.append(f"chat {chat}: {len(shown)} texts; last: {last}")
    return "\n".join(lines)


async def dump(redis_url: str, prefix: str, path: Path) -> None:
    """Every key of a run (state, outbox, jobs, leases), for the report of a failed run."""
    from conversation.store import connect

    r, _ = await connect(redis_url)
    lines = []
    async for key in r.scan_iter(match=f"{prefix}:*", count=1000):
        kind = (await r.type(key)).decode()
        if kind == "string":
            value: Any = await r.get(key)
        elif kind == "hash":
            value = await r.hgetall(key)
        elif kind == "set":
            value = await r.smembers(key)
        elif kind == "zset":
            value = await r.zrange(key, 0, -1, withscores=True)
        else:
            value = kind
        lines.append(f"{key.decode()}: {value!r}")
    await r.aclose()
    path.write_text("\n".join(sorted(lines)))
