"""Three real `batchjob-bot` replicas (webhook mode) on one Redis behind a forwarder that
redelivers like Telegram; one is killed with SIGKILL while updates are in flight (at three
moments). Every confirmation becomes exactly one job at the service, every job gets exactly
one summary, every chat is answered, no message is sent twice. Each replica has a media
directory of its own: chats whose invalid rows are sent "valid only" from another replica
take the file again from Telegram.

Runs on the Redis named by REDIS_URL (standalone or cluster; under a key prefix of its
own), else on a redis-server of its own."""

from __future__ import annotations

import os
import secrets
import shutil
from collections import Counter

import pytest

from conversation.keys import Keys
from conversation.store import Store, connect
from tests.conftest import TOKEN
from tests.conversation.test_redis_faults import OwnRedis
from tests.scale.harness import Fleet, Forwarder, Run, drive, dump

pytestmark = [
    pytest.mark.skipif(
        shutil.which("redis-server") is None and not os.environ.get("REDIS_URL"), reason="needs a Redis"
    ),
    pytest.mark.slow,  # three replicas, kill -9: CI runs them (scripts/test, CI=true)
]

REPLICAS = 3
CHATS = 9


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = OwnRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.kill()


def files_for(tmp_path) -> dict:
    files = {}
    for chat in range(1, CHATS + 1):
        path = tmp_path / f"prompts-{chat}.csv"
        bad = ",1:1\n" if chat % 2 else ""  # odd chats: one row without a prompt
        path.write_text(f"prompt,aspect_ratio\nfox {chat},16:9\n{bad}owl {chat},1:1\ncat {chat},1:1\n")
        files[chat] = path
    return files


def kill_when(fleet: Fleet, fwd: Forwarder, moment: str):
    """The test's choice of moment: updates of the chosen kind in flight on replica 0."""
    seen: dict[str, int] = {}

    async def tick(run: Run) -> None:
        if run.kill_at is not None:
            return
        busy = fwd.in_flight[0]
        if moment == "documents":
            # Documents still being taken in (a small file's first answer is its estimate,
            # which is confirmed at once: confirmations soon follow the first answers).
            due = busy >= 2 and len(run.first_reply) < CHATS and len(run.confirm_at) <= 2
        elif moment == "confirmations":
            due = busy >= 1 and bool(run.confirm_at) and len(run.accepted) < CHATS
        else:  # watching: every job accepted, none finished; replica 0 holds watch leases
            due = len(run.accepted) == CHATS and not run.finished
        if due:
            seen["in_flight"] = busy
            run.kill_at = fleet.kill(0)

    return tick, seen


@pytest.mark.parametrize(
    ("moment", "media"),
    [
        ("documents", "private"),
        ("confirmations", "private"),
        ("watching", "private"),
        ("documents", "shared"),
    ],
)
async def test_kill_a_replica_mid_run(moment, media, redis_url, sandbox, tmp_path, telegram):
    sandbox.state.config.records_per_second = 1.5  # a job of 3 records runs about 2 s
    submits, jobs_before = sandbox.state.submits, set(sandbox.state.jobs)
    fleet = Fleet(
        REPLICAS,
        redis_url=redis_url,
        telegram=telegram,
        sandbox=sandbox,
        service_token=TOKEN,
        workdir=tmp_path,
        prefix=f"fo{secrets.token_hex(3)}",
        shared_media=media == "shared",
        BOT_POLL_MIN_SECONDS="0.3",
        BOT_POLL_MAX_SECONDS="0.6",
        BOT_PROGRESS_EDIT_SECONDS="0",
        BOT_WATCH_LEASE_SECONDS="2",
        BOT_REPLICA_LEASE_SECONDS="2",
        BOT_FLOOD_SCALE="0.05",
    )
    fleet.start()
    fwd = Forwarder(fleet)
    try:
        await fleet.ready()
        for i in range(REPLICAS):  # one start line says what runs
            assert f"running: Telegram webhook on 127.0.0.1:{fleet.ports[i]}; Redis" in fleet.log(i)
            assert f"replica r{i}." in fleet.log(i) and TOKEN not in fleet.log(i)
            assert "access: open to everyone" in fleet.log(i)  # no lists set: said at start
        tick, seen = kill_when(fleet, fwd, moment)
        store_redis, _ = await connect(redis_url)
        store = Store(store_redis, keys=Keys(prefix=fleet.env["BOT_REDIS_PREFIX"]))

        async def summary_cut(job_id: str) -> bool:
            rec = await store.job(job_id)
            return rec.get("done") == "1" and rec.get("summary", "").startswith("begun:")

        try:
            run = await drive(
                telegram, fwd, files_for(tmp_path), on_tick=tick, summary_cut=summary_cut, timeout=90
            )
        except AssertionError as e:
            await dump(redis_url, fleet.env["BOT_REDIS_PREFIX"], tmp_path / "redis-dump.txt")
            logs = "\n".join(f"replica {i}: ...{fleet.log(i)[-1500:]}" for i in range(REPLICAS))
            raise AssertionError(f"{e}\n{logs}") from e
    finally:
        await fwd.aclose()
        fleet.stop()
    # Nothing more can come: every job is finished in the store (no summary left to send).
    assert await store.scheduled() == 0
    await store_redis.aclose()
    assert run.kill_at is not None, f"the moment ({moment}) never came"
    new_jobs = set(sandbox.state.jobs) - jobs_before
    assert sandbox.state.submits - submits == CHATS and len(new_jobs) == CHATS  # one per confirmation
    for chat in range(1, CHATS + 1):
        texts = telegram.texts(chat)
        summaries = sum(" finished: " in t for t in texts)
        # Exactly one summary; none only where its request was cut by the kill (it may have
        # been lost on the wire; it is never sent twice) - the progress message shows the end.
        assert summaries == 1 or (summaries == 0 and chat in run.unsummarized), texts
        assert sum("Estimate:" in t for t in texts) == 1, texts
        assert sum(" submitted (" in t for t in texts) == 1, texts
        repeated = [t for t, n in Counter(texts).items() if n > 1]
        assert not repeated, repeated  # no message twice
    for chat in run.unsummarized:
        assert any("Completed" in t for t in telegram.shown(chat)), telegram.shown(chat)  # its final edit
    last = max(run.finished.values())
    first, last = min(run.doc_at.values()), max(run.finished.values())
    print(
        f"\nfailover[{moment}, {media} media]: in flight on the killed replica {seen.get('in_flight')}, "
        f"kill -> last summary {last - run.kill_at:.1f} s, run {last - first:.1f} s, "
        f"deliveries {fwd.attempts} ({fwd.retries} retried: {dict(fwd.answers)}), "
        f"summaries cut by the kill {len(run.unsummarized)}"
    )
