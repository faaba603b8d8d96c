"""The Redis store on fakeredis, and on a real Redis when REDIS_URL is set."""

from __future__ import annotations

import asyncio

import pytest

from conversation.leases import Leases
from conversation.state import ChatState, Pending
from conversation.store import LockTimeout, Store, now_ms


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
    assert await redis.exists(store.k.chat(42, "state"))


async def test_concurrent_changes_for_one_chat_lose_no_update(redis):
    """Changes from several stores (replicas) at once: each is stepped again on what the
    others wrote, so none is lost."""
    stores = [Store(redis) for _ in range(4)]
    runs = 0

    async def add(store: Store, job: str) -> None:
        def step(s: ChatState) -> tuple[ChatState, dict[int, str]]:
            nonlocal runs
            runs += 1
            s.jobs.append(job)
            return s, {}

        await asyncio.sleep(0)  # let the others read the same state first
        await store.change(7, step)

    await asyncio.gather(*(add(stores[i % 4], f"j{i}") for i in range(20)))
    assert sorted((await stores[0].load(7)).jobs) == sorted(f"j{i}" for i in range(20))
    assert runs > 20  # some were stepped again: they met a change made meanwhile


async def test_a_change_from_a_stale_view_is_stepped_again_on_what_is_stored(redis):
    a, b = Store(redis), Store(redis)
    await a.change(3, lambda s: (s.model_copy(update={"out_seq": 1}), {1: "one"}))
    assert (await b.snapshot(3)).state().out_seq == 1  # b has seen out_seq 1
    await a.change(3, lambda s: (s.model_copy(update={"out_seq": s.out_seq + 1}), {2: "two"}))
    seen: list[int] = []

    def bump(s: ChatState) -> tuple[ChatState, dict[int, str]]:
        seen.append(s.out_seq)
        return s.model_copy(update={"out_seq": s.out_seq + 1}), {s.out_seq + 1: "three"}

    saved = await b.change(3, bump)
    assert seen == [1, 2] and saved.out_seq == 3  # its first try was on the stale state
    assert await a.outbox(3) == [(1, "one"), (2, "two"), (3, "three")]
    # A step that changes nothing writes nothing.
    assert (await b.change(3, lambda s: None)).out_seq == 3


async def test_a_chat_a_store_has_not_seen_is_guessed_new_and_the_save_corrects_the_guess(redis, monkeypatch):
    a, b = Store(redis), Store(redis)
    await a.change(4, lambda s: (s.model_copy(update={"lang": "zh", "out_seq": 2}), {}))
    reads = 0
    get = redis.get

    async def counting_get(key):  # type: ignore[no-untyped-def]
        nonlocal reads
        reads += 1
        return await get(key)

    monkeypatch.setattr(redis, "get", counting_get)
    seen: list[int] = []

    def bump(s: ChatState) -> tuple[ChatState, dict[int, str]]:
        seen.append(s.out_seq)
        return s.model_copy(update={"out_seq": s.out_seq + 1}), {}

    saved = await b.change(4, bump)
    assert seen == [0, 2] and saved.out_seq == 3 and saved.lang == "zh"  # the guess, then what is stored
    assert reads == 0  # the failed save answered with the stored state
    new = await b.change(5, bump)
    assert new.out_seq == 1 and reads == 0  # a new chat: right first time
    # A step that saves nothing on a guess is taken again on what is read.
    c = Store(redis)
    found = await c.change(4, lambda s: None)
    assert found.out_seq == 3 and reads == 1


async def test_a_lock_of_an_earlier_release_holds_changes_until_it_is_released(redis):
    """During a rolling upgrade, replicas of the release before take a per-chat lock around
    load, step and save: no change is written while one holds it, and once it is released
    the change is stepped on what that replica wrote."""
    store = Store(redis)
    lock, key = store.k.chat(9, "lock"), store.k.chat(9, "state")
    assert (await store.snapshot(9)).raw is None
    await redis.set(lock, "old-replica", px=60_000)
    with pytest.raises(LockTimeout):
        await store.change(9, lambda s: (s.model_copy(update={"lang": "zh"}), {}), wait_s=0.0)
    assert await redis.get(key) is None
    await redis.set(key, ChatState(out_seq=4).model_dump_json())  # that replica's save ...
    await redis.delete(lock)  # ... and its release
    saved = await store.change(9, lambda s: (s.model_copy(update={"lang": "zh"}), {}))
    assert saved.lang == "zh" and saved.out_seq == 4
    assert ChatState.model_validate_json(await redis.get(key)) == saved


