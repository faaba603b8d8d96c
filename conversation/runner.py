"""The thin runner: persist the state, then perform the effects `step` asked for.

For each event: load the state (as last seen), `step`, save it if it is still what was
stored (compare-and-set; else step again from what is); then perform each effect and feed
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
import csv
import io
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from redis.exceptions import RedisError

import locales
from batchjob import errors as bj
from batchjob import templates
from batchjob.client import BatchJobClient, sanitize_filename
from batchjob.input import Limits, isolation
from conversation import core, crash, outbox, rerun, resolve, submission, texts, views
from conversation.channel import (
    ANSWER,
    FIRST_ANSWER,
    SEND_GATE,
    SEND_PRIORITY,
    Buttons,
    Channel,
    DownloadError,
    SendWithdrawn,
)
from conversation.events import (
    Adopt,
    Adopted,
    CancelJob,
    Cleanup,
    Details,
    Download,
    Effect,
    EffectFailed,
    Event,
    FetchUrl,
    FileMissing,
    FileReady,
    Inspect,
    Inspected,
    JobStatus,
    ListJobs,
    LookupRows,
    OpenPath,
    Precheck,
    Prechecked,
    Reconcile,
    Reply,
    RerunFailed,
    ResolveFailed,
    SendTemplates,
    ShowFailed,
    ShowResults,
    Submit,
    Upload,
    Uploaded,
    Watch,
    Whoami,
)
from conversation.identity import qualify
from conversation.leases import Leases, replica_id
from conversation.results_view import ResultsView
from conversation.settings import ConversationSettings
from conversation.spending_events import AskApproval, BudgetCommand, Decide, ShortfallNotice, ShowAudit
from conversation.state import ChatState
from conversation.store import Store, now_ms
from conversation.submission import service_failure
from conversation.texts import job_buttons

log = logging.getLogger("conversation.runner")

# Effects whose step need not be saved before they run: a crash leaves the phase before, from
# which recovery does this work again (conversation/recovery.py). Not Inspect: a file whose
# reading kills the process is counted from the saved "inspecting" phase, and dropped.
REPEATABLE = (Upload, Precheck)
APPLIED_KEPT = 32  # event ids a chat remembers: redeliveries come within minutes


class Runner:
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
        return core.step(state, ev, ctx)

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

    async def _safe_send(self, chat_id: str, text: str, buttons: Buttons | None = None) -> int | None:
        try:
            sent = await self.channel.send_text(chat_id, text, buttons)
            if SEND_PRIORITY.get() == FIRST_ANSWER:
                SEND_PRIORITY.set(ANSWER)  # answered: the rest can wait behind others' first answers
            return sent
        except SendWithdrawn:
            raise  # another replica took this message over and sends it
        except Exception:  # a failing channel must not take the flow down
            log.exception("send failed for chat %s", chat_id)
            return None

    def render(self, lang: str, reply: Reply) -> tuple[str, Buttons | None]:
        text = "\n".join(locales.t(lang, key, **params) for key, params in reply.parts)
        buttons = [[(locales.t(lang, b.label, **b.params), b.data) for b in row] for row in reply.buttons]
        return text, (buttons or None)

    def _tmp(self, suffix: str) -> Path:
        return self.media / f"{secrets.token_hex(12)}{suffix}"

    async def perform(self, chat_id: str, state: ChatState, effect: Effect) -> Event | None:
        lang = state.lang
        match effect:
            case Reply():
                text, buttons = self.render(lang, effect)
                await self._safe_send(chat_id, text, buttons)
                if effect.document:
                    await self._send_errors(chat_id, lang, effect.document)
            case Download(ref=ref, filename=filename):
                dest = self._tmp(Path(sanitize_filename(filename)).suffix[:10])
                try:
                    path = await self.channel.download(ref, dest, self.settings.max_download_bytes)
                except DownloadError as e:
                    dest.unlink(missing_ok=True)
                    return ResolveFailed(e.reason)
                return FileReady(str(path), filename)
            case FetchUrl(url=url):
                dest = self._tmp(".download")
                try:
                    path, name = await resolve.fetch_url(
                        url,
                        dest,
                        max_bytes=self.settings.max_download_bytes,
                        timeout_s=self.settings.url_timeout_seconds,
                        allow_loopback=self.settings.unsafe_allow_loopback_urls,
                    )
                except resolve.ResolveError as e:
                    return ResolveFailed(e.reason)
                return FileReady(str(path), name)
            case OpenPath(path=raw):
                dest = self._tmp(".local")
                try:
                    path, name = await asyncio.to_thread(
                        resolve.open_path,
                        raw,
                        list(self.settings.local_path_roots),
                        dest,
                        self.settings.max_download_bytes,
                    )
                except resolve.ResolveError as e:
                    dest.unlink(missing_ok=True)
                    return ResolveFailed(e.reason)
                return FileReady(str(path), name)
            case Inspect(path=path, filename=filename):
                if not Path(path).is_file():
                    return FileMissing("inspect")
                out = self._tmp(".jsonl")
                # Read in the parse worker: a hostile file can end the worker's child, not us.
                worker = isolation.worker()
                reading = worker.submit("convert", path, out, skip_invalid=True, limits=self.limits)
                crash.point("inspect.reading")
                report = await isolation.wait_async(reading, path, self.limits)
                return Inspected(report.to_dict(lang), str(out) if out.exists() else None)
            case Upload(path=path, filename=filename, mode=mode):
                if not path or not Path(path).is_file():
                    return FileMissing("upload")
                name = Path(sanitize_filename(filename)).stem + ".jsonl"
                try:
                    up = await self.client.upload(path, filename=name, mode=mode)
                except bj.BatchJobError as e:
                    return service_failure("upload", e)
                if up.row_count is not None:
                    await self.store.remember_file(up.file_id, up.row_count)
                return Uploaded(up.file_id, up.row_count)
            case Precheck(record_count=n, model=model, mode=mode):
                try:
                    est = await self.client.precheck(n, model, mode)
                except bj.BatchJobError as e:
                    return service_failure("precheck", e)
                if est.sufficient:
                    await self.spending.balance_sufficient()
                return Prechecked(
                    est.model_dump(
                        include={
                            "estimated_cost",
                            "currency",
                            "balance",
                            "sufficient",
                            "required",
                            "recharge_url",
                            "unit_price",
                            "record_count",
                        }
                    )
                )
            case Submit():
                refused = await self.spending.before_submit(chat_id, effect)
                if refused is not None:
                    return refused
                submitted = await submission.submit(self.store, self.client, chat_id, effect)
                await self.spending.after_submit(chat_id, effect, submitted)
                return submitted
            case Reconcile(intent_id=intent_id, file_id=file_id):
                found = await submission.reconcile(self.store, self.client, intent_id, file_id)
                await self.spending.after_reconcile(intent_id, found)
                return found
            case AskApproval() | Decide() | BudgetCommand() | ShowAudit() | ShortfallNotice():
                return await self.spending.perform(chat_id, state, effect)
            case LookupRows(file_id=file_id):
                return await submission.rows_of(self.store, self.client, file_id)
            case Watch(job_id=job_id, intent_id=intent_id, record_count=count, announce=announce):
                msg = None
                if announce is not None:
                    # Sent here, as an answer to the confirmation; the watcher then edits it.
                    text, _ = self.render(lang, announce)
                    msg = await self._safe_send(chat_id, text, job_buttons(lang, job_id))
                    crash.point("watch.after_announce")
                await self.store.add_job(
                    job_id,
                    chat_id,
                    intent=intent_id or "",
                    reservation=self.spending.budgets.taken(intent_id) if intent_id else "",
                    count=count,
                    lang=lang,
                    msg=msg,
                    rows=effect.rows,
                    cost=effect.cost,
                    currency=effect.currency,
                    source=effect.source,
                )
                crash.point("watch.after_add")
            case CancelJob(job_id=job_id, reason=reason):
                try:
                    job = await self.client.cancel(job_id, reason)
                except bj.BatchJobError as e:
                    await self._safe_send(chat_id, views.failure_text(lang, service_failure("cancel", e)))
                    return None
                await self._safe_send(
                    chat_id, locales.t(lang, "cmd.cancelled", job_id=job_id, status=texts.status(lang, job))
                )
            case Whoami(user_id=user_id, admin=admin):
                answer = locales.t(lang, "word.yes" if admin else "word.no")
                await self._safe_send(
                    chat_id,
                    locales.t(lang, "cmd.whoami", user_id=qualify(user_id), chat_id=chat_id, admin=answer),
                )
            case Adopt(job_id=job_id):
                try:
                    job = await self.client.get_job(job_id)
                except bj.NotFound:
                    return Adopted(job_id, False)
                except bj.BatchJobError as e:
                    return service_failure("status", e)
                return Adopted(job.job_id, True, job.total)
            case JobStatus(job_id=job_id):
                await self._safe_send(chat_id, *await views.status(self.client, lang, state, job_id))
            case ListJobs():
                listed = await views.job_list(self.client, self.store, lang, state, effect)
                await self._safe_send(chat_id, *listed)
            case Details(job_id=job_id):
                answer = await views.details(self.client, self.store, lang, state, job_id)
                await self._safe_send(chat_id, *answer)
            case ShowResults(job_id=job_id, page=page):
                await self.results.show(chat_id, lang, job_id, page)
            case ShowFailed(job_id=job_id):
                await self.results.failed(chat_id, lang, job_id)
            case RerunFailed(job_id=job_id):
                return await rerun.failed_rows(self, job_id, self._tmp(".rerun"))
            case SendTemplates():
                await self._safe_send(chat_id, locales.t(lang, "cmd.templates"))
                for kind, name in (
                    ("csv", "prompts.csv"),
                    ("xlsx", "prompts.xlsx"),
                    ("jsonl", "prompts.jsonl"),
                    ("guide", f"guide-{lang}.md"),
                ):
                    await self.channel.send_document(chat_id, name, templates.render(kind, lang))
            case Cleanup(paths=paths):
                for p in paths:
                    self._remove(p)
        return None

    def sweep_media(self, now: float | None = None) -> int:
        """Remove received files whose flow ended without cleaning up (crash, expiry)."""
        import time

        limit = (now or time.time()) - self.settings.pending_ttl_seconds - 600
        removed = 0
        for p in self.media.iterdir():
            try:
                if p.is_file() and p.stat().st_mtime < limit:
                    p.unlink()
                    removed += 1
            except OSError:
                continue
        return removed

    def _remove(self, raw: str) -> None:
        p = Path(raw)
        try:
            if p.resolve().parent == self.media.resolve():
                p.unlink(missing_ok=True)
        except OSError:
            log.warning("could not remove %s", p.name)

    async def _send_errors(self, chat_id: str, lang: str, rows: tuple[tuple[str, str, str], ...]) -> None:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["row", "column", "problem"])
        for row in rows:
            # Cells as text: a leading = + - @ would be a formula in a spreadsheet.
            w.writerow(["'" + c if c[:1] in ("=", "+", "-", "@") else c for c in row])
        await self.channel.send_document(
            chat_id, "row-errors.csv", "\ufeff".encode() + buf.getvalue().encode()
        )
