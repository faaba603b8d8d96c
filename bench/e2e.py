"""End-to-end benchmark: N concurrent chats through the real PTB Application, to the last
summary.

Each chat drops a 1,000-row CSV, confirms its estimate with a "model mode" reply and waits
for its summary; the bot talks to the fake Telegram Bot API server of the tests and to the
sandbox BatchJob server over real HTTP on 127.0.0.1, with its real flood control and a real
Redis (REDIS_URL, default redis://127.0.0.1:6379; under a key prefix of its own). The fake
Bot API server with the users' side (documents, confirmations, reading the replies) and
the sandbox run in a process each, as the real services are apart: none of it runs on the
bot's event loop or is charged to its CPU (their CPU and the machine's busy share are
printed under each row). Their listening sockets answer without Nagle's delay, as real
front ends do, and they run as batch work (SCHED_BATCH): a request that wakes one does not
preempt the bot in the middle of its loop, as a service on another machine would not.

Reports, each next to its physical bound and the ratio: p99 document -> first reply (bound
N/30 s: one first reply each at 30 messages/s), document -> last "submitted" and -> last
summary (bound: the messages the flow really sent, counted by the fake server - sends, edits
and documents - divided by 30/s); sends per second over the run (slowest full second after
the first, median), the bot's CPU per chat with its parse worker's (and the readers it
forks; "parse" is that part alone), Redis round trips per chat (a command sent alone or a
pipeline is one; commands that concurrent chats issue together share one, as do commands
written back to back before a reply is read, as a new connection's set-up) and the commands
they carried ("cmds"; the watcher's and the flood control's included), lost updates (a
document or confirmation never answered), flood breaches counted by the fake server, and
where the first few chats without a summary stopped. `--spread S` lets the documents
arrive evenly over S seconds; `--latency S` makes the BatchJob service answer every request S
seconds late (a slow or distant service).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import describe  # noqa: E402 (bench/ is on the path: the scripts run from there)

RATE = 30.0  # Telegram: about 30 messages per second for the whole bot


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def as_a_remote_service() -> None:
    """This stand-in for a service on another machine is batch work to the scheduler: a
    request that wakes it does not preempt the bot, which goes on with its loop and leaves
    the core at its own pace, as it would with the service elsewhere. It still shares the
    machine's cores with the bot."""
    with contextlib.suppress(OSError, AttributeError):  # SCHED_BATCH: Linux only
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def sandbox_service(conn, records_per_second: int, latency: float = 0.0) -> None:  # type: ignore[no-untyped-def]
    """Child process: the sandbox BatchJob service, apart from the fake Bot API server, as the
    real ones are: uploads and prechecks do not hold up Telegram's answers (one process
    for both shared one interpreter lock, and every Bot API call waited behind the
    service's work)."""
    from batchjob.sandbox_server import SandboxServer
    from batchjob.sandbox_state import SandboxConfig

    as_a_remote_service()
    sandbox = SandboxServer(
        SandboxConfig(
            token="bench",
            records_per_second=records_per_second,
            queue_seconds=0.1,
            balance=10**9,
            latency=latency,
            read_in_process=True,  # the bot wrote these files; its machine's cores are measured
        )
    ).start()
    conn.send(sandbox.url)
    try:
        with contextlib.suppress(EOFError):
            conn.recv()  # until the bot has stopped
    finally:
        sandbox.stop()


def services(conn) -> None:  # type: ignore[no-untyped-def]
    """Child process: the fake Bot API server and the users."""
    from tests.e2e.fake_telegram import FakeTelegram

    as_a_remote_service()
    tg = FakeTelegram().start()
    conn.send((tg.api_base, tg.file_base))
    go = conn.recv()  # the bot is up: go (or "stop": it failed to get that far)
    if go == "stop":
        tg.stop()
        return
    chats, csv, spread, timeout = go
    try:
        conn.send(users(tg, chats, Path(csv), spread, timeout))
        # Up until the bot has stopped: sends after the last summary (final progress edits)
        # still find the servers, as they would in production.
        with contextlib.suppress(EOFError):
            conn.recv()
    finally:
        tg.stop()