async def test_an_update_is_leased_then_done(redis):
    a, b = Leases(redis, "a"), Leases(redis, "b")
    assert await a.claim_update(1001, lease_ms=60_000) == "new"
    assert await b.claim_update(1001) == "busy"  # a live handler has it: deliver again later
    await a.update_done(1001)
    assert await b.claim_update(1001) == "done"
    assert 0 < await redis.ttl(a.k.update(1001)) <= 86_400


async def test_a_marker_of_the_release_before_leases_counts_as_done(redis):
    a = Leases(redis, "a")
    await redis.set(a.k.update(55), "1", ex=86_400)  # "seen" in the old layout
    assert await a.claim_update(55) == "done"


async def test_an_update_whose_handler_died_is_handled_again(redis):
    a, b = Leases(redis, "a"), Leases(redis, "b")
    assert await a.claim_update(7, lease_ms=60_000) == "new"
    await redis.pexpire(a.k.update(7), 1)  # a was killed: its lease lapses
    await _until_gone(redis, a.k.update(7))
    assert await b.claim_update(7) == "new"


async def _until_gone(redis, key: str) -> None:
    for _ in range(1000):
        if not await redis.exists(key):
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{key} never expired")


async def test_outbox_entries_are_saved_with_the_state_and_begun_once(redis):
    store = Store(redis)
    await store.save(5, ChatState(out_seq=2), {1: "first", 2: "second"})
    assert await store.outbox(5) == [(1, "first"), (2, "second")]
    results = await asyncio.gather(*(store.begin(5, 1) for _ in range(5)))
    assert results.count(True) == 1  # one performer, however many replicas try
    assert await store.outbox(5) == [(1, "begun:first"), (2, "second")]  # its outcome unknown till done
    await store.done(5, 1)
    assert await store.outbox(5) == [(2, "second")]


async def test_a_summary_whose_request_left_is_never_claimed_again(redis):
    store = Store(redis)
    await store.add_job("a", 1)
    t = now_ms() - 200_000
    assert await store.claim_summary("a", stale_ms=60_000, now=t) == 1
    assert await store.begin_summary("a", t) is True
    assert await store.claim_summary("a", stale_ms=60_000) == -1  # its request may be on its way
    later = now_ms() + 61_000  # its sender died long ago
    assert await store.claim_summary("a", stale_ms=60_000, now=later) == 0  # may have arrived: not again
    assert await store.begin_summary("a", t + 1) is False  # not the claim of record


async def test_dead_replicas_are_told_from_live_ones(redis):
    a, b = Leases(redis, "a", lease_ms=10_000), Leases(redis, "b", lease_ms=10_000)
    await a.beat()
    await b.beat()
    assert await a.dead() == [] and sorted(await a.live()) == ["a", "b"]
    await redis.zadd(a.k.replicas, {"b": now_ms() - 11_000})  # b stopped beating
    assert await a.dead() == ["b"] and await b.dead() == []  # nobody calls itself dead
    await b.working_on(3)
    assert await a.reap("b") is True and await Leases(redis, "c").reap("b") is False
    await a.bury("b")
    assert await a.dead() == ["b"]  # not buried while it still lists a chat
    await a.handed_over("b", "3")
    await a.bury("b")
    assert await a.dead() == []


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
    assert await redis.zscore(store.k.due(store.k.shard("a")), "a") is None
    assert (await store.job("a"))["done"] == "1"


async def test_summary_claimed_once(redis):
    store = Store(redis)
    await store.add_job("a", 1)
    results = await asyncio.gather(*(store.claim_summary("a") for _ in range(10)))
    assert results.count(1) == 1 and results.count(-1) == 9
    await store.finish_job("a", {"state": "completed", "summary": "sent"})  # as the watcher ends it
    assert await store.claim_summary("a") == 0


async def test_a_dead_senders_claim_is_taken_over(redis):
    store = Store(redis)
    await store.add_job("a", 1)
    assert await store.claim_summary("a", stale_ms=60_000) == 1  # ... and the sender dies
    assert await store.claim_summary("a", stale_ms=60_000) == -1  # too recent to tell
    await redis.hset(store.k.job("a"), "summary", f"claimed:{now_ms() - 61_000}")
    assert await store.claim_summary("a", stale_ms=60_000) == 1


