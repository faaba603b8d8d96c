"""Redis commands that concurrent tasks issue in one event-loop turn travel as one pipeline.

A burst of chats makes hundreds of small, independent Redis calls (a state save, a flood slot,
an outbox entry): each paid a round trip, a pooled connection and a socket write of its own.
Here every command (and every non-transactional pipeline) issued while the loop runs one turn
is queued, and the queue is sent at the start of the next turn as a single pipeline: one write,
one round trip, the answers handed back to each caller. A task's own commands keep their order
(it awaits each answer before its next call); commands of different tasks never depended on
each other's order, since they were already racing.

`later(client)` queues a write nobody waits for (unlisting a chat, an audit entry, a cache):
it rides with the next command anyone sends, or goes on its own after `LATER_S`. Anything
this client sends afterwards is sent after it, so this process reads its own writes.
Transactions, WATCH and pipelines holding Script objects keep their own connection and round
trip; the writes queued before them are sent first.

redis-py has no such mode (ioredis calls it auto-pipelining); this is the small part of it the
bot needs, on top of redis-py's connections, parsing and callbacks. A batch goes out on a
connection this client keeps between batches, written and read directly, not through
redis-py's command and pipeline paths (the pool's lock and condition, timers, observability
hooks, a Pipeline object a batch: most of the bot's Redis CPU in a burst). A batch whose
connection fails is sent again through redis-py's own path, which reconnects and retries as
configured (so a batch lost with its connection may be sent up to three times, as redis-py's
retries alone sent it up to two).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("conversation.autopipeline")

LATER_S = 0.01  # how long a write nobody waits for may wait for company
KEPT_CONNECTIONS = 4  # connections kept between batches (more batches in flight borrow from the pool)
Command = tuple[tuple[Any, ...], dict[str, Any]]


class _Pending:
    """Commands of one caller: a single command, or a pipeline's stack answered as a list."""

    __slots__ = ("commands", "future", "single")

    def __init__(self, commands: list[Command], future: asyncio.Future[Any], single: bool) -> None:
        self.commands, self.future, self.single = commands, future, single


