"""Progress edits go out off the watcher's polls: a poll never waits for the send budget,
each job has one edit waiting (the newest text, in its place in line), a job that ended
gets no late edit, and summaries do not queue behind edits."""

from __future__ import annotations

import asyncio

from batchjob.client import BatchJobClient
from conversation import keys
from conversation.progress import Edit, ProgressEdits
from conversation.store import Store
from conversation.watcher import Watcher
from tests.conftest import TOKEN
from tests.conversation.test_watcher import due_now, settings, submit_jobs


class HeldEdits:
    """Wraps a channel's edits: each waits until released."""

    def __init__(self, channel) -> None:  # type: ignore[no-untyped-def]
        self.release = asyncio.Event()
        self.started: list[int] = []  # message ids whose edit has begun
        self._edit = channel.edit_text
        channel.edit_text = self.edit_text

    async def edit_text(self, chat_id, message_id, text, buttons=None):  # type: ignore[no-untyped-def]
        self.started.append(message_id)
        await self.release.wait()
        return await self._edit(chat_id, message_id, text, buttons)


async def test_polls_do_not_wait_for_edits(redis, channel, sandbox, write, tmp_path):
    sandbox.state.config.records_per_second = 0.0001  # running, nothing done yet
    # Running from the start: both rounds see the same counts whenever they come (a job
    # seen queued, then running, would rightly get a second, newer edit).
    sandbox.state.config.queue_seconds = 0.0
    held = HeldEdits(channel)
    async with BatchJobClient(sandbox.url, TOKEN) as client:
        jobs = await submit_jobs(client, write, 20)
        store = Store(redis)
        for i, job_id in enumerate(jobs):
            await store.add_job(job_id, 100 + i, count=2, msg=500 + i)  # announced: edits follow
        w = Watcher(store, client, channel, settings(tmp_path), batch=100)
        # Every edit hangs, yet the round polls and reschedules all 20 jobs and returns.
        assert await asyncio.wait_for(w.run_once(), 30) == 20
        k = keys.current()
        for job_id in jobs:
            rec = await store.job(job_id)
            assert rec["polls"] == "1" and "text" not in rec  # polled; its edit not sent yet
            assert await redis.zscore(k.due(k.shard(job_id)), job_id) is not None
        assert len(w.edits.waiting) + len(w.edits.sending) == 20  # one edit per job, none twice
        for job_id in jobs:  # polled again while the edits still hang: no second edit each
            await due_now(redis, job_id)
        assert await asyncio.wait_for(w.run_once(), 30) == 20
        assert len(w.edits.waiting) + len(w.edits.sending) == 20
        held.release.set()
        await w.edits.settled()
    assert sorted(int(mid) for _, mid, _ in channel.edits) == list(range(500, 520))  # each once
    for job_id in jobs:
        assert (await store.job(job_id))["text"]  # recorded once sent


async def test_a_newer_text_replaces_the_waiting_one_in_its_place(redis, channel):
    held = HeldEdits(channel)
    store = Store(redis)
    for job_id in ("a", "b", "c", "d"):
        await store.add_job(job_id, 1, msg=1)
    edits = ProgressEdits(store, channel, senders=1)
    edits.put("a", Edit(1, 10, "a 1", None, "1"))  # taken at once by the only sender
    for _ in range(100):
        if held.started:
            break
        await asyncio.sleep(0)
    for job_id in ("b", "c", "d"):
        edits.put(job_id, Edit(1, ord(job_id), f"{job_id} 1", None, "1"))
    edits.put("b", Edit(1, ord("b"), "b 2", None, "2"))  # b moved on: its newer text, same place
    held.release.set()
    await edits.settled()
    assert [t for _, _, t in channel.edits] == ["a 1", "b 2", "c 1", "d 1"]
    assert (await store.job("b"))["text"] == "2"


async def test_a_job_that_ended_meanwhile_gets_no_late_edit(redis, channel):
    store = Store(redis)
    await store.add_job("j", 1, msg=7)
    held = HeldEdits(channel)
    edits = ProgressEdits(store, channel, senders=1)
    edits.put("x", Edit(1, 8, "x", None, "1"))  # holds the only sender
    edits.put("j", Edit(1, 7, "j at 90%", None, "1"))
    await store.finish_job("j", {"state": "completed"})  # e.g. by another replica
    held.release.set()
    await edits.settled()
    assert [mid for _, mid, _ in channel.edits] == [8]  # the final text stands


async def test_a_summary_does_not_wait_for_other_jobs_edits(redis, channel, sandbox, write, tmp_path):
    sandbox.state.config.records_per_second = 0.0001
    held = HeldEdits(channel)
    async with BatchJobClient(sandbox.url, TOKEN) as client:
        running = await submit_jobs(client, write, 5)
        store = Store(redis)
        for i, job_id in enumerate(running):
            await store.add_job(job_id, 100 + i, count=2, msg=500 + i)
        w = Watcher(store, client, channel, settings(tmp_path, poll_min_seconds=600, poll_max_seconds=600))
        await w.run_once()  # five edits queued, all hanging; their next polls are far off
        sandbox.state.config.records_per_second = 1000
        (done,) = await submit_jobs(client, write, 1)
        while not (await client.get_job(done)).terminal:
            await asyncio.sleep(0.02)
        await store.add_job(done, 9, count=2)
        await due_now(redis, done)
        await w.run_once()
        await asyncio.wait_for(asyncio.gather(*w._finishing.values()), 30)
        assert any(t.startswith(f"Job {done} finished") for t in channel.texts())
        assert channel.edits == []  # the others' edits still hang
        held.release.set()
        await w.settled()
