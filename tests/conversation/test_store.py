"""The Redis store on fakeredis, and on a real Redis when REDIS_URL is set."""

from __future__ import annotations

import asyncio

from conversation.state import ChatState, Pending
from conversation.store import DUE, Store, job_key, now_ms


async def test_state_roundtrip_and_defaults(redis):
    store = Store(redis)
    assert await store.load(42) == ChatState()
    s = ChatState(
        phase="awaiting_confirm",
        lang="zh",
        pending=Pending(token="t", created_ms=1, file_id="f"),
        jobs=["j1"],
    )
    await store.save(42, s)
    assert await store.load(42) == s
    assert await redis.exists("bjb:{chat:42}:state")


async def test_concurrent_events_for_one_chat_lose_no_update(redis):
    store = Store(redis)

    async def add(job: str) -> None:
        async with store.chat_lock(7):
            s = await store.load(7)
            await asyncio.sleep(0)  # let the other task try to interleave
            s.jobs.append(job)
            await store.save(7, s)

    await asyncio.gather(*(add(f"j{i}") for i in range(20)))
    assert sorted((await store.load(7)).jobs) == sorted(f"j{i}" for i in range(20))


async def test_lock_release_is_token_checked(redis):
    store = Store(redis, lock_ms=50)
    async with store.chat_lock(1):
        await redis.delete("bjb:{chat:1}:lock")  # our lock expired ...
        assert await redis.set("bjb:{chat:1}:lock", "someone-else", nx=True, px=5000)  # ... and was taken
    assert await redis.get("bjb:{chat:1}:lock") == b"someone-else"  # we did not delete theirs


async def test_update_dedupe(redis):
    store = Store(redis)
    assert await store.first_time(1001) is True
    assert await store.first_time(1001) is False
    assert 0 < await redis.ttl("bjb:{upd:1001}") <= 86_400


async def test_intents_are_recorded_before_and_move_once(redis):
    store = Store(redis)
    assert await store.intent_begin("i1", 5, "file_1") is True
    assert await store.intent_begin("i1", 5, "file_1") is False  # a second POST is not allowed
    assert (await store.intent("i1"))[b"state"] == b"SUBMITTING"
    assert await store.intent_move("i1", "SUBMITTING", "SUBMITTED", "job_1") is True
    assert await store.intent_move("i1", "SUBMITTING", "UNKNOWN") is False
    rec = await store.intent("i1")
    assert (rec[b"state"], rec[b"job_id"]) == (b"SUBMITTED", b"job_1")


async def test_remembered_file_rows(redis):
    store = Store(redis)
    await store.remember_file("file_1", 12)
    assert await store.file_rows("file_1") == 12 and await store.file_rows("file_2") is None


async def test_claim_leases_and_returns_records_in_one_call(redis):
    store = Store(redis)
    await store.add_job("a", 1, count=3, lang="zh")
    await store.add_job("b", 2)
    now = now_ms()
    claimed = dict(await store.claim(now + 1, 30_000, 10))
    assert set(claimed) == {"a", "b"} and claimed["a"]["lang"] == "zh" and claimed["a"]["count"] == "3"
    assert await store.claim(now + 2, 30_000, 10) == []  # leased: not due again yet
    assert await store.claim(now + 30_002, 30_000, 10) != []  # lease over: due again (a crashed watcher)
    await store.finish_job("a", {"status": "completed"})
    assert await redis.zscore(DUE, "a") is None and (await store.job("a"))["done"] == "1"


async def test_summary_claimed_once(redis):
    store = Store(redis)
    await store.add_job("a", 1)
    results = await asyncio.gather(*(store.claim_summary("a") for _ in range(10)))
    assert results.count(1) == 1 and results.count(-1) == 9
    await store.summary_sent("a")
    assert await store.claim_summary("a") == 0


async def test_a_dead_senders_claim_is_taken_over(redis):
    store = Store(redis)
    await store.add_job("a", 1)
    assert await store.claim_summary("a", stale_ms=60_000) == 1  # ... and the sender dies
    assert await store.claim_summary("a", stale_ms=60_000) == -1  # too recent to tell
    await redis.hset(job_key("a"), "summary", f"claimed:{now_ms() - 61_000}")
    assert await store.claim_summary("a", stale_ms=60_000) == 1


async def test_resume_reschedules_orphaned_records(redis):
    store = Store(redis)
    await redis.hset(job_key("orphan"), mapping={"chat": "1"})
    await redis.hset(job_key("finished"), mapping={"chat": "1", "done": "1"})
    assert await store.resume() == 1
    assert await redis.zscore(DUE, "orphan") is not None and await redis.zscore(DUE, "finished") is None
