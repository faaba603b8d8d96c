"""Wiring: store + client + runner + watcher for one channel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from batchjob.client import BatchJobClient
from batchjob.input import Limits
from conversation import keys
from conversation.cancel import check_cancelled
from conversation.channel import Channel
from conversation.leases import Leases, replica_id
from conversation.recovery import Recovery
from conversation.runner import Runner
from conversation.settings import ConversationSettings
from conversation.state import ChatState
from conversation.store import Store, load_scripts, open_connections
from conversation.watcher import Watcher

log = logging.getLogger("conversation.app")
WARM_UP_WAIT_S = 2.0  # a channel's events wait at its platform meanwhile; a slow Redis holds no longer


def keys_for(settings: ConversationSettings) -> keys.Keys:
    base = keys.current()
    return keys.Keys(settings.redis_prefix or base.prefix, settings.redis_shards or base.shards)


class ConversationApp:
    def __init__(
        self,
        redis: Redis,
        client: BatchJobClient,
        channel: Channel,
        settings: ConversationSettings,
        limits: Limits | None = None,
        *,
        replica: str | None = None,
    ) -> None:
        self.keys = keys_for(settings)
        self.store = Store(redis, keys=self.keys, pending_ttl_s=settings.pending_ttl_seconds)
        self.client = client
        lease_ms = int(settings.replica_lease_seconds * 1000)
        self.leases = Leases(redis, replica or replica_id(), keys=self.keys, lease_ms=lease_ms)
        self.runner = Runner(self.store, client, channel, settings, limits, self.leases)
        self.recovery = Recovery(self.runner, every_s=settings.replica_lease_seconds / 3)
        self.watcher = Watcher(
            self.store,
            client,
            channel,
            settings,
            on_finished=self._job_finished,
            settle=self.runner.spending.settle,
            lease_ms=int(settings.watch_lease_seconds * 1000),
        )
        self.finished_hooks: list[Callable[[str, str], Awaitable[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._warming: asyncio.Task[None] | None = None
        self._recovering: asyncio.Task[None] | None = None
        self.recovered = asyncio.Event()  # set once in-flight work of a crashed process is resumed
        self._sweeper: asyncio.Task[None] | None = None
        self._approvals: asyncio.Task[None] | None = None

    async def _job_finished(self, chat_id: str, job_id: str) -> None:
        """Take a finished job off the chat's active list (its record stays for /status)."""

        def drop(state: ChatState) -> tuple[ChatState, dict[int, str]] | None:
            if job_id not in state.jobs:
                return None
            state.jobs.remove(job_id)
            return state, {}

        await self.store.change(chat_id, drop)
        for hook in self.finished_hooks:
            await hook(chat_id, job_id)

    def start_watcher(self) -> None:
        self._start_warming()
        self._task = asyncio.create_task(self._run_watcher(), name="watcher")
        self._sweeper = asyncio.create_task(self._sweep(), name="media-sweeper")
        self._approvals = asyncio.create_task(self._sweep_approvals(), name="approvals")

    def _start_warming(self) -> None:
        if self._warming is None:
            self._warming = asyncio.create_task(self.warm(), name="warm-up")

    async def warmed(self, timeout: float = WARM_UP_WAIT_S) -> None:
        """Wait, `timeout` at most, for the warm-up (started here if the watcher has not
        started it): a channel takes its first updates with the scripts loaded and the
        connections open, unless Redis is slow to answer (then it goes on without)."""
        self._start_warming()
        await asyncio.wait({self._warming}, timeout=timeout)  # type: ignore[arg-type]

    async def warm(self) -> None:
        """Load every Redis script at start (on a fresh or restarted server each of a
        burst's first callers would find one missing and load it again) and open the
        connections a burst starts with. (Babel's locale data, ~40 ms at a process's first
        estimate, stays lazy: 7 MiB an idle bot need not hold.)"""
        for what, step in (("scripts", load_scripts), ("connections", open_connections)):
            try:
                await step(self.store.r)
            except Exception as e:  # a cluster's errors are not all RedisErrors; callers cope anyway
                check_cancelled()
                log.warning("%s not ready at start: %s", what, type(e).__name__)

    async def _run_watcher(self) -> None:
        # In-flight work of a crashed process first; then, all along, that of dead replicas.
        self._recovering = asyncio.create_task(self.recovery.run(self.recovered), name="recovery")
        await self.recovered.wait()
        await self.watcher.run()

    async def _sweep(self, every_s: float = 300.0) -> None:
        while True:
            try:
                await asyncio.to_thread(self.runner.sweep_media)
            except OSError:
                log.warning("media sweep failed")
            await asyncio.sleep(every_s)

    async def _sweep_approvals(self) -> None:
        # Expiries need not be to the second: a tenth of the time allowed, at most every 10 s.
        every_s = min(10.0, self.runner.settings.approval_ttl_seconds / 10)
        while True:
            try:
                await self.runner.spending.sweep()
            except RedisError:
                check_cancelled()
                log.warning("approvals sweep: storage unavailable")
            except Exception:
                check_cancelled()
                log.exception("approvals sweep failed")
            await asyncio.sleep(every_s)

    async def stop(self, grace_s: float = 5.0) -> None:
        self.watcher.stop()
        if self._warming is not None:
            self._warming.cancel()
        if self._approvals is not None:
            self._approvals.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._recovering is not None:
            self._recovering.cancel()
            # Bounded: a Redis command cut short by the cancel can leave a cluster connection
            # that never answers; stopping must not wait on it.
            await asyncio.wait({self._recovering}, timeout=grace_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.recovery.retire(), grace_s)
        if self._task is not None:
            # The round in progress may finish; past the grace time it is cancelled, which is
            # safe: its leases lapse and a watcher (another replica, or this bot restarted)
            # takes the jobs over, a half-sent summary included.
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, grace_s)
