"""The watcher against the sandbox over HTTP, several instances on one Redis."""

from __future__ import annotations

import asyncio

from batchjob.client import BatchJobClient
from conversation import keys
from conversation.settings import ConversationSettings
from conversation.store import Store
from conversation.watcher import Watcher
from tests.conftest import TOKEN


async def due_now(redis, job_id: str) -> None:
    """Make a job due at once (as its lease lapsing would, without the wait)."""
    k = keys.current()
    await redis.zadd(k.due(k.shard(job_id)), {job_id: 0})


def settings(tmp_path, **kw):
    base = {
        "media_dir": tmp_path,
        "poll_min_seconds": 0.02,
        "poll_max_seconds": 0.05,
        "progress_edit_seconds": 0,
    }
    return ConversationSettings(**{**base, **kw})


async def submit_jobs(client, write, n, body="prompt\na\nb\n"):
    up = await client.upload(write("p.csv", body))
    return [(await client.submit(up.file_id)).job_id for _ in range(n)]


async def run_until_empty(store, *watchers, timeout=60.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await store.scheduled():
        assert loop.time() < deadline
        counts = await asyncio.gather(*(w.run_once() for w in watchers))
        if not any(counts):
            await asyncio.sleep(0.01)
    await asyncio.gather(*(w.settled() for w in watchers))


async def test_100_jobs_two_watchers_one_summary_each(redis, channel, sandbox, write, tmp_path):
    sandbox.state.config.records_per_second = 20
    async with BatchJobClient(sandbox.url, TOKEN) as client:
        jobs = await submit_jobs(client, write, 100)
        store = Store(redis)
        for i, job_id in enumerate(jobs):
            await store.add_job(job_id, 1000 + i % 10, count=2)
        w1 = Watcher(store, client, channel, settings(tmp_path), lease_ms=2000, batch=30)
        w2 = Watcher(Store(redis), client, channel, settings(tmp_path), lease_ms=2000, batch=30)
        await run_until_empty(store, w1, w2)
    summaries = [m for m in channel.messages if "finished" in m[2]]
    assert sorted(m[2].split()[1] for m in summaries) == sorted(jobs)  # each job exactly once
    assert w1.polls > 0 and w2.polls > 0  # both took part
    for job_id in jobs:
        rec = await store.job(job_id)
        assert rec["done"] == "1" and rec["summary"] == "sent"


async def test_a_stopped_watcher_is_replaced_and_the_job_ends_once(redis, channel, sandbox, write, tmp_path):
    sandbox.state.config.records_per_second = 4
    async with BatchJobClient(sandbox.url, TOKEN) as client:
        (job_id,) = await submit_jobs(client, write, 1, "prompt\na\nb\nc\nd\n")
        store = Store(redis)
        await store.add_job(job_id, 1, count=4)
        first = Watcher(store, client, channel, settings(tmp_path), lease_ms=300)
        assert await first.run_once() == 1  # polls once, then "crashes": never runs again
        # The job was rescheduled; a new watcher (another replica, or after a restart) takes over.
        second = Watcher(Store(redis), client, channel, settings(tmp_path), lease_ms=300)
        await run_until_empty(store, second)
    assert sum("finished" in t for t in channel.texts()) == 1
    assert second.polls >= 1


async def test_progress_edits_throttled_and_skipped_when_unchanged(redis, channel, sandbox, write, tmp_path):
    sandbox.state.config.records_per_second = 0.0001  # stays at 0 done
    async with BatchJobClient(sandbox.url, TOKEN) as client:
        (job_id,) = await submit_jobs(client, write, 1)
        store = Store(redis)
        await store.add_job(job_id, 1, count=2)
        w = Watcher(store, client, channel, settings(tmp_path, progress_edit_seconds=3600), lease_ms=10)
        for _ in range(6):
            await due_now(redis, job_id)
            await w.run_once()
    assert len([m for m in channel.messages if job_id in m[2]]) == 1  # one progress message
    assert channel.edits == []  # text changed (queued → running) but within the throttle window


async def test_bounded_watch_time(redis, channel, sandbox, write, tmp_path):
    sandbox.state.config.records_per_second = 0.0001
    async with BatchJobClient(sandbox.url, TOKEN) as client:
        (job_id,) = await submit_jobs(client, write, 1)
        store = Store(redis)
        await store.add_job(job_id, 1)
        await redis.hset(keys.current().job(job_id), "started_ms", 1)  # started long ago
        w = Watcher(store, client, channel, settings(tmp_path, watch_max_seconds=60))
        await w.run_once()
    assert f"/status {job_id}" in channel.texts()[-1] and await store.scheduled() == 0


async def test_summary_retried_when_the_send_fails(redis, channel, sandbox, write, tmp_path):
    async with BatchJobClient(sandbox.url, TOKEN) as client:
        (job_id,) = await submit_jobs(client, write, 1)
        store = Store(redis)
        await store.add_job(job_id, 1)
        while not (await client.get_job(job_id)).terminal:  # the job is complete
            await asyncio.sleep(0.02)
        channel.fail_sends = 1
        w = Watcher(store, client, channel, settings(tmp_path), lease_ms=10)
        await run_until_empty(store, w)
    assert sum("finished" in t for t in channel.texts()) == 1


async def test_retry_after_and_unavailable_reschedule(redis, channel, sandbox, write, tmp_path):
    async with BatchJobClient(sandbox.url, TOKEN, retries=0) as client:
        (job_id,) = await submit_jobs(client, write, 1)
        store = Store(redis)
        await store.add_job(job_id, 1)
        sandbox.state.config.rate_limit_every = 1
        sandbox.state.config.retry_after = 40
        w = Watcher(store, client, channel, settings(tmp_path))
        await w.run_once()
        k = keys.current()
        score = await redis.zscore(k.due(k.shard(job_id)), job_id)
        from conversation.store import now_ms

        assert score - now_ms() > 35_000  # not before Retry-After
        assert channel.messages == []


def test_backoff_grows_to_the_max(tmp_path):
    w = Watcher(None, None, None, settings(tmp_path, poll_min_seconds=5, poll_max_seconds=45))  # type: ignore[arg-type]
    delays = [w.next_delay_ms(p) for p in range(1, 15)]
    assert 4500 <= delays[0] <= 5500 and max(delays) <= 45 * 1100 and delays[-1] >= 40_000


async def test_summary_survives_a_watcher_that_died_while_sending(redis, channel, sandbox, write, tmp_path):
    async with BatchJobClient(sandbox.url, TOKEN) as client:
        (job_id,) = await submit_jobs(client, write, 1)
        store = Store(redis)
        await store.add_job(job_id, 1)
        while not (await client.get_job(job_id)).terminal:  # let the job end first
            await asyncio.sleep(0.02)
        # A watcher claimed the summary, then was killed before sending it.
        assert await store.claim_summary(job_id) == 1
        w = Watcher(store, client, channel, settings(tmp_path), lease_ms=100)
        await due_now(redis, job_id)
        await w.run_once()
        await w.settled()
        assert channel.texts() == [] and await store.scheduled() == 1  # not finished while fresh
        await redis.hset(keys.current().job(job_id), "summary", "claimed:1")  # now long dead
        await run_until_empty(store, w)
    assert sum("finished" in t for t in channel.texts()) == 1


async def test_stop_returns_while_a_send_hangs(redis, channel, sandbox, write, tmp_path):
    """Shutting down while the watcher waits on a send (a long flood-control queue, a hung
    connection) ends within the grace time instead of failing, and hands the summary on at
    once: the next watcher sends it without waiting for the claim to go stale."""
    from conversation.app import ConversationApp

    entered, never = asyncio.Event(), asyncio.Event()

    async def hanging_send(chat_id, text, buttons=None):
        entered.set()
        await never.wait()

    channel.send_text = hanging_send
    async with BatchJobClient(sandbox.url, TOKEN) as client:
        (job_id,) = await submit_jobs(client, write, 1)
        while not (await client.get_job(job_id)).terminal:
            await asyncio.sleep(0.02)
        app = ConversationApp(redis, client, channel, settings(tmp_path))
        await app.store.add_job(job_id, 1)
        app.start_watcher()
        await asyncio.wait_for(entered.wait(), 10)  # the summary's send has begun, and hangs
        await app.stop(grace_s=0.2)
        assert app._task is not None and app._task.done()
        assert "summary" not in await app.store.job(job_id)  # released, not left claimed
        del channel.send_text  # the recording channel's own send again
        await due_now(redis, job_id)  # its lease would lapse; no need to wait
        await run_until_empty(app.store, Watcher(app.store, client, channel, settings(tmp_path)))
    assert sum("finished" in t for t in channel.texts()) == 1


async def test_a_deleted_progress_message_is_started_again(redis, channel, sandbox, write, tmp_path):
    from conversation.channel import MessageGone

    edit = channel.edit_text

    async def edit_text(chat_id, message_id, text, buttons=None):
        if str(message_id) == "99":
            raise MessageGone("message to edit not found")
        return await edit(chat_id, message_id, text, buttons)

    channel.edit_text = edit_text
    sandbox.state.config.records_per_second = 10
    async with BatchJobClient(sandbox.url, TOKEN) as client:
        (job_id,) = await submit_jobs(client, write, 1, body="prompt\n" + "x\n" * 20)
        store = Store(redis)
        await store.add_job(job_id, 1, msg=99)  # its announcement, since deleted by the user
        await run_until_empty(store, Watcher(store, client, channel, settings(tmp_path), lease_ms=100))
    progress = [(mid, t) for _, mid, t, _ in channel.messages if t.startswith(f"Job {job_id}:")]
    assert len(progress) == 1  # started again, once
    assert all(str(mid) == str(progress[0][0]) for _, mid, _ in channel.edits)  # then edited, not 99
    assert sum("finished" in t for t in channel.texts()) == 1


async def test_progress_is_edited_when_counts_move_not_for_the_clock(
    redis, channel, sandbox, write, tmp_path
):
    # Every poll makes a new text (elapsed time, ETA); only a change of state or counts is
    # worth an edit, which spends the send budget every chat shares.
    sandbox.state.config.records_per_second = 0.0001  # stays at 0 done while polled
    sandbox.state.config.queue_seconds = 0
    async with BatchJobClient(sandbox.url, TOKEN) as client:
        (job_id,) = await submit_jobs(client, write, 1)
        store = Store(redis)
        await store.add_job(job_id, 1, count=2)
        w = Watcher(store, client, channel, settings(tmp_path), lease_ms=10)
        await due_now(redis, job_id)
        await w.run_once()  # the first progress message
        started = int(await redis.hget(keys.current().job(job_id), "started_ms"))
        for minutes in (1, 2, 3):  # the clock moves on: "Elapsed 1 minute", "2 minutes", …
            await redis.hset(keys.current().job(job_id), "started_ms", started - minutes * 60_000)
            await due_now(redis, job_id)
            await w.run_once()
        assert channel.edits == [] and len([m for m in channel.messages if job_id in m[2]]) == 1
        sandbox.state.jobs[job_id].fail_at = []
        sandbox.state.config.records_per_second = 1000  # now the counts move: one edit or summary
        await due_now(redis, job_id)
        await w.run_once()
        await w.settled()
    assert channel.edits or any("finished" in t for t in channel.texts())


async def test_an_idle_watcher_sleeps_until_the_next_due_poll_and_wakes_for_a_new_job(
    redis, channel, sandbox, write, tmp_path
):
    # Nothing due: the watcher asks Redis for the earliest scheduled poll and waits for it
    # (at most max_idle), instead of claiming twenty times a second; a job this process adds
    # wakes it at once. Checked by what it waits for and what it claims, not by the clock.
    from tests.conversation.test_store import Counting

    store = Store(redis)
    w = Watcher(store, None, channel, settings(tmp_path), max_idle=3600)  # type: ignore[arg-type]
    assert await w._until_due() == 3600  # nothing scheduled: the longest wait
    await store.add_job("later", 1)
    await redis.zadd(store.k.due(store.k.shard("later")), {"later": 10**13})  # due far ahead
    assert await w._until_due() == 3600
    await redis.zadd(store.k.due(store.k.shard("later")), {"later": 0})  # due now
    assert await w._until_due() == 0
    await store.finish_job("later", {"state": "completed"})

    counting = Counting(redis)
    store.r = counting

    def logged(method, log: list[int]):  # calls the watcher's own method, noting each call
        async def call():
            log.append(counting.sent)
            return await method()

        return call

    rounds: list[int] = []
    looks: list[int] = []
    w.run_once = logged(w.run_once, rounds)  # type: ignore[method-assign]  # claims
    w._until_due = logged(w._until_due, looks)  # type: ignore[method-assign]  # looks at the schedule
    task = asyncio.create_task(w.run())

    async def until(condition) -> None:  # a condition the watcher brings about (capped)
        while not condition():
            await asyncio.sleep(0.01)

    # the first round (a claim, then one look at the earliest due poll), then asleep
    await asyncio.wait_for(until(lambda: looks and counting.sent > looks[0]), 60)
    sent_while_idle = counting.sent
    await asyncio.sleep(0.3)  # six rounds' worth of the earlier 50 ms idle loop
    assert len(rounds) == 1 and len(looks) == 1  # asleep: no claim, no second look
    assert counting.sent == sent_while_idle
    async with BatchJobClient(sandbox.url, TOKEN) as client:
        w.client = client
        (job_id,) = await submit_jobs(client, write, 1)
        await store.add_job(job_id, 1)  # wakes it: with max_idle an hour, nothing else would
        await asyncio.wait_for(until(lambda: w.polls >= 1), 60)
        w.stop()
        await task
    assert w.polls >= 1


async def test_a_storage_error_while_resuming_at_start_does_not_end_the_watcher(
    redis, channel, sandbox, tmp_path, monkeypatch
):
    """A Redis that refuses writes at start (MISCONF, no quorum) fails the resume: the
    watcher waits and resumes again, then polls, instead of ending for good."""
    from redis.exceptions import ResponseError

    store = Store(redis)
    w = Watcher(store, BatchJobClient(sandbox.url, TOKEN), channel, ConversationSettings(media_dir=tmp_path))
    tries = 0
    resume = store.resume
    resumed = asyncio.Event()

    async def refusing_once() -> None:
        nonlocal tries
        tries += 1
        if tries == 1:
            raise ResponseError("MISCONF Redis is configured to save RDB snapshots")
        await resume()
        resumed.set()

    monkeypatch.setattr(store, "resume", refusing_once)
    monkeypatch.setattr(asyncio, "sleep", _no_wait(asyncio.sleep))
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(resumed.wait(), 30)
    assert not task.done() and tries == 2
    w.stop()
    await task
    await w.client.aclose()


def _no_wait(sleep):  # type: ignore[no-untyped-def]
    """asyncio.sleep with the watcher's one-second back-off cut to a yield."""

    async def fast(seconds: float, *a):  # type: ignore[no-untyped-def]
        return await sleep(0 if seconds >= 1.0 else seconds, *a)

    return fast


async def test_a_failed_settling_hands_the_summary_claim_back(redis, channel, sandbox, write, tmp_path):
    """Settling and the summary's claim go side by side: when the settling fails, the claim
    won meanwhile is released, so the next poll (here or elsewhere) sends the summary at once,
    after settling, instead of waiting for the claim to go stale."""
    sandbox.state.config.records_per_second = 1000
    settled: list[str] = []

    async def settle(job, rec):  # type: ignore[no-untyped-def]
        if not settled:
            settled.append("failed")
            raise RuntimeError("budgets unreachable")
        settled.append(job.job_id)

    async with BatchJobClient(sandbox.url, TOKEN) as client:
        (job_id,) = await submit_jobs(client, write, 1)
        for _ in range(10_000):  # the sandbox runs 1,000 records a second: a few polls
            if (await client.get_job(job_id)).status == "completed":
                break
        store = Store(redis)
        await store.add_job(job_id, 1, count=2)
        w = Watcher(store, client, channel, settings(tmp_path), lease_ms=60_000, settle=settle)
        assert await w.run_once() == 1
        await w.settled()
        assert not any("finished" in t for t in channel.texts())  # not before its settling
        await due_now(redis, job_id)
        assert await w.run_once() == 1
        await w.settled()
    assert settled == ["failed", job_id]
    assert sum("finished" in t for t in channel.texts()) == 1
    assert (await store.job(job_id))["summary"] == "sent"
