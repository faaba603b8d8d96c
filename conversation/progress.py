"""Progress edits, sent off the watcher's polls.

A poll that finds a job's counts moved hands the new text here and goes on: polling never
waits for the send budget. Each job has at most one edit waiting (a newer text replaces
the waiting one in its place), and edits go out oldest first, so when the budget is short
every running job's message is refreshed in turn, once per pass over the jobs that
changed, instead of the busiest jobs taking it all. Edits send at the lowest priority:
first answers, answers and summaries go before them.

Nothing here is kept across a crash: what an edit did is recorded (text digest, time) only
after it was sent, so the next poll, here or on another replica, hands the text over again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass

from conversation import crash
from conversation.channel import PROGRESS, SEND_PRIORITY, Buttons, Channel, MessageGone, MessageId
from conversation.store import Store, now_ms

log = logging.getLogger("conversation.progress")


@dataclass
class Edit:
    chat: str
    msg: MessageId
    text: str
    buttons: Buttons | None
    digest: str


class ProgressEdits:
    def __init__(self, store: Store, channel: Channel, *, senders: int = 8) -> None:
        self.store = store
        self.channel = channel
        self.senders = senders
        self.waiting: OrderedDict[str, Edit] = OrderedDict()  # job id -> its newest text
        self.sending: dict[str, tuple[str, asyncio.Event]] = {}  # job id -> digest, set when returned
        self.edited = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def put(self, job_id: str, edit: Edit) -> None:
        """Queue (or replace) the job's edit; never waits."""
        if (flying := self.sending.get(job_id)) is not None and flying[0] == edit.digest:
            self.waiting.pop(job_id, None)
            return  # that very text is on its way
        self.waiting[job_id] = edit  # a replaced entry keeps its place in line
        if len(self._tasks) < self.senders:
            task = asyncio.create_task(self._send_waiting(), name="progress-edits")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def withdraw(self, job_id: str) -> None:
        """The job ended: drop its waiting edit and let one in flight return first, so the
        final text is the last one the message shows."""
        self.waiting.pop(job_id, None)
        if (flying := self.sending.get(job_id)) is not None:
            await flying[1].wait()

    @property
    def busy(self) -> bool:
        """Some edit is waiting or being sent."""
        return bool(self._tasks)

    async def settled(self) -> None:
        """Every queued edit was sent (or failed)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop sending; waiting edits are dropped (the next poll queues them again)."""
        self.waiting.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _send_waiting(self) -> None:
        SEND_PRIORITY.set(PROGRESS)  # this task's own context
        try:
            await self._drain()
        finally:
            # Off the list in the same step as its last look at the queue: an edit put
            # from now on starts a sender of its own instead of waiting for none.
            self._tasks.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _drain(self) -> None:
        while self.waiting:
            job_id, edit = self.waiting.popitem(last=False)
            flying = self.sending[job_id] = (edit.digest, asyncio.Event())
            try:
                await self._send(job_id, edit)
            finally:
                flying[1].set()
                if self.sending.get(job_id) is flying:
                    del self.sending[job_id]

    async def _send(self, job_id: str, edit: Edit) -> None:
        try:
            if await self.store.job_done(job_id):
                return  # ended meanwhile (perhaps on another replica): its final text stands
            await self.channel.edit_text(edit.chat, edit.msg, edit.text, edit.buttons)
            crash.point("progress.after_edit")
        except MessageGone:
            # Deleted by the user: the next update starts a new message.
            with contextlib.suppress(Exception):
                await self.store.record_job(job_id, {"msg": ""})
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("progress update for %s failed", job_id)
            return
        self.edited += 1
        with contextlib.suppress(Exception):  # not recorded: the next poll queues it again
            await self.store.record_job(job_id, {"text": edit.digest, "edit_ms": now_ms()})
