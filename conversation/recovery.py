"""Continuous recovery: every replica finishes the work of replicas that died.

A chat's work in flight is fully described in Redis: its phase (downloading, inspecting,
uploading, prechecking, submitting, reconciling, looking up a record count), its outbox
(messages and answers not yet sent), and its active jobs (each must have a watch record).
`resume_chat` performs exactly that from the state, on any replica: a step that needs the
input file and does not find it on this host gets the file again from its source.

Every `every_s` each replica beats its heartbeat and looks for dead replicas (no heartbeat
for the lease). One surviving replica takes a lease on each dead one and resumes the chats
it had listed; those a live replica is working on now are left to it (it is ahead of the
state we would resume) and resumed once it is done with them, as its work may not have
carried the dead one's on. At start, the same pass also resumes chats that no replica lists:
work left by a release without replica lists, or by this replica's previous life when it
keeps its id (BOT_REPLICA_ID).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError

from conversation import flow_ops, outbox, resolving
from conversation.cancel import check_cancelled
from conversation.events import (
    Effect,
    InspectResumed,
    LookupRows,
    Precheck,
    Reconcile,
    Reply,
    Upload,
    Watch,
)
from conversation.identity import qualify
from conversation.runner import Runner
from conversation.state import ChatState
from conversation.store import BEGUN

log = logging.getLogger("conversation.recovery")

IN_FLIGHT = ("resolving", "inspecting", "uploading", "prechecking", "submitting", "reconciling")


def phase_effects(state: ChatState) -> list[Effect]:
    """What the chat's phase says is in flight, as the effects that carry it on."""
    p = state.pending
    if p is None:
        return []
    match state.phase:
        case "resolving":
            again = resolving.source_effect(p)
            return [again] if again is not None else []
        case "uploading" if p.converted or p.path:
            return [Upload(p.converted or p.path or "", p.filename, p.mode)]
        case "prechecking" if p.row_count:
            return [Precheck(p.row_count, p.model, p.mode)]
        case "submitting" if p.intent_id and p.file_id and p.row_count:
            # A recorded intent is never POSTed twice: a SUBMITTING one is reconciled instead.
            return [flow_ops.submit_effect(p)]
        case "reconciling" if p.file_id:
            return [Reconcile(p.intent_id or "", p.file_id)]
        case "awaiting_count" if p.file_id and not p.count_asked:
            return [LookupRows(p.file_id)]
    return []


def needs_work(state: ChatState) -> bool:
    return (state.phase in IN_FLIGHT and state.pending is not None) or bool(phase_effects(state))


