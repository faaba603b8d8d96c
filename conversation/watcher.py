"""Polls every active job until it is terminal, across restarts and replicas.

Each round claims due jobs with one Lua call (which also re-scores them to now + lease,
so a crashed watcher's jobs simply become due again), polls them concurrently, then
reschedules each with backoff and jitter (honouring Retry-After) or finishes it. A poll
never waits for a send: progress edits are handed to `conversation.progress` (at most every
`progress_edit_seconds`, only when the state or counts moved), and a job that ended is
finished by a task of its own (final edit, summary) while the rounds go on; its claim's
lease keeps it from being polled meanwhile, and brings it back if this process dies. The
terminal summary is sent by whoever first sets the job's summary marker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

import locales
from batchjob import errors as bj
from batchjob.client import BatchJobClient
from batchjob.models import Job
from conversation import crash, texts
from conversation.cancel import check_cancelled
from conversation.channel import (
    BACKGROUND,
    SEND_GATE,
    SEND_PRIORITY,
    Channel,
    DeliveryUnknown,
    SendWithdrawn,
)
from conversation.identity import qualify
from conversation.progress import Edit, ProgressEdits
from conversation.settings import ConversationSettings
from conversation.store import Store, now_ms

log = logging.getLogger("conversation.watcher")

OnTerminal = Callable[[int, str], Awaitable[None]]
Reschedule = tuple[str, int, dict[str, Any]]  # job id, next poll (ms), fields to record


class Watcher:
    def __init__(
        self,
        store: Store,
        client: BatchJobClient,
        channel: Channel,
        settings: ConversationSettings,
        *,
        on_finished: OnTerminal | None = None,
        settle: Callable[[Job, dict[str, str]], Awaitable[None]] | None = None,
        batch: int = 100,
        lease_ms: int = 30_000,
        idle_sleep: float = 0.05,
        max_idle: float = 5.0,
        concurrency: int = 50,
    ) -> None:
        self.store = store
        self.client = client
        self.channel = channel
        self.settings = settings
        self.on_finished = on_finished
        self.settle = settle  # the budgets' share a job did not spend goes back (once)
        self.batch = batch
        self.lease_ms = lease_ms
        self.idle_sleep = idle_sleep
        self.max_idle = max_idle
        self.sem = asyncio.Semaphore(concurrency)
        self.polls = 0
        self.lags_ms: deque[int] = deque(maxlen=100_000)  # due -> poll, for metrics and the benchmark
        self.stopped = asyncio.Event()
        self.edits = ProgressEdits(store, channel)
        self._finishing: dict[str, asyncio.Task[None]] = {}  # job id -> its final edit and summary

    def next_delay_ms(self, polls: int, retry_after: float | None = None) -> int:
        """5 s early, growing to the max; 10% jitter; never sooner than Retry-After."""
        lo, hi = self.settings.poll_min_seconds, self.settings.poll_max_seconds
        base = min(hi, lo * (1.5 ** max(0, polls - 3)))
        delay = base * random.uniform(0.9, 1.1)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return int(delay * 1000)

    async def run(self) -> None:
        try:
            await self._rounds()
            # Stopped: summaries under way may finish (the caller's grace time bounds this).
            await asyncio.gather(*list(self._finishing.values()), return_exceptions=True)
        finally:
            # Cancelled: summaries still waiting hand their claims on; waiting edits are
            # dropped (the next poll, here or elsewhere, queues them again).
            finishing = list(self._finishing.values())
            for task in finishing:
                task.cancel()
            await asyncio.gather(*finishing, return_exceptions=True)
            await self.edits.close()

    async def settled(self) -> None:
        """Every summary and progress edit handed off so far has been sent (or failed)."""
        while self._finishing or self.edits.busy:
            await asyncio.gather(*list(self._finishing.values()), return_exceptions=True)
            await self.edits.settled()

    async def _rounds(self) -> None:
        while not self.stopped.is_set():  # a Redis refusing commands at start: wait, not die
            try:
                await self.store.resume()
                break
            except RedisError:
                check_cancelled()
                log.warning("storage unavailable; watcher waits to resume its jobs")
                await asyncio.sleep(1.0)
        while not self.stopped.is_set():
            self.store.job_added.clear()  # a job added from here on wakes the next wait
            try:
                n = await self.run_once()
            except RedisError:
                check_cancelled()
                log.warning("storage unavailable; watcher waits")
                n = 0
                await asyncio.sleep(1.0)
            if 0 < n < self.batch:
                # Caught up: wait a moment so the next claim gathers a batch (fewer round
                # trips and less CPU per poll, at the cost of up to idle_sleep of lag).
                await self._wait(self.idle_sleep)
            elif n == 0:
                # Nothing due: look (cheaply) when the next poll is, and claim only then.
                while (wait := await self._until_due()) > 0:
                    if await self._wait(wait):
                        break

    async def _until_due(self) -> float:
        """Seconds until the earliest scheduled poll (0: due now), at most max_idle (a job
        another replica schedules is seen by then; this process's own new jobs wake it). An
        idle bot then asks Redis once every few seconds, not twenty rounds a second."""
        try:
            due = await self.store.next_due()
        except RedisError:
            return 1.0
        if due is None:
            return self.max_idle
        return min(self.max_idle, max(0.0, (due - now_ms()) / 1000))

    async def _wait(self, seconds: float) -> bool:
        """Sleep `seconds`, or less when stopped or when this process adds a job (True then)."""
        waits = [
            asyncio.ensure_future(self.stopped.wait()),
            asyncio.ensure_future(self.store.job_added.wait()),
        ]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        return self.stopped.is_set() or self.store.job_added.is_set()

    def stop(self) -> None:
        self.stopped.set()

    async def run_once(self) -> int:
        """One round: claim due jobs (one call), poll them, reschedule them all (one call)."""
        priority = SEND_PRIORITY.set(BACKGROUND)  # the polls' tasks inherit it
        try:
            return await self._round()
        finally:
            SEND_PRIORITY.reset(priority)

    async def _round(self) -> int:
        claimed = await self.store.claim(now_ms(), self.lease_ms, self.batch)
        if claimed:
            crash.point("watcher.after_claim")
            results = await asyncio.gather(*(self._guarded(job_id, rec) for job_id, rec in claimed))
            crash.point("watcher.before_reschedule")
            await self.store.reschedule_many([r for r in results if r is not None])
            crash.point("watcher.after_reschedule")
        return len(claimed)

    async def _guarded(self, job_id: str, rec: dict[str, str]) -> Reschedule | None:
        async with self.sem:
            try:
                return await self.poll(job_id, rec)
            except RedisError:
                raise
            except Exception:
                log.exception("poll of %s failed; it stays scheduled", job_id)
                return None

    async def poll(self, job_id: str, rec: dict[str, str]) -> Reschedule | None:
        """Poll one job. Returns its next schedule, or None when it was finished here."""
        if not rec or rec.get("done") == "1":
            await self.store.finish_job(job_id, {})
            return None
        self.polls += 1
        if rec.get("due"):
            self.lags_ms.append(now_ms() - int(rec["due"]))
        chat = qualify(rec.get("chat") or "")
        lang = rec.get("lang") or "en"
        polls = int(rec.get("polls") or 0) + 1
        started = int(rec.get("started_ms") or now_ms())
        hint = int(rec["count"]) if rec.get("count", "").isdigit() else None
        now = now_ms()
        try:
            job = await self.client.get_job(job_id)
            crash.point(f"watcher.after_get:{job.status}")
        except bj.NotFound:
            await self._finish(chat, job_id, {})
            return None
        except bj.BatchJobError as e:
            return (
                job_id,
                now + self.next_delay_ms(polls, getattr(e, "retry_after", None)),
                {"polls": polls},
            )
        elapsed = (now - started) / 1000
        fields: dict[str, Any] = {"polls": polls}
        if job.status != rec.get("status"):
            fields["status"] = job.status
        if job.terminal:
            if job_id not in self._finishing:
                self._spawn_terminal(chat, lang, job, elapsed, hint, rec)
            return None  # the claim's lease keeps it off the schedule meanwhile
        if elapsed > self.settings.watch_max_seconds:
            await self.channel.send_text(chat, locales.t(lang, "job.watch_stopped", job_id=job_id))
            await self._finish(chat, job_id, {"status": job.status, "stopped": "1"})
            return None
        text = texts.progress(lang, job, elapsed, hint)
        await self._progress(chat, job_id, text, _what_changes(job), rec, fields, now)
        return (job_id, now + self.next_delay_ms(polls), fields)

    def _spawn_terminal(
        self, chat: str, lang: str, job: Job, elapsed: float, hint: int | None, rec: dict[str, str]
    ) -> None:
        async def finish() -> None:
            # Sent at the watcher's priority (BACKGROUND, from the poll's context): after
            # answers, before progress edits.
            try:
                again = await self._terminal(chat, lang, job, elapsed, hint, rec)
                if again is not None:
                    await self.store.reschedule_many([again])
            except Exception:
                log.exception("summary of %s failed; the job stays scheduled", job.job_id)
            finally:
                self._finishing.pop(job.job_id, None)

        self._finishing[job.job_id] = asyncio.create_task(finish(), name=f"finish-{job.job_id}")

    async def _progress(
        self,
        chat: str,
        job_id: str,
        text: str,
        seen: str,
        rec: dict[str, str],
        fields: dict[str, Any],
        now: int,
    ) -> None:
        # Edited only when the job's state or counts moved, never for the clock alone: each
        # edit spends the chat's and the bot's send budget (30 messages/s for every chat).
        digest = format(zlib.crc32(seen.encode()), "x")
        if digest == rec.get("text"):
            return
        last_edit = int(rec.get("edit_ms") or 0)
        if now - last_edit < self.settings.progress_edit_seconds * 1000:
            return
        lang = rec.get("lang") or "en"
        msg = rec.get("msg")
        if msg:
            self.edits.put(job_id, Edit(chat, msg, text, texts.job_buttons(lang, job_id), digest))
            return
        # Rare: the announcement did not go out (or was not recorded): a new message, sent
        # here so that two queued sends cannot make two.
        try:
            crash.point("progress.before_send")
            fields["msg"] = await self.channel.send_text(chat, text, texts.job_buttons(lang, job_id))
            crash.point("progress.after_send")
        except Exception:
            log.warning("progress update for %s failed", job_id)
            return
        fields["text"] = digest  # a digest: compared on every poll, no need to store the text
        fields["edit_ms"] = now

    async def _terminal(
        self, chat: str, lang: str, job: Job, elapsed: float, hint: int | None, rec: dict[str, str]
    ) -> Reschedule | None:
        claimed_at = now_ms()
        claiming = self.store.claim_summary(job.job_id, stale_ms=5 * self.lease_ms, now=claimed_at)
        if self.settle is None:
            claim = await claiming
        else:
            # Settled once whoever calls, side by side with the summary's claim (one round
            # trip); a claim won while the settling failed is handed back: no summary before it.
            settled, claimed = await asyncio.gather(self.settle(job, rec), claiming, return_exceptions=True)
            if isinstance(claimed, BaseException):
                raise claimed
            if isinstance(settled, BaseException):
                if claimed > 0:
                    await self.store.release_summary(job.job_id)
                raise settled
            claim = claimed
        if claim < 0:
            # Another watcher is sending it right now (or died doing so): look again later.
            return (job.job_id, now_ms() + self.lease_ms, {})
        if claim > 0:
            crash.point("summary.after_claim")
            await self.edits.withdraw(job.job_id)  # an older text must not land after the final one
            began = False

            async def begin() -> bool:
                # Passed by the channel as the request leaves (after any flood wait): from
                # then on the summary counts as sent; a takeover never repeats it.
                nonlocal began
                began = await self.store.begin_summary(job.job_id, claimed_at)
                return began

            gate = SEND_GATE.set(begin)
            try:
                summary = texts.summary(lang, job, elapsed, hint)
                await self.channel.send_text(chat, summary, texts.summary_buttons(lang, job))
            except SendWithdrawn:
                return (job.job_id, now_ms() + self.lease_ms, {})  # taken over: the other one sends
            except DeliveryUnknown:
                # It may have arrived: sending again could duplicate it. Keep it as sent.
                log.warning("summary of %s: delivery unknown, not repeated", job.job_id)
            except asyncio.CancelledError:
                # Stopped mid-send (shutdown): a summary whose request had not left is handed
                # on now, instead of waiting for its claim to go stale.
                if not began:
                    with contextlib.suppress(RedisError):
                        await self.store.release_summary(job.job_id)
                raise
            except Exception as e:
                log.warning("summary of %s not sent (%s); will retry", job.job_id, type(e).__name__)
                await self.store.release_summary(job.job_id)  # known not sent: try again later
                return (job.job_id, now_ms() + self.next_delay_ms(1), {})
            finally:
                SEND_GATE.reset(gate)
            crash.point("summary.after_send")
            # The progress message's final text after the summary: a chat's sends are a
            # second apart, and the summary is what the user waits for.
            if rec.get("msg") and format(zlib.crc32(_what_changes(job).encode()), "x") != rec.get("text"):
                try:
                    await self.channel.edit_text(chat, rec["msg"], texts.progress(lang, job, elapsed, hint))
                except Exception:
                    log.warning("final progress edit for %s failed", job.job_id)
        fields = {"status": job.status, "state": job.state}
        if claim > 0:
            fields["summary"] = "sent"  # marked with the job's end, in the same write
        await self._finish(chat, job.job_id, fields)
        return None

    async def _finish(self, chat: str, job_id: str, fields: dict[str, Any]) -> None:
        await self.store.finish_job(job_id, fields)
        crash.point("watcher.after_finish")
        if self.on_finished is not None:
            await self.on_finished(chat, job_id)


def _what_changes(job: Job) -> str:
    """What a progress message shows that is worth an edit: the state and the counts."""
    return f"{job.state}|{job.status}|{job.total}|{job.completed}|{job.failed}|{job.processed}|{job.progress}"