class _Batch:
    """The queue one client's commands wait in, and the sends on their way."""

    def __init__(self) -> None:
        self.queue: list[_Pending] = []
        self.soon: asyncio.Handle | None = None  # the flush at the next turn, or after LATER_S
        self.in_flight: set[asyncio.Task[None]] = set()

    def add(
        self, client: AutoPipelining, commands: list[Command], single: bool, later: bool
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.queue.append(_Pending(commands, future, single))
        if not later:
            if self.soon is not None and isinstance(self.soon, asyncio.TimerHandle):
                self.soon.cancel()  # a write waiting for company has it now
                self.soon = None
            if self.soon is None:
                self.soon = loop.call_soon(self.flush, client)
        elif self.soon is None:
            self.soon = loop.call_later(LATER_S, self.flush, client)
        return future

    def flush(self, client: AutoPipelining) -> asyncio.Task[None] | None:
        if self.soon is not None:
            self.soon.cancel()
            self.soon = None
        # A caller cancelled before its turn came never reaches the server.
        batch = [p for p in self.queue if not p.future.done()]
        self.queue = []
        if not batch:
            return None
        task = asyncio.get_running_loop().create_task(client._send(batch))
        self.in_flight.add(task)  # held: the loop keeps only weak references to tasks
        task.add_done_callback(lambda t: self._sent(t, batch))
        return task

    def _sent(self, task: asyncio.Task[None], batch: list[_Pending]) -> None:
        self.in_flight.discard(task)
        for pending in batch:  # a send stopped (cancelled, the loop closing): so are its callers
            if not pending.future.done():
                pending.future.cancel()

    async def drain(self, client: AutoPipelining) -> None:
        """Send what is queued now, and wait for every send on its way."""
        self.flush(client)
        if self.in_flight:
            await asyncio.wait(list(self.in_flight))


class RemembersScripts:
    """Mix into a redis-py client: the scripts registered on it, to be loaded at once at start
    (`conversation.store.load_scripts`) rather than each by the first of a burst's callers to
    find it missing, every concurrent one of them loading it again."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.registered_scripts: dict[str, str] = {}  # sha1 -> source

    def register_script(self, script: str) -> Any:
        registered = super().register_script(script)  # type: ignore[misc]
        self.registered_scripts[registered.sha] = script
        return registered


class AutoPipelining(RemembersScripts):
    """Mix into a redis-py asyncio client (before it in the bases)."""

    _batch: _Batch
    _later = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch = _Batch()
        self._kept: list[Any] = []  # connections taken from the pool, idle between batches

    def execute_command(self, *args: Any, **options: Any) -> Any:
        future = self._batch.add(self, [(args, options)], single=True, later=self._later)
        if not self._later:
            return future
        future.add_done_callback(_log_failure)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        return _SharedPipeline(self, transaction, shard_hint)

    def lazily(self) -> AutoPipelining:
        """This client, for writes nobody waits for."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view._later = True
        return view

    async def drain(self) -> None:
        await self._batch.drain(self)

    async def aclose(self, *args: Any, **kwargs: Any) -> None:
        await self._batch.drain(self)
        kept, self._kept = self._kept, []
        for connection in kept:
            await self.connection_pool.release(connection)  # type: ignore[attr-defined]
        await super().aclose(*args, **kwargs)  # type: ignore[misc]

    async def _send(self, batch: list[_Pending]) -> None:
        commands = [command for pending in batch for command in pending.commands]
        try:
            try:
                answers = await self._direct(commands)
            except (RedisConnectionError, RedisTimeoutError, OSError):
                answers = await self._through_redis_py(commands)  # reconnects, retries
        except Exception as e:  # the whole write failed: every caller learns it
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(e)
            return
        at = 0
        for pending in batch:
            mine, at = answers[at : at + len(pending.commands)], at + len(pending.commands)
            if pending.future.done():
                continue
            if not pending.single:
                pending.future.set_result(mine)
            elif isinstance(mine[0], ResponseError):
                pending.future.set_exception(mine[0])
            else:
                pending.future.set_result(mine[0])

    async def _direct(self, commands: list[Command]) -> list[Any]:
        """Write the batch in one send on a kept connection and read its answers in order;
        a command's error is its answer. A connection cut short (an error, a cancellation)
        may still owe answers: it is dropped, never used again as it is."""
        pool = self.connection_pool  # type: ignore[attr-defined]
        connection = self._kept.pop() if self._kept else await pool.get_connection()
        done = False
        try:
            await connection.send_packed_command(connection.pack_commands([a for a, _ in commands]))
            answers: list[Any] = []
            for args, options in commands:
                try:
                    answers.append(await Redis.parse_response(self, connection, args[0], **options))  # type: ignore[arg-type]
                except ResponseError as e:
                    answers.append(e)
            done = True
            return answers
        finally:
            if done and len(self._kept) < KEPT_CONNECTIONS:
                self._kept.append(connection)
            else:
                if not done:
                    await connection.disconnect(nowait=True)
                await pool.release(connection)

    async def _through_redis_py(self, commands: list[Command]) -> list[Any]:
        if len(commands) == 1:
            args, options = commands[0]
            try:
                return [await super().execute_command(*args, **options)]  # type: ignore[misc]
            except ResponseError as e:
                return [e]
        pipe = Pipeline(self.connection_pool, self.response_callbacks, False, None)  # type: ignore[attr-defined]
        for args, options in commands:
            pipe.pipeline_execute_command(*args, **options)
        return await pipe.execute(raise_on_error=False)


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and (e := future.exception()) is not None:
        log.warning("a write nobody waited for failed: %s", type(e).__name__)


def later(client: Any) -> Any:
    """`client` for a write nobody waits for: queued to ride with the next round trip when
    the client shares them, sent at once (and awaited) otherwise."""
    return client.lazily() if isinstance(client, AutoPipelining) else client


class _SharedPipeline(Pipeline):
    """A non-transactional pipeline whose stack joins the shared queue; anything else (MULTI,
    WATCH, Script objects) runs on its own connection as redis-py does it, after the queue."""

    def __init__(self, client: AutoPipelining, transaction: bool, shard_hint: Any) -> None:
        super().__init__(client.connection_pool, client.response_callbacks, transaction, shard_hint)  # type: ignore[attr-defined]
        self._client = client

    async def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        if not self.watching:  # WATCH: what this process wrote before goes first
            await self._client.drain()
        return await super().immediate_execute_command(*args, **options)

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if self.is_transaction or self.explicit_transaction or self.watching or self.scripts:
            await self._client.drain()
            return await super().execute(raise_on_error)
        stack = list(self.command_stack)
        client = self._client
        try:
            if not stack:
                return []
            future = client._batch.add(client, stack, single=False, later=client._later)
            if client._later:  # nobody waits: nothing to answer
                future.add_done_callback(_log_failure)
                return []
            answers: list[Any] = await future
        finally:
            await self.reset()
        if raise_on_error:
            self.raise_first_error(stack, answers)
        return answers


class AutoPipelineRedis(AutoPipelining, Redis):
    pass