class Recovery:
    def __init__(self, runner: Runner, every_s: float, concurrency: int = 32) -> None:
        self.runner = runner
        self.store = runner.store
        self.leases = runner.leases
        self.every_s = every_s
        self.resumed = 0  # chats resumed by this replica (metrics)
        self._sem = asyncio.Semaphore(concurrency)
        self._later: dict[str, asyncio.Task[None]] = {}  # resumes waiting for work here to end
        # Chats left to a live replica that worked on them, to resume once it is done: chat ->
        # the dead replica that listed it ("" when found at start, listed by no dead one).
        self._deferred: dict[str, str] = {}

    async def resume_chat(self, chat_id: int | str) -> bool:
        """Carry on what the chat has in flight. True when there was something to do."""
        cid = _chat(chat_id)
        async with self.runner.working(cid):
            entries = await self.store.outbox(cid)
            state = await self.store.load(cid)
            did = False
            for seq, raw in entries:
                did = True
                if raw.startswith(BEGUN):
                    await self._unknown(cid, state, outbox.decode(raw[len(BEGUN) :]))
                    await self.store.done(cid, seq)
                    continue
                effect = outbox.decode(raw)
                if effect is None:
                    await self.store.done(cid, seq)
                    continue
                follow = await self.runner.perform_kept(cid, state, effect, seq)
                if follow is not None:
                    await self.runner.handle(cid, follow)
            if state.phase == "inspecting" and state.pending is not None:
                # Counted: a file whose reading killed us twice is dropped, not read for ever.
                await self.runner.handle(cid, InspectResumed())
                did = True
            effects = phase_effects(state)
            for job_id in state.jobs:
                if not await self.store.job(job_id):
                    effects.append(Watch(job_id, None, None))
            for effect in effects:
                did = True
                follow = await self.runner.perform(cid, state, effect)
                if follow is not None:
                    await self.runner.handle(cid, follow)
        if did:
            self.resumed += 1
        return did

    async def _unknown(self, chat_id: int | str, state: ChatState, effect: Effect | None) -> None:
        """A message whose request had left when its sender died: it may have arrived, so it
        is not sent again. If it asked the user something the chat still waits for, the
        user is told a message may be missing and how to see it again (/again)."""
        asks = isinstance(effect, Reply) and bool(effect.buttons)
        if asks and state.phase.startswith("awaiting_"):
            await self.runner.perform(chat_id, state, Reply.of("flow.maybe_lost"))

    async def _listed_by_live(self) -> set[str]:
        listed: set[str] = set()
        for replica in await self.leases.live():
            if replica != self.leases.replica:
                listed.update(await self.leases.chats_of(replica))
        return listed

    async def startup(self) -> int:
        """At start: this replica's own earlier work (same id), then chats no replica lists."""
        touched = 0
        for chat in await self.leases.chats_of(self.leases.replica):
            touched += await self._resume_unless_busy(chat)
        candidates = []
        async for chat in self.store.chat_ids():
            state = await self.store.load(chat)
            if needs_work(state) or state.jobs or await self.store.outbox(chat):
                candidates.append(chat)
        # Read after the scan: a chat saved in flight was listed before it was saved.
        live = await self._listed_by_live()
        listed = set(live)
        for replica in await self.leases.dead():
            listed.update(await self.leases.chats_of(replica))  # the dead ones' pass takes those
        for chat in candidates:
            if chat not in listed:
                touched += await self._resume_unless_busy(chat)
            elif chat in live and chat not in self._deferred:
                self._deferred[chat] = ""  # only a live one lists it: resumed once it is done
        return touched

    async def _resume_unless_busy(self, chat: str) -> int:
        """Resume the chat now, or once this process's work on it ends: its first events can
        come in before this pass, and a flow in flight here is ahead of the stored state."""
        if not self.runner.busy(chat):
            return int(await self.resume_chat(chat))
        if chat not in self._later:
            task = asyncio.create_task(self._resume_when_idle(chat), name=f"resume {chat}")
            self._later[chat] = task
            task.add_done_callback(lambda _: self._later.pop(chat, None))
        return 0

    async def _resume_when_idle(self, chat: str) -> None:
        await self.runner.until_idle(chat)
        try:
            await self.resume_chat(chat)
        except Exception:
            check_cancelled()
            log.exception("resuming chat %s failed", chat)

    async def reap_once(self) -> int:
        """Resume the chats of every dead replica this replica gets the lease on. A chat a
        live replica (this one included) works on now is left to it, and resumed once it is
        done there: that work may carry the dead one's on, or not (another update of the
        chat)."""
        touched = 0
        for dead in await self.leases.dead():
            if not await self.leases.reap(dead):
                continue
            log.warning("replica %s stopped beating; resuming its chats", dead)
            busy = await self._listed_by_live()
            chats = await self.leases.chats_of(dead)
            # Still listed as the dead one's until resumed: if this replica dies too, the
            # next reaper finds them.
            now = [c for c in chats if not self._held(c, busy)]
            for c in chats:
                if c in now:
                    self._deferred.pop(c, None)
                else:
                    self._deferred[c] = dead
            # All at once (bounded): a dead replica's chats wait for no one but themselves.
            results = await asyncio.gather(*(self._resume_guarded(dead, c) for c in now))
            touched += sum(results)
            await self.leases.bury(dead)  # once it lists nothing
        if self._deferred:
            touched += await self._resume_deferred()
        return touched

    def _held(self, chat: str, busy: set[str]) -> bool:
        """Worked on now: by a live replica that lists it (`busy`), or by this process (its
        flow there is ahead of the stored state, as another replica's would be)."""
        return chat in busy or self.runner.busy(chat)

    async def _resume_deferred(self) -> int:
        busy = await self._listed_by_live()
        dead = set(await self.leases.dead())
        ready = {c: d for c, d in self._deferred.items() if not self._held(c, busy) or (d and d not in dead)}
        for chat in ready:
            del self._deferred[chat]
        # A replica that beats again was only slow: its chats are its own again.
        ready = {c: d for c, d in ready.items() if not d or d in dead}
        results = await asyncio.gather(*(self._resume_guarded(d, c) for c, d in ready.items()))
        for d in {d for d in ready.values() if d}:
            await self.leases.bury(d)
        return sum(results)

    async def _resume_guarded(self, dead: str, chat: str) -> bool:
        """Resume `chat`, then take it off `dead`'s list ("": a chat no dead replica lists)."""
        async with self._sem:
            try:
                did = await self.resume_chat(chat)
            except RedisError:
                raise
            except Exception:
                log.exception("resuming chat %s failed", chat)
                did = False
            if dead:
                await self.leases.handed_over(dead, chat)
            return did

    async def run(self, started: asyncio.Event | None = None) -> None:
        # The heartbeat has a task of its own: resuming many chats must not make this
        # replica look dead to the others.
        await self.leases.beat()
        beating = asyncio.create_task(self._beat(), name="heartbeat")
        try:
            try:
                await self.startup()
            except Exception:
                log.exception("recovery at start failed")
            if started is not None:
                started.set()
            while True:
                await asyncio.sleep(self.every_s)
                try:
                    await self.reap_once()
                except RedisError:
                    check_cancelled()
                    log.warning("storage unavailable; recovery waits")
                except Exception:
                    check_cancelled()
                    log.exception("recovery pass failed")
        finally:
            beating.cancel()
            for task in list(self._later.values()):
                task.cancel()

    async def _beat(self) -> None:
        while True:
            try:
                await self.leases.beat()
            except RedisError:
                check_cancelled()
                log.warning("storage unavailable; heartbeat waits")
            await asyncio.sleep(self.every_s)

    async def retire(self) -> None:
        """Stopping: let another replica take over what is left at once (no lease wait)."""
        with contextlib.suppress(RedisError):
            await self.leases.retire()


def _chat(chat_id: int | str) -> str:
    return qualify(chat_id)  # listed before ids named their channel: a Telegram number
