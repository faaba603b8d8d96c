"""End-to-end benchmark: N concurrent chats through the real PTB Application.

Each chat drops a 1,000-row CSV and confirms with a "model mode" reply; the bot talks to the
fake Telegram Bot API server of the tests and to the sandbox BatchJob server, all over real
HTTP on 127.0.0.1, with its real flood control (1 message/s per chat, 30/s overall) and a
real Redis (REDIS_URL, default redis://127.0.0.1:6379; under a key prefix of its own). The two stand-in
services run in a process of their own, as the real ones are elsewhere: their work is not
charged to the bot's process.

Reports p50/p99 of document -> first reply and of confirmation -> job accepted ("submitted"
message), updates/s, lost updates (chats that never got their job accepted) and flood-limit
breaches counted by the fake server, and how many chats were in flight at once (between
their document and their job accepted) at the peak. `--spread S` lets the documents arrive
evenly over S seconds. Note: with 30 messages/s overall, N first replies take at least
N/30 s, so when N documents arrive in the same instant p99 document -> first reply cannot be
under 2 s beyond ~60 chats.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def services(conn, records_per_second: int) -> None:  # type: ignore[no-untyped-def]
    """Child process: the fake Bot API server and the sandbox, driven over a pipe."""
    from batchjob.sandbox import SandboxConfig, SandboxServer
    from tests.e2e.fake_telegram import FakeTelegram

    sandbox = SandboxServer(
        SandboxConfig(token="bench", records_per_second=records_per_second, queue_seconds=0.1, balance=10**9)
    ).start()
    tg = FakeTelegram().start()
    conn.send((tg.api_base, tg.file_base, sandbox.url))
    seen = 0
    while True:
        cmd, *args = conn.recv()
        if cmd == "doc":
            chat, path = args
            tg.send_document(chat, FakeTelegram.user(chat), Path(path))
            conn.send(time.monotonic())  # one clock for every process on this machine
        elif cmd == "text":
            chat, text = args
            tg.send_text(chat, FakeTelegram.user(chat), text)
            conn.send(time.monotonic())
        elif cmd == "messages":  # the messages sent since the last ask
            with tg.lock:
                new = [(m.chat_id, m.text, m.at) for m in tg.messages[seen:]]
                seen += len(new)
            conn.send(new)
        elif cmd == "breaches":
            conn.send(tg.flood_breaches_by_kind())
        elif cmd == "stop":
            tg.stop()
            sandbox.stop()
            conn.send(None)
            return


async def run(chats: int, rows: int, timeout: float, spread: float) -> dict:
    from batchjob.client import BatchJobClient, Timeouts
    from bot.telegram.app import TelegramBot
    from bot.telegram.settings import TelegramSettings
    from conversation.settings import ConversationSettings
    from conversation.store import redis_from_url
    from tests.e2e.fake_telegram import TOKEN

    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    csv = tmp / "prompts.csv"
    csv.write_text(
        "prompt,aspect_ratio\n" + "".join(f"a watercolor fox number {i},16:9\n" for i in range(rows))
    )
    redis = redis_from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
    prefix = f"bench-{os.getpid()}"  # its own keys on the given Redis, removed at the end
    conn, child_conn = mp.Pipe()
    child = mp.get_context("spawn").Process(target=services, args=(child_conn, 5000), daemon=True)
    child.start()
    api_base, file_base, sandbox_url = conn.recv()

    def ask(*cmd):  # type: ignore[no-untyped-def]
        conn.send(cmd)
        return conn.recv()

    bot = TelegramBot(
        TelegramSettings(
            telegram_bot_token=TOKEN, telegram_api_base_url=api_base, telegram_file_base_url=file_base
        ),
        ConversationSettings(
            media_dir=tmp / "media", poll_min_seconds=1, poll_max_seconds=3, redis_prefix=prefix
        ),
        redis,
        BatchJobClient(sandbox_url, "bench", timeouts=Timeouts(read=30), max_connections=50),
    )
    await bot.start()
    loop = asyncio.get_running_loop()
    doc_at: dict[int, float] = {}
    first_reply: dict[int, float] = {}
    confirm_at: dict[int, float] = {}
    accepted: dict[int, float] = {}

    async def users() -> None:
        for c in range(1, chats + 1):
            doc_at[c] = ask("doc", c, str(csv))
            if spread:
                await asyncio.sleep(spread / chats)  # arrivals evenly over `spread` seconds

    try:
        t0 = time.monotonic()
        arrivals = asyncio.create_task(users())
        deadline = loop.time() + timeout
        while len(accepted) < chats and loop.time() < deadline:
            for chat, text, at in ask("messages"):
                if chat not in first_reply:
                    first_reply[chat] = at
                if "Estimate:" in text and chat not in confirm_at:
                    confirm_at[chat] = ask("text", chat, "google/gemini-2.5-flash-image fast")
                if "submitted" in text and chat not in accepted:
                    accepted[chat] = at
            await asyncio.sleep(0.05)
        await arrivals
        wall = time.monotonic() - t0
        updates = bot.metrics["updates"]
        kinds = ask("breaches")
    finally:
        await bot.stop()
        await bot.client.aclose()
        ask("stop")
        child.join(5)
        async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
            await redis.delete(key)
        await redis.aclose()
        shutil.rmtree(tmp, ignore_errors=True)
    first = [first_reply[c] - doc_at[c] for c in first_reply]
    conf = [accepted[c] - confirm_at[c] for c in accepted if c in confirm_at]
    # Chats in flight at once: from the document until the job was accepted (or the end).
    events = sorted([(t, 1) for t in doc_at.values()] + [(accepted.get(c, t0 + wall), -1) for c in doc_at])
    in_flight = peak = 0
    for _, step in events:
        in_flight += step
        peak = max(peak, in_flight)
    return {
        "chats": chats,
        "first_p50": pct(first, 0.5),
        "first_p99": pct(first, 0.99),
        "accept_p50": pct(conf, 0.5),
        "accept_p99": pct(conf, 0.99),
        "updates_s": updates / wall,
        "lost": chats - len(accepted),
        "breaches": sum(kinds.values()),
        "kinds": kinds,
        "wall": wall,
        "peak": peak,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chats", default="50,200", help="comma-separated chat counts (e.g. 50,200,500)")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument(
        "--spread", type=float, default=0.0, help="seconds over which the documents arrive (0: at once)"
    )
    args = ap.parse_args()
    print(
        f"{'chats':>6}{'doc->1st p50':>14}{'p99':>8}{'confirm->job p50':>18}{'p99':>8}{'upd/s':>8}"
        f"{'lost':>6}{'breaches':>10}{'wall s':>8}{'at once':>9}"
    )
    for n in (int(x) for x in args.chats.split(",")):
        r = asyncio.run(run(n, args.rows, args.timeout, args.spread))
        print(
            f"{r['chats']:>6}{r['first_p50']:>14.2f}{r['first_p99']:>8.2f}{r['accept_p50']:>18.2f}"
            f"{r['accept_p99']:>8.2f}{r['updates_s']:>8.1f}{r['lost']:>6}{r['breaches']:>10}{r['wall']:>8.1f}"
            f"{r['peak']:>9}  {r['kinds']}"
        )


if __name__ == "__main__":
    main()