def users(tg, chats: int, csv: Path, spread: float, timeout: float) -> dict:  # type: ignore[no-untyped-def]
    """Every chat drops its file (all at once, or over `spread` s), confirms the estimate and
    waits for its summary. Times on this process's clock, as the fake server records them."""
    doc_at: dict[int, float] = {}
    first: dict[int, float] = {}
    confirm_at: dict[int, float] = {}
    confirm_reply: dict[int, float] = {}
    accepted: dict[int, float] = {}
    summary: dict[int, float] = {}
    last_text: dict[int, str] = {}
    t0 = time.monotonic()
    next_doc, seen = 1, 0
    deadline = t0 + timeout
    while len(summary) < chats and time.monotonic() < deadline:
        while next_doc <= chats and time.monotonic() >= t0 + spread * (next_doc - 1) / chats:
            tg.send_document(next_doc, tg.user(next_doc), csv)
            doc_at[next_doc] = time.monotonic()
            next_doc += 1
        with tg.lock:
            new = [(m.chat_id, m.text, m.at) for m in tg.messages[seen:]]
        seen += len(new)
        for chat, text, at in new:
            last_text[chat] = text
            first.setdefault(chat, at)
            if chat in confirm_at and at >= confirm_at[chat]:
                confirm_reply.setdefault(chat, at)
            if "Estimate:" in text and chat not in confirm_at:
                tg.send_text(chat, tg.user(chat), "google/gemini-2.5-flash-image fast")
                confirm_at[chat] = time.monotonic()
            if " submitted (" in text:
                accepted.setdefault(chat, at)
            if " finished: " in text:
                summary.setdefault(chat, at)
        time.sleep(0.02)
    with tg.lock:
        sends = sorted(t for t, _ in tg.sends)
    return {
        "t0": t0,
        "doc_at": doc_at,
        "first": first,
        "confirm_at": confirm_at,
        "confirm_reply": confirm_reply,
        "accepted": accepted,
        "summary": summary,
        "sends": sends,
        "kinds": tg.flood_breaches_by_kind(),
        # What the first few chats without a summary saw last: where their flow stopped.
        "stuck": {c: last_text.get(c, "")[:160] for c in sorted(set(doc_at) - set(summary))[:5]},
    }


def cpu_of(pid: int) -> float:
    """CPU seconds of a process and of its children it has waited for (the parse worker
    and the readers it forks), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def busy(since: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
    """The machine's busy and total CPU seconds (all cores) from /proc/stat, since `since`."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle, total = (fields[3] + fields[4]) / tick, sum(fields[:8]) / tick
    return total - idle - since[0], total - since[1]


def script_names() -> dict[str, str]:
    """SHA-1 -> NAME of the Lua scripts in the bot's modules (upper-case str constants)."""
    import hashlib
    import importlib

    names = {}
    for mod in (
        "bot.flood",
        "conversation.store",
        "conversation.job_records",
        "conversation.budgets",
        "conversation.approvals",
        "conversation.leases",
        "conversation.outbox",
    ):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        for k, v in vars(m).items():
            if k.isupper() and isinstance(v, str) and "redis.call" in v:
                names[hashlib.sha1(v.encode()).hexdigest()] = f"{mod.rsplit('.', 1)[1]}.{k}"
    return names


def count_round_trips():  # type: ignore[no-untyped-def]
    """Count the bot's Redis round trips from now on (writes of commands to a connection
    before a reply is read, however the client composed them: a command alone, a pipeline,
    the commands concurrent tasks issued together, or a new connection's CLIENT SETINFO and
    SELECT written back to back) and the commands they carried; returns a function that
    stops counting and gives (round trips, commands by kind)."""
    from redis.asyncio.connection import AbstractConnection

    kinds: Counter[str] = Counter()
    trips = [0]
    SCRIPTS = script_names()
    orig_send, orig_pack = AbstractConnection.send_packed_command, AbstractConnection.pack_command
    orig_read = AbstractConnection.read_response

    # A connection written to whose reply is not read yet is marked on itself (not by id:
    # a connection dropped before its reply would leave its id to a new one).
    async def counted_send(self, *a, **kw):  # type: ignore[no-untyped-def]
        if not getattr(self, "_bench_awaiting", False):
            trips[0] += 1
            self._bench_awaiting = True
        return await orig_send(self, *a, **kw)

    async def counted_read(self, *a, **kw):  # type: ignore[no-untyped-def]
        self._bench_awaiting = False
        return await orig_read(self, *a, **kw)

    def counted_pack(self, *args):  # type: ignore[no-untyped-def]
        name = str(args[0]).upper() if args else "?"
        kinds[f"EVALSHA {SCRIPTS.get(args[1], args[1][:8])}" if name == "EVALSHA" else name] += 1
        return orig_pack(self, *args)

    AbstractConnection.send_packed_command = counted_send  # type: ignore[method-assign]
    AbstractConnection.pack_command = counted_pack  # type: ignore[method-assign]
    AbstractConnection.read_response = counted_read  # type: ignore[method-assign]

    def stop() -> tuple[int, Counter[str]]:
        AbstractConnection.send_packed_command = orig_send  # type: ignore[method-assign]
        AbstractConnection.pack_command = orig_pack  # type: ignore[method-assign]
        AbstractConnection.read_response = orig_read  # type: ignore[method-assign]
        return trips[0], kinds

    return stop


