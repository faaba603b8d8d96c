"""Long polling whose offset moves only past updates that are applied.

Telegram forgets every update below the offset of the next getUpdates call, so PTB's
updater (which moves the offset as soon as updates are fetched) loses the updates of a
process killed mid-handling. Here the offset stays at the oldest update not yet applied
to its chat's state: a restarted bot gets it again, and its lease in Redis (lapsed by
then) lets it be handled again. Updates fetched again while they are being handled here
are skipped, unparsed: while a burst is being handled, every poll brings back the same
hundred updates, and parsing them all again cost more CPU than handling them. A poll that
brings nothing new waits for an update to be applied (the offset can move then) or a
quarter of a second, instead of asking again at once (so does an empty answer that came
back at once, from a server that does not hold the poll). An update that cannot be read is
logged and passed over, not allowed to stop the batch it came in. An update applied here
no longer holds the offset, however long the rest of its handling takes (it held it
until its upload ended, and each hundred chats of a burst waited for the hundred before).
One whose handling failed holds it until it comes again and is handled, at most
`MAX_ATTEMPTS` times.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import Bot
from telegram.error import Conflict, InvalidToken, NetworkError, RetryAfter, TimedOut
from telegram.warnings import PTBUserWarning

from conversation.cancel import check_cancelled

log = logging.getLogger("bot.telegram.polling")

Process = Callable[..., Awaitable[Any]]
NOTHING_NEW_WAIT_S = 0.25  # a poll that brought only updates in hand: the most to wait for progress
MAX_ATTEMPTS = 5  # an update whose handling fails this often is passed over (logged), not retried for ever

# getUpdates is asked for raw (updates are read from their JSON); PTB suggests its own method.
warnings.filterwarnings("ignore", message=r"Please use 'Bot\.get_?[uU]pdates'", category=PTBUserWarning)


class Poller:
    def __init__(self, bot: Bot, process: Process, *, timeout: float, poll_seconds: int = 10) -> None:
        self.bot = bot
        self.process = process
        self.timeout = timeout
        self.poll_seconds = poll_seconds
        self.handling: dict[int, asyncio.Task[Any]] = {}
        self.applied: set[int] = set()  # applied here, at or past the offset (Telegram resends them)
        self.failed: dict[int, int] = {}  # not applied when its handling ended: attempts so far
        self.offset: int | None = None
        # Heaps kept as updates come and go, so that a poll costs the same with 1,000 updates
        # in hand as with one (scanning them all at every poll was ~4% of a burst's CPU):
        # every update that became pending (some since applied: passed over when on top),
        # and every applied one, to forget once the offset passes it.
        self._pending: list[int] = []
        self._applied_order: list[int] = []
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Event()  # an update was applied or its handling ended

    def start(self, allowed_updates: list[str]) -> None:
        self._task = asyncio.create_task(self._run(allowed_updates), name="telegram-polling")

    def next_offset(self, last_seen: int | None) -> int | None:
        """The oldest update handled here and not applied (being handled, or failed and
        to come again), else the one after the last seen."""
        pending = self._pending
        while pending and not self._is_pending(pending[0]):
            heapq.heappop(pending)
        offset = pending[0] if pending else (last_seen + 1 if last_seen is not None else self.offset)
        if offset is not None:
            # Forget what the offset has passed, except updates still being handled: one
            # applied long ago may still be at its upload, and must not count as pending
            # (forgotten when its handling ends).
            order = self._applied_order
            while order and order[0] < offset:
                uid = heapq.heappop(order)
                if uid not in self.handling:
                    self.applied.discard(uid)
        return offset

    def _is_pending(self, uid: int) -> bool:
        return (uid in self.handling and uid not in self.applied) or uid in self.failed

    def _apply(self, uid: int) -> None:
        if uid not in self.applied:
            self.applied.add(uid)
            heapq.heappush(self._applied_order, uid)

    async def _run(self, allowed_updates: list[str]) -> None:
        delay = 1.0
        last_seen: int | None = None
        while True:
            self.offset = self.next_offset(last_seen)
            self._progress.clear()
            asked = asyncio.get_running_loop().time()
            try:
                updates = await self.bot.do_api_request(
                    "get_updates",
                    api_kwargs={
                        "offset": self.offset,
                        "timeout": self.poll_seconds,
                        "allowed_updates": allowed_updates,
                    },
                    read_timeout=self.timeout + self.poll_seconds,
                )
                delay = 1.0
            except InvalidToken:
                log.error("the Bot API refused the token; polling stops")
                return
            except RetryAfter as e:
                wait = e.retry_after
                await asyncio.sleep(wait.total_seconds() if hasattr(wait, "total_seconds") else float(wait))
                continue
            except (NetworkError, TimedOut, Conflict) as e:
                check_cancelled()  # a cancel that came out as a network error still stops
                log.warning("getUpdates failed (%s); trying again in %.0f s", type(e).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            new = 0
            for raw in updates if isinstance(updates, list) else ():
                uid = raw.get("update_id") if isinstance(raw, dict) else None
                if not isinstance(uid, int) or isinstance(uid, bool):
                    log.warning("getUpdates returned an update without an id; passed over")
                    continue
                last_seen = max(uid, last_seen or uid)
                if uid in self.handling or uid in self.applied:
                    continue  # fetched again: being handled here, or applied already
                new += 1
                self.handling[uid] = asyncio.create_task(self._handle(uid, raw))
                heapq.heappush(self._pending, uid)
            quick = asyncio.get_running_loop().time() - asked < self.poll_seconds / 2
            if not new and (updates or quick):
                # Only updates in hand (or an empty answer that did not wait, as a long poll
                # does): asking again at once would bring the same back.
                # asyncio.timeout, not wait_for: on 3.11, wait_for can swallow a cancel that
                # comes as its time runs out, and stopping the poller then waits for ever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(NOTHING_NEW_WAIT_S):
                        await self._progress.wait()

    async def _handle(self, uid: int, update: dict[str, Any]) -> None:
        try:
            if await self.process(uid, update) == "done":
                self._apply(uid)  # a duplicate: applied before, here or elsewhere
        except Exception:
            log.exception("update %s failed", uid)
        finally:
            self.handling.pop(uid, None)
            if uid not in self.applied:  # failed or busy elsewhere: the offset waits, it comes again
                attempts = self.failed[uid] = self.failed.get(uid, 0) + 1
                heapq.heappush(self._pending, uid)
                if attempts >= MAX_ATTEMPTS:
                    log.error("update %s was not handled in %s attempts; passed over", uid, attempts)
                    del self.failed[uid]
                    self._apply(uid)
            elif self.offset is not None and uid < self.offset:
                self.applied.discard(uid)  # the offset passed it while it was being handled
            self._progress.set()

    def mark_applied(self, update_id: int) -> None:
        if self._task is not None:  # polling (in webhook mode there is no offset to keep)
            self._apply(update_id)
            self.failed.pop(update_id, None)
            self._progress.set()

    async def stop(self, grace_s: float = 5.0) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self.handling:
            # Handlers cut short past the grace time leave their updates to a redelivery
            # (not applied) or to the chat's recovery (applied).
            await asyncio.wait(list(self.handling.values()), timeout=grace_s)
            for task in list(self.handling.values()):
                task.cancel()
