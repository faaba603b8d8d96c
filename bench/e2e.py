"""End-to-end benchmark: N concurrent chats through the real PTB Application.

Each chat drops a 1,000-row CSV and confirms with a "model mode" reply; the bot talks to the
fake Telegram Bot API server of the tests and to the sandbox BatchJob server, all over real
HTTP on 127.0.0.1, with its real flood control (1 message/s per chat, 30/s overall) and a
real Redis (REDIS_URL, default redis://127.0.0.1:6379; database 13, flushed).

Reports p50/p99 of document -> first reply and of confirmation -> job accepted ("submitted"
message), updates/s, lost updates (chats that never got their job accepted) and flood-limit
breaches counted by the fake server. Note: with 30 messages/s overall, N first replies take
at least N/30 s, so p99 document -> first reply cannot be under 2 s beyond ~60 chats.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


async def run(chats: int, rows: int, timeout: float) -> dict:
    from batchjob.client import BatchJobClient, Timeouts
    from batchjob.sandbox import SandboxConfig, SandboxServer
    from bot.telegram.app import TelegramBot
    from bot.telegram.settings import TelegramSettings
    from conversation.settings import ConversationSettings
    from conversation.store import redis_from_url
    from tests.e2e.fake_telegram import TOKEN, FakeTelegram

    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    csv = tmp / "prompts.csv"
    csv.write_text(
        "prompt,aspect_ratio\n" + "".join(f"a watercolor fox number {i},16:9\n" for i in range(rows))
    )
    redis = redis_from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"), db=13)
    await redis.flushdb()
    sandbox = SandboxServer(
        SandboxConfig(token="bench", records_per_second=5000, queue_seconds=0.1, balance=10**9)
    ).start()
    tg = FakeTelegram().start()
    bot = TelegramBot(
        TelegramSettings(
            telegram_bot_token=TOKEN, telegram_api_base_url=tg.api_base, telegram_file_base_url=tg.file_base
        ),
        ConversationSettings(media_dir=tmp / "media", poll_min_seconds=1, poll_max_seconds=3),
        redis,
        BatchJobClient(sandbox.url, "bench", timeouts=Timeouts(read=30), max_connections=50),
    )
    await bot.start()
    loop = asyncio.get_running_loop()
    try:
        t0 = time.monotonic()
        doc_at = {}
        for c in range(1, chats + 1):
            doc_at[c] = time.monotonic()
            tg.send_document(c, FakeTelegram.user(c), csv)
        first_reply: dict[int, float] = {}
        confirm_at: dict[int, float] = {}
        accepted: dict[int, float] = {}
        deadline = loop.time() + timeout
        while len(accepted) < chats and loop.time() < deadline:
            with tg.lock:
                messages = list(tg.messages)
            for m in messages:
                if m.chat_id not in first_reply:
                    first_reply[m.chat_id] = m.at
                if "Estimate:" in m.text and m.chat_id not in confirm_at:
                    confirm_at[m.chat_id] = time.monotonic()
                    tg.send_text(
                        m.chat_id, FakeTelegram.user(m.chat_id), "google/gemini-2.5-flash-image fast"
                    )
                if "submitted" in m.text and m.chat_id not in accepted:
                    accepted[m.chat_id] = m.at
            await asyncio.sleep(0.05)
        wall = time.monotonic() - t0
        updates = bot.metrics["updates"]
    finally:
        await bot.stop()
        await bot.client.aclose()
        tg.stop()
        sandbox.stop()
        await redis.flushdb()
        await redis.aclose()
    first = [first_reply[c] - doc_at[c] for c in first_reply]
    conf = [accepted[c] - confirm_at[c] for c in accepted if c in confirm_at]
    return {
        "chats": chats,
        "first_p50": pct(first, 0.5),
        "first_p99": pct(first, 0.99),
        "accept_p50": pct(conf, 0.5),
        "accept_p99": pct(conf, 0.99),
        "updates_s": updates / wall,
        "lost": chats - len(accepted),
        "breaches": tg.flood_breaches(),
        "kinds": tg.flood_breaches_by_kind(),
        "wall": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chats", default="50,200", help="comma-separated chat counts (e.g. 50,200,500)")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()
    print(
        f"{'chats':>6}{'doc->1st p50':>14}{'p99':>8}{'confirm->job p50':>18}{'p99':>8}{'upd/s':>8}"
        f"{'lost':>6}{'breaches':>10}{'wall s':>8}"
    )
    for n in (int(x) for x in args.chats.split(",")):
        r = asyncio.run(run(n, args.rows, args.timeout))
        print(
            f"{r['chats']:>6}{r['first_p50']:>14.2f}{r['first_p99']:>8.2f}{r['accept_p50']:>18.2f}"
            f"{r['accept_p99']:>8.2f}{r['updates_s']:>8.1f}{r['lost']:>6}{r['breaches']:>10}{r['wall']:>8.1f}"
            f"  {r['kinds']}"
        )


if __name__ == "__main__":
    main()
