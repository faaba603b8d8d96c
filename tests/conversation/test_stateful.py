"""A stateful property test over the whole conversation: core, runner, store, watcher.

Hypothesis drives user actions (files, confirmations, buttons, duplicates), upstream status
changes, lost submit replies, watcher crashes and lease expiry against an in-memory
BatchJob service. Invariants: at most one POST per submit intent; every active job is
scheduled or terminal; the watcher never polls a finished job; each terminal summary is
sent once.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from pathlib import Path

import fakeredis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from batchjob import errors as bj
from batchjob.models import Estimate, Job, JobPage, UploadResult
from conversation import crash, keys
from conversation.app import ConversationApp
from conversation.events import ButtonPressed, CommandReceived, FileReceived, TextReceived
from conversation.settings import ConversationSettings
from tests.conversation.conftest import RecordingChannel

ADMIN = 7
CHATS = (1, 2)


class FakeService:
    """The BatchJob contract in memory; statuses move only when the test says so."""

    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.files: dict[str, int] = {}
        self.jobs: dict[str, dict] = {}
        self.submits = 0
        self.lose_next_reply = False
        self.watching = False  # get_job calls made by the watcher (not a user's refresh)
        self.polls_after_finish: list[str] = []
        self.finished: set[str] = set()

    async def upload(self, path, filename=None, mode="fast"):
        rows = len(Path(path).read_bytes().splitlines())
        fid = f"file_{next(self.ids):04d}"
        self.files[fid] = rows
        return UploadResult(file_id=fid, row_count=rows)

    async def precheck(self, count, model="m", mode="fast"):
        return Estimate(record_count=count, estimated_cost=count * 0.01, balance=100.0, sufficient=True)

    async def submit(self, file_id, model="m", mode="fast"):
        self.submits += 1
        jid = f"job_{next(self.ids):04d}"
        self.jobs[jid] = {
            "job_id": jid,
            "status": "queued",
            "file_id": file_id,
            "total": self.files[file_id],
            "completed": 0,
            "failed": 0,
        }
        if self.lose_next_reply:
            self.lose_next_reply = False
            raise bj.OutcomeUnknown("sent, no answer")
        return Job.model_validate(self.jobs[jid])

    async def get_job(self, job_id):
        if self.watching and job_id in self.finished:
            self.polls_after_finish.append(job_id)
        if job_id not in self.jobs:
            raise bj.NotFound("job not found")
        return Job.model_validate(self.jobs[job_id])

    async def list_jobs(self, page=1, page_size=20, status=None):
        items = list(self.jobs.values())[(page - 1) * page_size : page * page_size]
        return JobPage(items=[Job.model_validate(j) for j in items], page=page, total=len(self.jobs))

    async def cancel(self, job_id, reason=None):
        job = self.jobs.get(job_id)
        if job is None:
            raise bj.NotFound("job not found")
        if job["status"] in ("completed", "failed", "partially_failed", "cancelled"):
            raise bj.Conflict("not cancellable")
        job["status"] = "cancelled"
        return Job.model_validate(job)

    async def fetch_summary(self, url):
        return {"records": []}

    async def aclose(self):
        return None


class Killed(BaseException):
    """The replica's process ended here."""


class ConversationMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = Path(self.run(asyncio.to_thread(__import__("tempfile").mkdtemp)))
        self.redis = fakeredis.FakeAsyncRedis()
        self.service = FakeService()
        self.channel = RecordingChannel()
        self.settings = ConversationSettings(
            media_dir=self.tmp / "media",
            admin_ids=frozenset({ADMIN}),
            poll_min_seconds=0.001,
            poll_max_seconds=0.002,
            progress_edit_seconds=0,
        )
        self.app = self._new_app()
        self.last_event: dict[int, object] = {}
        src = self.tmp / "p.csv"
        src.write_text("prompt\nfox\nowl\n")
        self.src = src

    def _new_app(self) -> ConversationApp:
        app = ConversationApp(self.redis, self.service, self.channel, self.settings)  # type: ignore[arg-type]
        app.watcher.lease_ms = 50
        return app

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def handle(self, chat: int, event) -> None:
        self.last_event[chat] = event
        self.run(self.app.runner.handle(chat, event, client_lang="en"))

    # --- user actions ----------------------------------------------------------------------

    @rule(chat=st.sampled_from(CHATS), caption=st.sampled_from([None, "fast", "estimate"]))
    def drop_file(self, chat, caption):
        self.handle(chat, FileReceived(str(self.src), "p.csv", 20, caption))

    @rule(
        chat=st.sampled_from(CHATS),
        text=st.sampled_from(["ok", "fast", "vendor/model-x standard", "hello", "file_0001", "2"]),
    )
    def send_text(self, chat, text):
        self.handle(chat, TextReceived(text))

    @rule(chat=st.sampled_from(CHATS), pick=st.integers(0, 10), admin=st.booleans())
    def press_button(self, chat, pick, admin):
        buttons = self.channel.last_buttons(chat)
        if buttons:
            self.handle(chat, ButtonPressed(buttons[pick % len(buttons)][1], ADMIN if admin else 5))

    @rule(chat=st.sampled_from(CHATS))
    def duplicate_update(self, chat):
        if chat in self.last_event:
            self.handle(chat, self.last_event[chat])

    @rule(chat=st.sampled_from(CHATS), admin=st.booleans())
    def cancel_a_job(self, chat, admin):
        jobs = list(self.service.jobs)
        if jobs:
            self.handle(chat, CommandReceived("cancel", (jobs[-1],), ADMIN if admin else 5, admin))

    # --- the world -------------------------------------------------------------------------

    @rule(status=st.sampled_from(["running", "completed", "failed", "partially_failed", "expired", "weird"]))
    def upstream_changes(self, status):
        for job in self.service.jobs.values():
            if job["status"] not in ("completed", "failed", "partially_failed", "cancelled", "expired"):
                job["status"] = status
                job["completed"] = job["total"] if status == "completed" else 1
                break

    @rule(
        chat=st.sampled_from(CHATS),
        point=st.sampled_from(
            [
                "effect.before:Download",
                "effect.before:Upload",
                "effect.before:Precheck",
                "effect.before:Reply",
                "effect.before:Submit",
                "submit.after_post",
                "effect.before:Watch",
                "handle.after_save:Prechecked",
            ]
        ),
    )
    def replica_killed_mid_step(self, chat, point):
        """This replica dies at `point` (nothing of it runs after); another one resumes the
        chat from Redis. The invariants below must hold all the same."""
        real = crash.point

        def die(name: str) -> None:
            if name == point:
                raise Killed(name)

        crash.point = die
        try:
            self.handle(chat, FileReceived(str(self.src), "p.csv", 20, "fast"))
        except Killed:
            pass
        finally:
            crash.point = real
        dead = self.app
        self.run(dead.leases.working_on(chat))  # what a kill leaves listed
        self.run(self.redis.zadd(dead.keys.replicas, {dead.leases.replica: 0}))
        self.app = self._new_app()
        self.run(self.app.recovery.reap_once())

    @rule()
    def lose_next_submit_reply(self):
        self.service.lose_next_reply = True

    @rule()
    def watcher_round(self):
        self.service.watching = True
        try:
            self.run(self.app.watcher.run_once())
            self.run(self.app.watcher.settled())
        finally:
            self.service.watching = False
        self._record_finished()

    @rule()
    def watcher_crash_and_lease_expiry(self):
        self.app = self._new_app()  # the old watcher is gone mid-lease; a new one starts
        self.run(self.app.store.resume())

        self.run(self._all_due_now())

    async def _all_due_now(self) -> int:
        k = keys.current()
        n = 0
        for shard in range(k.shards):
            members = await self.redis.zrange(k.due(shard), 0, -1)
            if members:
                await self.redis.zadd(k.due(shard), {m: 0 for m in members})
            n += len(members)
        return n

    def _record_finished(self) -> None:
        async def finished():
            for jid in self.service.jobs:
                if await self.redis.hget(keys.current().job(jid), "done") == b"1":
                    self.service.finished.add(jid)

        self.run(finished())

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def at_most_one_post_per_intent(self):
        # Every POST follows the recording of a fresh intent, and an intent is recorded once.
        intents = self.run(self._count_intents())
        assert self.service.submits <= intents, (self.service.submits, intents)

    async def _count_intents(self) -> int:
        return len([k async for k in self.redis.scan_iter(match=keys.current().intent("*"))])

    @invariant()
    def finished_jobs_are_not_polled(self):
        assert self.service.polls_after_finish == []

    @invariant()
    def each_summary_at_most_once(self):
        for jid in self.service.jobs:
            assert sum(bool(re.match(rf"Job {jid} finished", t)) for t in self.channel.texts()) <= 1

    @invariant()
    def active_jobs_are_scheduled_or_terminal(self):
        async def check():
            for chat in CHATS:
                state = await self.app.store.load(chat)
                for jid in state.jobs:
                    k = keys.current()
                    scheduled = await self.redis.zscore(k.due(k.shard(jid)), jid) is not None
                    done = await self.redis.hget(keys.current().job(jid), "done") == b"1"
                    assert scheduled or done, (jid, self.service.jobs.get(jid))

        self.run(check())

    def teardown(self):
        # Everything ends: every job becomes terminal and the watcher drains; then each
        # terminal job has exactly one summary.
        for job in self.service.jobs.values():
            if job["status"] not in ("completed", "failed", "partially_failed", "cancelled", "expired"):
                job["status"] = "completed"
        for _ in range(50):
            self.run(self._all_due_now())
            polled = self.run(self.app.watcher.run_once())
            self.run(self.app.watcher.settled())
            if not polled and not self.run(self.app.store.scheduled()):
                break
        watched = set()
        for chat in CHATS:
            watched |= set(self.run(self.app.store.load(chat)).recent)
        for jid in watched:
            assert sum(bool(re.match(rf"Job {jid} finished", t)) for t in self.channel.texts()) == 1, jid
        self.loop.close()


ConversationMachine.TestCase.settings = settings(
    max_examples=int(__import__("os").environ.get("BJB_STATEFUL_EXAMPLES", "25")),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestConversationMachine = ConversationMachine.TestCase
