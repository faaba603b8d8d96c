"""The thin runner: persist the state, then perform the effects `step` asked for.

For each event: load the state (as last seen), `step`, save it if it is still what was
stored (compare-and-set; else step again from what is); then perform each effect
(conversation/performing.py) and feed
its outcome back as a new event. The state is saved before the effects run (but work a crash
simply repeats: `REPEATABLE`), so a crash leaves a state whose next effects are safe to
repeat; the one effect that is not (the submit POST) is guarded by an intent recorded in
Redis before the POST. Messages and command answers are saved with the state in the
chat's outbox and performed at most once (conversation/outbox.py); whatever a dead
process left is resumed by any replica (conversation/recovery.py, docs/replicas.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from redis.exceptions import RedisError

import locales
from batchjob.client import BatchJobClient
from batchjob.input import Limits
from conversation import core, crash, outbox
from conversation.channel import (
    ANSWER,
    FIRST_ANSWER,
    SEND_GATE,
    SEND_PRIORITY,
    Channel,
    SendWithdrawn,
)
from conversation.events import (
    Effect,
    EffectFailed,
    Event,
    Precheck,
    Reply,
    Upload,
)
from conversation.identity import qualify
from conversation.intake import Intake
from conversation.leases import Leases, replica_id
from conversation.performing import Performing
from conversation.results_view import ResultsView
from conversation.settings import ConversationSettings
from conversation.state import ChatState
from conversation.store import Store, now_ms

log = logging.getLogger("conversation.runner")

# Effects whose step need not be saved before they run: a crash leaves the phase before, from
# which recovery does this work again (conversation/recovery.py). Not Inspect: a file whose
# reading kills the process is counted from the saved "inspecting" phase, and dropped.
REPEATABLE = (Upload, Precheck)
FOLLOW_UPS = ("awaiting_confirm", "awaiting_fix")  # phases in which the bot has answered an input
APPLIED_KEPT = 32  # event ids a chat remembers: redeliveries come within minutes


class Runner(Performing):
    def __init__(
        self,
        store: Store,
        client: BatchJobClient,
        channel: Channel,
        settings: ConversationSettings,
        limits: Limits | None = None,
        leases: Leases | None = None,
    ) -> None:
        self.store = store
        self.leases = leases or Leases(store.r, replica_id(), keys=store.k)
        self._active: dict[str, int] = {}
        self._ended: dict[str, asyncio.Event] = {}  # set when a chat's work here ends
        self._undone: dict[str, list[int]] = {}  # outbox entries performed, removed at the end
        self.client = client
        self.channel = channel
        self.settings = settings
        self.limits = limits or Limits.from_env()
        self.media = Path(settings.media_dir)
        self.media.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.results = ResultsView(client, channel, store, self.media, settings)
        from conversation.spending import Spending  # it calls back into this runner

        self.spending = Spending(self)
        self.intakes: dict[str, Intake] = {}  # by channel: one's waiting answers hold only its files
        # Told of each step once it is saved (the agents' API follows its submissions so).
        self.observers: list[Callable[[str, Event, ChatState, list[Effect]], Awaitable[None]]] = []

    def context(self) -> core.Context:
        return core.Context(
            now_ms=now_ms(),
            new_id=secrets.token_hex(8),
            allow_local_paths=bool(self.settings.local_path_roots),
            pending_ttl_ms=self.settings.pending_ttl_seconds * 1000,
            admins=frozenset(self.settings.admin_ids),
            modes=tuple(self.settings.modes),
        )

    def busy(self, chat_id: int | str) -> bool:
        """This process has work in flight for the chat now."""
        return qualify(chat_id) in self._active

    async def until_idle(self, chat_id: int | str) -> None:
        """Return once this process has no work in flight for the chat."""
        key = qualify(chat_id)
        while key in self._active:
            await self._ended.setdefault(key, asyncio.Event()).wait()

    @asynccontextmanager
    async def working(self, chat_id: int | str) -> AsyncIterator[None]:
        """This process has work in flight for the chat: listed in Redis (before the state
        that asks for it is saved), so that if the process dies another replica resumes it."""
        key = qualify(chat_id)
        self._active[key] = self._active.get(key, 0) + 1
        try:
            await self.leases.working_on(key)
            yield
        finally:
            await self._leave(key)

    @asynccontextmanager
    async def claimed(self, update_id: int | str, chat_id: str | None) -> AsyncIterator[str]:
        """Claim a delivered update (`Leases.claim_update`); yields the claim. An update of a
        chat also lists the chat as worked on here (`working`) in the same round trip, while
        the block runs: inside, `handle` is told `listed=True`."""
        if not chat_id:
            yield await self.leases.claim_update(update_id)
            return
        key = qualify(chat_id)
        self._active[key] = self._active.get(key, 0) + 1
        try:
            yield await self.leases.claim_listing(self.leases.k.update(update_id, chat_id), key)
        finally:
            await self._leave(key)

    async def _leave(self, key: str) -> None:
        self._active[key] -= 1
        if not self._active[key]:
            del self._active[key]
            if (ended := self._ended.pop(key, None)) is not None:
                ended.set()
            undone = self._undone.pop(key, None)  # performed entries: removed in the same trip
            try:
                await self.leases.finished_with(key, outbox=(self.store.k.chat(key, "out"), undone or []))
            except RedisError:
                log.warning("could not unlist chat %s (its listing lapses with this replica)", key)

    async def handle(
        self,
        chat_id: str,
        event: Event,
        client_lang: str | None = None,
        *,
        event_id: str | None = None,
        on_applied: Callable[[], Awaitable[None]] | None = None,
        default_lang: str | None = None,
        update_key: str | None = None,
        listed: bool = False,
    ) -> None:
        """Process one event and everything it leads to.

        `client_lang` is the user's language as the channel tells it (it applies until /lang
        fixes one); `default_lang`, for a channel that may not tell it, the language of a chat
        the bot has not written to yet.

        `event_id` names a delivered event (an update): one already applied to the chat's
        state (a redelivery after its handler died) is not stepped again. `on_applied` runs
        once the event's step is saved, with its effects in the outbox or its phase.
        `update_key`: the delivered update's lease in the chat's slot (`Keys.update`), marked
        done by then (with the step, in the same write). `listed`: the caller holds the
        chat as worked on here already (`claimed`).
        """
        SEND_PRIORITY.set(FIRST_ANSWER)  # this update's task: its first reply goes out first
        chat_id = qualify(chat_id)
        user = getattr(event, "user_id", "")
        if user and not self.settings.allows(user, chat_id):
            # Not on the lists: one answer with the ids to give the operator; nothing else
            # (no download, no state).
            lang = locales.normalize_language(client_lang or default_lang)
            await self._safe_send(chat_id, locales.t(lang, "access.denied", user_id=user, chat_id=chat_id))
            if update_key:
                await self.leases.mark_done(update_key)
            if on_applied is not None:
                await on_applied()
            return
        try:
            async with contextlib.nullcontext() if listed else self.working(chat_id):
                await self._handle(
                    chat_id, event, client_lang, event_id, on_applied, default_lang, update_key
                )
        except RedisError:
            log.warning("storage unavailable for chat %s", chat_id)
            lang = locales.normalize_language(client_lang)
            await self._safe_send(chat_id, locales.t(lang, "error.storage"))

    async def _handle(
        self,
        chat_id: str,
        event: Event,
        client_lang: str | None,
        event_id: str | None,
        on_applied: Callable[[], Awaitable[None]] | None,
        default_lang: str | None = None,
        update_key: str | None = None,
    ) -> None:
        queue: list[Event] = [event]
        first = True
        # Steps taken since the last save whose effects are only work that a crash repeats
        # from the saved phase (an upload, a precheck): saved with the next step that
        # needs saving, and taken again (same clock, same ids) if another change came first.
        unsaved: list[tuple[Event, core.Context]] = []
        # Outbox entries performed and not removed yet: removed by the next save, or at the end.
        performed: list[int] = []
        while queue:
            ev = queue.pop(0)
            ctx = self.context()
            todo: list[tuple[Effect, int | None]] = []
            effects: list[Effect] = []
            stepped: ChatState | None = None  # None: the event was applied before
            deferred = False

            def apply(
                state: ChatState, ev: Event = ev, ctx: core.Context = ctx, first: bool = first
            ) -> tuple[ChatState, dict[int, str]] | None:
                nonlocal todo, effects, stepped, deferred
                crash.point(f"handle.after_load:{type(ev).__name__}")
                todo, effects, stepped, deferred = [], [], None, False
                if first and event_id and event_id in state.applied:
                    return None  # a redelivery of an event already applied
                if first and state.phase in FOLLOW_UPS:
                    # Answering what the bot asked about an input it already answered: this
                    # chat has heard back once; others' first answers go before this one.
                    SEND_PRIORITY.set(ANSWER)
                state = self._replay(state, unsaved, client_lang, default_lang)[0]
                new, effects = self._step(state, ev, ctx, client_lang, default_lang)
                crash.point(f"handle.after_step:{type(ev).__name__}")
                if first and event_id:
                    new.applied = [*new.applied[-(APPLIED_KEPT - 1) :], event_id]
                entries: dict[int, str] = {}
                for effect in effects:
                    seq = None
                    if outbox.durable(effect):
                        new.out_seq += 1
                        seq = new.out_seq
                        entries[seq] = outbox.encode(effect)
                    todo.append((effect, seq))
                stepped = new
                if not first and effects and all(isinstance(e, REPEATABLE) for e in effects):
                    deferred = True
                    return None
                return new, entries

            new = await self.store.change(
                chat_id, apply, done=update_key if first else None, performed=performed
            )
            if first and update_key and stepped is None:  # nothing saved: marked on its own
                await self.leases.mark_done(update_key)
            if deferred:
                unsaved.append((ev, ctx))
            elif stepped is not None:
                unsaved.clear()
                crash.point(f"handle.after_save:{type(ev).__name__}")
            new = stepped or new
            if first and on_applied is not None:
                await on_applied()
            first = False
            for observe in self.observers:
                await observe(chat_id, ev, new, effects)
            for effect, seq in todo:
                crash.point(f"effect.before:{type(effect).__name__}")
                try:
                    follow = await self.perform_kept(chat_id, new, effect, seq, performed)
                except (RedisError, asyncio.CancelledError):
                    raise
                except Exception:
                    log.exception("effect %s failed in chat %s", type(effect).__name__, chat_id)
                    queue.append(EffectFailed(type(effect).__name__))
                    break
                if follow is not None:
                    queue.append(follow)
        if unsaved:  # the work ended without a step that saves: keep where it got to
            langs = (client_lang, default_lang)
            await self.store.change(
                chat_id, lambda state: self._replay(state, unsaved, *langs), performed=performed
            )
        if performed:
            if self._active.get(chat_id) == 1:  # the chat's last work here: removed as it ends
                self._undone.setdefault(chat_id, []).extend(performed)
            else:
                await self.store.done(chat_id, *performed)

    def _replay(
        self,
        state: ChatState,
        steps: list[tuple[Event, core.Context]],
        client_lang: str | None,
        default_lang: str | None,
    ) -> tuple[ChatState, dict[int, str]]:
        for ev, ctx in steps:
            state = self._step(state, ev, ctx, client_lang, default_lang)[0]
        return state, {}

    def _step(
        self,
        state: ChatState,
        ev: Event,
        ctx: core.Context,
        client_lang: str | None,
        default_lang: str | None,
    ) -> tuple[ChatState, list[Effect]]:
        if not state.lang_fixed and client_lang:
            state.lang = locales.normalize_language(client_lang)
        elif not state.lang_fixed and default_lang and state.out_seq == 0:
            state.lang = locales.normalize_language(default_lang)
        # Each state stepped here was just read from the store (or stepped from one) and
        # is used only through what this returns: stepped in place.
        return core.advance(state, ev, ctx)

    async def perform_kept(
        self,
        chat_id: str,
        state: ChatState,
        effect: Effect,
        seq: int | None,
        performed: list[int] | None = None,
    ) -> Event | None:
        """Perform an effect kept in the outbox as entry `seq` (None: not kept). A message is
        begun when its request leaves (the channel passes the send gate, after any flood
        wait), any other kept effect just before it is performed; done once it returns (its
        entry removed at once, or added to `performed` for the caller to remove with its
        next write). Begun by someone else: skipped."""
        if seq is None:
            return await self.perform(chat_id, state, effect)

        async def begin() -> bool:
            return await self.store.begin(chat_id, seq)

        if not isinstance(effect, Reply) and not await begin():
            return None
        token = SEND_GATE.set(begin if isinstance(effect, Reply) else None)
        try:
            follow = await self.perform(chat_id, state, effect)
        except SendWithdrawn:
            return None
        except Exception:
            await self.store.done(chat_id, seq)
            raise
        finally:
            SEND_GATE.reset(token)
        # Cut short (cancelled, killed): a begun entry stays begun, its outcome unknown.
        if performed is not None:
            performed.append(seq)
        else:
            await self.store.done(chat_id, seq)
        return follow