async def test_resume_reschedules_orphaned_records(redis):
    store = Store(redis)
    k = store.k
    await redis.hset(k.job("orphan"), mapping={"chat": "1"})
    await redis.hset(k.job("finished"), mapping={"chat": "1", "done": "1"})
    assert await store.resume() == 1
    assert await redis.zscore(k.due(k.shard("orphan")), "orphan") is not None
    assert await redis.zscore(k.due(k.shard("finished")), "finished") is None


async def test_jobs_spread_over_shards_and_are_all_claimed(redis):
    store = Store(redis)
    ids = [f"job_{i}" for i in range(40)]
    for job_id in ids:
        await store.add_job(job_id, 1)
    shards = {store.k.shard(j) for j in ids}
    assert len(shards) == store.k.shards  # 40 ids land in every one of 8 shards
    assert await store.scheduled() == 40
    claimed = await store.claim(now_ms() + 1, 30_000, 80)
    assert sorted(j for j, _ in claimed) == sorted(ids)


async def test_jobs_of_the_single_shard_layout_are_adopted(redis):
    """An upgrade from the layout with one schedule key loses no watched job."""
    store = Store(redis)
    p = store.k.prefix
    await redis.hset(f"{p}:{{jobs}}:job:old1", mapping={"chat": "9", "msg": "12", "lang": "zh"})
    await redis.hset(f"{p}:{{jobs}}:job:old2", mapping={"chat": "9", "done": "1"})
    await redis.zadd(f"{p}:{{jobs}}:due", {"old1": 1})
    assert await store.resume() == 1
    assert (await store.job("old1"))["msg"] == "12" and (await store.job("old2"))["done"] == "1"
    claimed = dict(await store.claim(now_ms() + 1, 30_000, 10))
    assert set(claimed) == {"old1"} and claimed["old1"]["lang"] == "zh"
    assert not await redis.exists(f"{p}:{{jobs}}:due", f"{p}:{{jobs}}:job:old1")


class Counting:
    """The Redis client, counting the commands sent (pipelines count their commands)."""

    def __init__(self, redis) -> None:
        self._redis, self.sent = redis, 0

    def __getattr__(self, name):
        attr = getattr(self._redis, name)
        if name == "pipeline":

            def pipeline(*a, **kw):
                p = attr(*a, **kw)
                execute = p.execute

                async def counted(*ea, **ekw):
                    self.sent += len(p)  # the commands queued (standalone and cluster pipelines)
                    return await execute(*ea, **ekw)

                p.execute = counted
                return p

            return pipeline
        if callable(attr) and asyncio.iscoroutinefunction(attr):

            async def call(*a, **kw):
                self.sent += 1
                return await attr(*a, **kw)

            return call
        return attr


async def test_resume_reads_the_unfinished_jobs_only_a_few_commands_per_shard(redis):
    store = Store(redis)
    for i in range(300):
        await store.add_job(f"done_{i}", 1)
        await store.finish_job(f"done_{i}", {"state": "completed"})
    for i in range(30):
        await store.add_job(f"run_{i}", 1)
    await store.resume()  # the first start after the upgrade indexes; from now on the sets
    lost = ["run_3", "run_17"]
    for job_id in lost:  # their schedule entries are lost (a partial restore, say)
        await redis.zrem(store.k.due(store.k.shard(job_id)), job_id)
    counting = Counting(redis)
    store.r = counting
    assert await store.resume() == 2
    assert counting.sent <= 5 * store.k.shards  # not one per job, finished or not
    store.r = redis
    assert all([await redis.zscore(store.k.due(store.k.shard(j)), j) is not None for j in lost])
    assert await store.scheduled() == 30


async def test_jobs_recorded_before_the_index_existed_are_resumed(redis):
    """State written by the release before the `active` sets: indexed once by a scan."""
    store = Store(redis)
    await store.add_job("old_running", 1)
    await store.add_job("old_done", 1)
    await store.finish_job("old_done", {"state": "completed"})
    for shard in range(store.k.shards):  # as the earlier release left it: no sets
        await redis.delete(store.k.active(shard), store.k.indexed(shard))
    await redis.zrem(store.k.due(store.k.shard("old_running")), "old_running")
    assert await store.resume() == 1
    assert await redis.sismember(store.k.active(store.k.shard("old_running")), "old_running")
    assert not await redis.sismember(store.k.active(store.k.shard("old_done")), "old_done")
    assert await store.resume() == 0  # indexed once; nothing lost since