async def run(chats: int, rows: int, timeout: float, spread: float, latency: float = 0.0) -> dict:
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
    spawn = mp.get_context("spawn")
    conn, child_conn = mp.Pipe()
    child = spawn.Process(target=services, args=(child_conn,), daemon=True)
    sb_conn, sb_child_conn = mp.Pipe()
    sb_child = spawn.Process(target=sandbox_service, args=(sb_child_conn, 5000, latency), daemon=True)
    child.start()
    sb_child.start()
    child_conn.close()  # the child's end is the child's: its death ends our reads (EOFError)
    sb_child_conn.close()
    api_base, file_base = conn.recv()
    sandbox_url = sb_conn.recv()
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
    from batchjob.input.isolation import worker

    quiet = None
    try:
        from bot.heap import settle_heap
    except ImportError:  # a tree from before it (a before/after run): as that tree settles
        with contextlib.suppress(ImportError):
            from bot.main import settle_heap as settle_old

            settle_old()
    else:
        quiet = settle_heap()  # as `batchjob-bot` does once it is up

    loop = asyncio.get_running_loop()
    trips = count_round_trips()
    try:  # whatever fails from here, the bot stops and the services go (else the run hangs)
        w = worker()  # started now: its start-up is the process's, not the burst's
        parser = w.start() if hasattr(w, "start") else w._ensure().pid  # (a tree from before `start`)
        stand_ins = (child.pid, sb_child.pid)
        cpu0, parser0, busy0 = time.process_time(), cpu_of(parser), busy()
        stand0 = sum(cpu_of(pid) for pid in stand_ins)
        conn.send((chats, str(csv), spread, timeout))
        r = await loop.run_in_executor(None, conn.recv)  # the bot's loop runs free meanwhile
        cpu = time.process_time() - cpu0
        parser_cpu = cpu_of(parser) - parser0
        stand_cpu = sum(cpu_of(pid) for pid in stand_ins) - stand0
        machine_busy, machine_all = busy(busy0)
    finally:
        round_trips, commands = trips()
        if quiet is not None:
            quiet.stop()
        await bot.stop()
        await bot.client.aclose()
        for c in (conn, sb_conn):
            with contextlib.suppress(OSError):
                c.send("stop")  # the services may go now
        child.join(10)
        sb_child.join(10)
        async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
            await redis.delete(key)
        await redis.aclose()
        shutil.rmtree(tmp, ignore_errors=True)
    doc_at, sends = r["doc_at"], r["sends"]
    start = min(doc_at.values())
    firsts = [r["first"][c] - doc_at[c] for c in r["first"] if c in doc_at]
    unanswered = [c for c in doc_at if c not in r["first"]] + [
        c for c in r["confirm_at"] if c not in r["confirm_reply"]
    ]
    window = [t for t in sends if t >= start]
    span = (window[-1] - start) if window else 0.0
    per_second = [sum(1 for t in window if start + i <= t < start + i + 1) for i in range(int(span))]
    first_times = sorted(r["first"].values())
    firsts_per_second = [
        sum(1 for t in first_times if start + i <= t < start + i + 1) for i in range(int(span))
    ]
    last_accepted = max(r["accepted"].values(), default=float("nan")) - start
    last_summary = max(r["summary"].values(), default=float("nan")) - start
    messages = len(window)
    return {
        "chats": chats,
        "first_p99": pct(firsts, 0.99),
        "first_bound": chats / RATE,
        "accepted_last": last_accepted,
        "summary_last": last_summary,
        "flow_bound": messages / RATE,
        "messages_per_chat": messages / chats,
        "sends_s": messages / span if span else float("nan"),
        "slowest_second": min(per_second[1:], default=float("nan")),
        "median_second": pct([float(x) for x in per_second], 0.5),
        "per_second": per_second,
        "arrivals": sends,  # every message's arrival at the fake server (this machine's monotonic clock)
        "start": start,  # the first document's, on that clock: second i of per_second begins at start + i
        "firsts_per_second": firsts_per_second,
        "cpu_ms_per_chat": (cpu + parser_cpu) / chats * 1000,
        "parser_ms_per_chat": parser_cpu / chats * 1000,
        "stand_ins_ms_per_chat": stand_cpu / chats * 1000,
        "machine_busy": machine_busy / machine_all if machine_all else float("nan"),
        "trips_per_chat": round_trips / chats,
        "commands_per_chat": sum(commands.values()) / chats,
        "commands_by_kind": commands,
        "lost": len(unanswered),
        "unfinished": chats - len(r["summary"]),
        "breaches": sum(r["kinds"].values()),
        "kinds": r["kinds"],
        "stuck": r["stuck"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chats", default="50,200", help="comma-separated chat counts (e.g. 50,200,500)")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument(
        "--spread", type=float, default=0.0, help="seconds over which the documents arrive (0: at once)"
    )
    ap.add_argument(
        "--latency", type=float, default=0.0, help="seconds the BatchJob service adds to every request"
    )
    ap.add_argument("--timeline", action="store_true", help="print the sends of every second")
    ap.add_argument("--commands", action="store_true", help="print the Redis commands per chat by kind")
    args = ap.parse_args()
    print(describe())
    cols = (
        ("chats", 6),
        ("1st p99", 8),
        ("bound", 7),
        ("ratio", 6),
        ("last sub", 9),
        ("last sum", 9),
        ("bound", 7),
        ("ratio", 6),
        ("msg/chat", 9),
        ("sends/s", 8),
        ("slowest", 8),
        ("median", 7),
        ("CPU ms", 7),
        ("parse", 6),
        ("RTT", 5),
        ("cmds", 5),
        ("lost", 5),
        ("unfin", 6),
        ("breach", 7),
    )
    print("".join(f"{h:>{w}}" for h, w in cols))
    for n in (int(x) for x in args.chats.split(",")):
        r = asyncio.run(run(n, args.rows, args.timeout, args.spread, args.latency))
        print(
            f"{r['chats']:>6}{r['first_p99']:>8.1f}{r['first_bound']:>7.1f}"
            f"{r['first_p99'] / r['first_bound']:>6.2f}"
            f"{r['accepted_last']:>9.1f}{r['summary_last']:>9.1f}{r['flow_bound']:>7.1f}"
            f"{r['summary_last'] / r['flow_bound']:>6.2f}{r['messages_per_chat']:>9.1f}{r['sends_s']:>8.1f}"
            f"{r['slowest_second']:>8}{r['median_second']:>7.0f}{r['cpu_ms_per_chat']:>7.0f}{r['parser_ms_per_chat']:>6.0f}"
            f"{r['trips_per_chat']:>5.1f}{r['commands_per_chat']:>5.0f}{r['lost']:>5}"
            f"{r['unfinished']:>6}{r['breaches']:>7}"
        )
        print(
            f"  outside the bot: stand-in services and users {r['stand_ins_ms_per_chat']:.0f} ms CPU a chat;"
            f" machine busy {r['machine_busy']:.0%} of its {os.cpu_count()} cores over the run"
        )
        if r["breaches"]:
            print("  breaches by kind:", r["kinds"])
        for chat, text in r["stuck"].items():
            print(f"  no summary in chat {chat}; its last message: {text!r}")
        if args.commands:
            for kind, k in r["commands_by_kind"].most_common():
                print(f"  {k / n:8.2f}  {kind}")
        if args.timeline:
            print("  sends per second:", " ".join(map(str, r["per_second"])))
            print("  of which first replies:", " ".join(map(str, r["firsts_per_second"])))


if __name__ == "__main__":
    main()
