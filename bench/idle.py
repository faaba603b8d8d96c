"""Idle benchmark: what a running bot costs when nobody writes to it.

Starts a redis-server of its own (nothing else counts against it), the stand-in Bot API and
BatchJob services of the tests in this process's threads, and `batchjob-bot` (Telegram,
long polling) as a child process. After a warm-up it counts, over the measured window, the
Redis commands the bot sent (INFO commandstats, scripts' inner commands included) and reads
the bot's resident memory. The baseline in the same run is a bare Python process with the
bot's packages imported (`import bot.main, telegram, redis, httpx`): the memory any bot
written this way starts from.

Targets: <= 5 Redis commands/s and <= 60 MiB RSS when idle.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import describe  # noqa: E402 (bench/ is on the path: the scripts run from there)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def commands(port: int) -> tuple[int, dict[str, int]]:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "info", "commandstats"], capture_output=True, text=True, check=True
    ).stdout
    per: dict[str, int] = {}
    for line in out.splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_") :].split(":", 1)
            per[name] = int(rest.split(",")[0].split("=")[1])
    per = {k: v for k, v in per.items() if k not in ("info",)}  # our own questions
    return sum(per.values()), per


def main(warmup: float, seconds: float) -> None:
    from batchjob.sandbox_server import SandboxServer
    from batchjob.sandbox_state import SandboxConfig
    from tests.e2e.fake_telegram import TOKEN, FakeTelegram

    work = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(work)],
        stdout=subprocess.DEVNULL,
    )
    sandbox = SandboxServer(SandboxConfig(token="bench")).start()
    telegram = FakeTelegram().start()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "BATCHJOB_", "TELEGRAM_", "REDIS_"))
    }
    env.update(
        REDIS_URL=f"redis://127.0.0.1:{port}/0",
        BATCHJOB_BASE_URL=sandbox.url,
        BATCHJOB_BEARER_TOKEN="bench",
        TELEGRAM_BOT_TOKEN=TOKEN,
        TELEGRAM_API_BASE_URL=telegram.api_base,
        TELEGRAM_FILE_BASE_URL=telegram.file_base,
        BOT_MEDIA_DIR=str(work / "media"),
        # This tree's code, not whichever the interpreter would find first (a before/after run).
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    )
    bot = subprocess.Popen([sys.executable, "-m", "bot.main"], env=env, stderr=subprocess.DEVNULL)
    base = subprocess.Popen(
        [sys.executable, "-c", "import bot.main, telegram, redis, httpx, sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
    )
    try:
        time.sleep(warmup)
        assert bot.poll() is None, "the bot stopped during the warm-up"
        first, _ = commands(port)
        time.sleep(seconds)
        last, per = commands(port)
        bot_rss, base_rss = rss_mib(bot.pid), rss_mib(base.pid)
    finally:
        for p in (bot, base, redis):
            p.terminate()
            p.wait(10)
        telegram.stop()
        sandbox.stop()
        shutil.rmtree(work, ignore_errors=True)
    rate = (last - first) / seconds
    print(describe())
    print(f"idle bot (Telegram long polling), {seconds:.0f} s measured after {warmup:.0f} s:")
    print(f"  Redis commands/s: {rate:.2f}   (target <= 5: {'met' if rate <= 5 else 'NOT met'})")
    print(
        f"  RSS: {bot_rss:.1f} MiB; baseline (the packages imported, nothing running) {base_rss:.1f} MiB; "
        f"ratio {bot_rss / base_rss:.2f}x   (target <= 60 MiB: {'met' if bot_rss <= 60 else 'NOT met'})"
    )
    print("  commands since start, by name:", ", ".join(f"{k} {v}" for k, v in sorted(per.items())))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    a = ap.parse_args()
    main(a.warmup, a.seconds)
