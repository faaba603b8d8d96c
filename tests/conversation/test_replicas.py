"""Replicas on one Redis finish each other's work: a replica "killed" at a chosen point (its
task stops there, as with kill -9: nothing after it runs) leaves its chat to another
replica, which has a media directory of its own (the dead host's disk is gone)."""

from __future__ import annotations

import shutil

import pytest

from batchjob.client import BatchJobClient, Timeouts
from conversation import crash, estimating
from conversation.app import ConversationApp
from conversation.channel import pass_gate
from conversation.events import ButtonPressed, CommandReceived, FileReceived, TextReceived
from conversation.settings import ConversationSettings
from conversation.store import now_ms
from tests.batchjob.conftest import TOKEN
from tests.conversation.test_flow import drain

CHAT = 300
ADMIN = 7


class Killed(BaseException):
    """The replica's process ended here (nothing of it runs after)."""


@pytest.fixture
async def replicas(redis, channel, sandbox, tmp_path):
    client = BatchJobClient(sandbox.url, TOKEN, timeouts=Timeouts(read=2.0), backoff_base=0.01)
    apps = []
    for name in ("a", "b"):
        settings = ConversationSettings(
            media_dir=tmp_path / f"media-{name}",
            admin_ids=frozenset({ADMIN}),
            poll_min_seconds=0.01,
            poll_max_seconds=0.05,
            progress_edit_seconds=0,
            replica_lease_seconds=5,
        )
        apps.append(ConversationApp(redis, client, channel, settings, replica=name))
    yield apps
    await client.aclose()


async def kill_at(monkeypatch, app, point: str, nth: int, coro) -> None:
    """Run `coro` on `app` until the nth time it reaches `point`; then the replica is dead:
    its heartbeat is old and the chats it listed stay listed (a kill runs no cleanup)."""
    seen = 0
    real = crash.point

    def point_(name: str) -> None:
        nonlocal seen
        if name == point:
            seen += 1
            if seen == nth:
                raise Killed(name)

    monkeypatch.setattr(crash, "point", point_)
    with pytest.raises(Killed):
        await coro
    monkeypatch.setattr(crash, "point", real)
    await died(app)
    shutil.rmtree(app.runner.media, ignore_errors=True)  # its disk went with it


async def died(app) -> None:
    """What a kill leaves: the chat still listed as the replica's work, its heartbeat old."""
    await app.leases.working_on(CHAT)
    await app.store.r.zadd(app.keys.replicas, {app.leases.replica: now_ms() - 60_000})


async def left_mid_precheck(app, channel, write) -> int:
    """The chat's flow stopped mid-precheck (the estimate never asked for); the messages so far."""
    src = write("p.csv", "prompt\na cat\n")
    await app.runner.handle(CHAT, FileReceived(str(src), "p.csv"))
    state = await app.store.load(CHAT)
    await app.store.save(CHAT, state.model_copy(update={"phase": "prechecking"}))
    return len(channel.messages)


async def dead_listing(app, replica: str) -> None:
    """`replica` died (its heartbeat a minute old) listing the chat."""
    await app.store.r.zadd(app.keys.replicas, {replica: now_ms() - 60_000})
    await app.store.r.sadd(app.keys.replica_chats(replica), str(CHAT))


async def killed_mid_send(monkeypatch, app, channel, coro, when=lambda text: True) -> None:
    """Run `coro` until a message (the first one `when` accepts) is on its way: its request
    has left (the send gate is passed), then the process dies before the answer."""
    real = channel.send_text

    async def send(chat_id, text, buttons=None):
        if when(text):
            await pass_gate()
            raise Killed("mid-send")
        return await real(chat_id, text, buttons)

    monkeypatch.setattr(channel, "send_text", send)
    with pytest.raises(Killed):
        await coro
    monkeypatch.undo()
    await died(app)


def count(channel, needle: str) -> int:
    return sum(needle in t for t in channel.texts(CHAT))


async def confirm_and_finish(b, channel, sandbox) -> None:
    submits = sandbox.state.submits
    await b.runner.handle(CHAT, TextReceived("google/gemini-2.5-flash-image fast", ADMIN))
    await drain(b)
    assert sandbox.state.submits == submits + 1
    assert count(channel, "submitted") == 1 and count(channel, "finished") == 1


async def test_an_estimate_saved_but_never_sent_is_sent_by_another_replica(
    replicas, channel, write, sandbox, monkeypatch
):
    a, b = replicas
    monkeypatch.setattr(estimating, "ONE_MESSAGE_ROWS", 0)  # the report, then the estimate
    src = write("p.csv", "prompt\na cat\na dog\n")
    # The second message of the flow (the estimate) is saved in the outbox; a dies before sending.
    await kill_at(
        monkeypatch, a, "effect.before:Reply", 2, a.runner.handle(CHAT, FileReceived(str(src), "p.csv"))
    )
    assert count(channel, "Estimate") == 0
    assert await b.recovery.reap_once() == 1
    assert count(channel, "Estimate") == 1 and count(channel, "Checked your file") == 1  # nothing twice
    assert await b.recovery.reap_once() == 0  # a is buried: nothing more to do
    await confirm_and_finish(b, channel, sandbox)


async def test_a_message_whose_send_began_is_not_sent_again(replicas, channel, write, sandbox, monkeypatch):
    """Taken out of the outbox and then killed mid-send: it may have arrived, so not repeated."""
    a, b = replicas
    monkeypatch.setattr(estimating, "ONE_MESSAGE_ROWS", 0)  # the report, then the estimate
    src = write("p.csv", "prompt\na cat\n")
    await killed_mid_send(monkeypatch, a, channel, a.runner.handle(CHAT, FileReceived(str(src), "p.csv")))
    await b.recovery.reap_once()
    # The report's send had begun (it may have arrived): not repeated; the flow goes on.
    assert count(channel, "Checked your file") == 0 and count(channel, "Estimate") == 1
    await confirm_and_finish(b, channel, sandbox)


@pytest.mark.parametrize("reported_first", [True, False], ids=["report-first", "report-with-estimate"])
async def test_an_upload_cut_short_is_done_by_a_replica_without_the_file(
    replicas, channel, write, sandbox, monkeypatch, reported_first
):
    a, b = replicas
    if reported_first:
        monkeypatch.setattr(estimating, "ONE_MESSAGE_ROWS", 0)
    src = write("p.csv", "prompt\na cat\na dog\na fox\n")
    await kill_at(
        monkeypatch, a, "effect.before:Upload", 1, a.runner.handle(CHAT, FileReceived(str(src), "p.csv"))
    )
    assert count(channel, "Checked your file") == (1 if reported_first else 0)
    await b.recovery.reap_once()  # gets the file again from its source, reads it, uploads
    assert count(channel, "Checked your file") == 1 and count(channel, "Estimate") == 1  # no second report
    state = await b.store.load(CHAT)
    assert state.phase == "awaiting_confirm" and state.pending.converted.startswith(str(b.runner.media))
    await confirm_and_finish(b, channel, sandbox)


async def test_valid_rows_sent_from_a_replica_that_never_had_the_file(replicas, channel, write, sandbox):
    a, b = replicas
    src = write("p.csv", "prompt,aspect_ratio\na cat,16:9\n,1:1\na fox,1:1\n")
    await a.runner.handle(CHAT, FileReceived(str(src), "p.csv"))
    assert (await a.store.load(CHAT)).phase == "awaiting_fix"
    shutil.rmtree(a.runner.media)  # private disks: b has none of a's files
    token = (await a.store.load(CHAT)).pending.token
    await b.runner.handle(CHAT, ButtonPressed(f"c:valid:{token}", ADMIN))
    state = await b.store.load(CHAT)
    assert state.phase == "awaiting_confirm" and state.pending.row_count == 2
    assert sandbox.state.files[state.pending.file_id].row_count == 2  # the valid rows only
    assert count(channel, "Checked your file") == 1  # read again on b, not reported again
    await confirm_and_finish(b, channel, sandbox)


async def test_a_submit_cut_short_after_the_post_becomes_one_job(
    replicas, channel, write, sandbox, monkeypatch
):
    a, b = replicas
    src = write("p.csv", "prompt\na cat\n")
    await a.runner.handle(CHAT, FileReceived(str(src), "p.csv"))
    submits = sandbox.state.submits
    await kill_at(
        monkeypatch,
        a,
        "submit.after_post",
        1,
        a.runner.handle(CHAT, TextReceived("google/gemini-2.5-flash-image fast", ADMIN)),
    )
    await b.recovery.reap_once()  # the intent is SUBMITTING: reconciled, never POSTed again
    await drain(b)
    assert sandbox.state.submits == submits + 1
    assert count(channel, "finished") == 1 and (await b.store.load(CHAT)).jobs == []


async def test_a_job_submitted_but_not_yet_watched_gets_its_summary(
    replicas, channel, write, sandbox, monkeypatch
):
    a, b = replicas
    src = write("p.csv", "prompt\na cat\n")
    await a.runner.handle(CHAT, FileReceived(str(src), "p.csv"))
    await kill_at(
        monkeypatch,
        a,
        "effect.before:Watch",
        1,
        a.runner.handle(CHAT, TextReceived("google/gemini-2.5-flash-image fast", ADMIN)),
    )
    assert await b.store.scheduled() == 0
    await b.recovery.reap_once()
    await drain(b)
    assert count(channel, "finished") == 1


async def test_a_redelivered_event_is_applied_once(replicas, channel, write, sandbox):
    a, b = replicas
    src = write("p.csv", "prompt\na cat\n")
    files = len(sandbox.state.files)
    await a.runner.handle(CHAT, FileReceived(str(src), "p.csv"), event_id="tg:1")
    sent = list(channel.texts(CHAT))
    await b.runner.handle(CHAT, FileReceived(str(src), "p.csv"), event_id="tg:1")
    assert channel.texts(CHAT) == sent and len(sandbox.state.files) == files + 1


async def test_a_chat_a_live_replica_works_on_is_left_to_it_then_resumed(replicas, channel, write, sandbox):
    """c died listing the chat, but a (alive) works on it now, ahead of the state c left: it
    is left to a while a works on it. a's work there may not carry c's on (another update of
    the chat): once a is done with it, what is left is resumed, and c is forgotten then."""
    a, b = replicas
    messages = await left_mid_precheck(a, channel, write)
    await a.leases.beat()
    await a.leases.working_on(CHAT)
    await dead_listing(b, "c")
    assert await b.recovery.reap_once() == 0 and len(channel.messages) == messages
    assert await b.recovery.reap_once() == 0  # a still works on it
    assert await b.leases.dead() == ["c"]  # still listed as c's: if b dies too, another finds it
    await a.leases.finished_with(CHAT)  # a's work ended; c's precheck was never done
    assert await b.recovery.reap_once() == 1
    assert count(channel, "Estimate") == 2 and (await b.store.load(CHAT)).phase == "awaiting_confirm"
    assert await b.leases.dead() == []  # c is buried now
    assert await b.recovery.reap_once() == 0  # and resumed once


async def test_a_deferred_chat_of_a_replica_that_beats_again_is_its_own(replicas, channel, write, sandbox):
    """c only looked dead (a long pause): the chat b had deferred is c's again, not resumed."""
    a, b = replicas
    messages = await left_mid_precheck(a, channel, write)
    await a.leases.beat()
    await a.leases.working_on(CHAT)
    await dead_listing(b, "c")
    assert await b.recovery.reap_once() == 0
    await b.store.r.zadd(b.keys.replicas, {"c": now_ms()})  # c beats again
    await a.leases.finished_with(CHAT)
    assert await b.recovery.reap_once() == 0 and len(channel.messages) == messages
    assert b.recovery._deferred == {}


async def test_a_dead_replicas_chat_this_replica_works_on_waits_for_that_work(
    replicas, channel, write, sandbox
):
    """The reaper itself may be handling an update of the chat the dead one listed: resuming
    then would run beside its own flow. It is resumed once that flow has ended."""
    a, b = replicas
    messages = await left_mid_precheck(a, channel, write)
    await dead_listing(b, "c")
    async with b.runner.working(CHAT):
        assert await b.recovery.reap_once() == 0 and len(channel.messages) == messages
        assert await b.leases.dead() == ["c"]
    assert await b.recovery.reap_once() == 1
    assert count(channel, "Estimate") == 2 and await b.leases.dead() == []


async def test_at_start_a_chat_only_a_live_replica_lists_is_resumed_once_it_is_done(
    replicas, channel, write, sandbox
):
    """The start pass leaves a chat a live replica works on to it, and resumes what is left
    once that work ends (the chat's flow was left mid-precheck by an earlier life)."""
    a, b = replicas
    messages = await left_mid_precheck(a, channel, write)
    await a.leases.beat()
    await a.leases.working_on(CHAT)
    assert await b.recovery.startup() == 0 and len(channel.messages) == messages
    assert await b.recovery.reap_once() == 0  # a still works on it
    await a.leases.finished_with(CHAT)
    assert await b.recovery.reap_once() == 1
    assert count(channel, "Estimate") == 2 and (await b.store.load(CHAT)).phase == "awaiting_confirm"
    assert await b.recovery.reap_once() == 0


async def test_a_question_whose_send_began_is_not_repeated_but_the_user_is_told(
    replicas, channel, write, sandbox, monkeypatch
):
    """Killed with the estimate's request on its way: it may have arrived, so no second
    estimate; the chat still waits for the answer, so the user learns how to see it again."""
    a, b = replicas
    src = write("p.csv", "prompt\na cat\n")
    handling = a.runner.handle(CHAT, FileReceived(str(src), "p.csv"))
    await killed_mid_send(monkeypatch, a, channel, handling, when=lambda text: "Estimate" in text)
    await b.recovery.reap_once()
    assert count(channel, "Estimate") == 0 and count(channel, "/again") == 1
    assert await b.store.outbox(CHAT) == []
    await b.runner.handle(CHAT, CommandReceived("again", (), ADMIN))
    assert count(channel, "Estimate") == 1 and count(channel, "Uploaded") == 0  # said once, earlier
    await confirm_and_finish(b, channel, sandbox)


async def test_the_start_pass_resumes_a_chat_this_process_works_on_only_once_that_work_ends(
    replicas, channel, write, sandbox
):
    """A replica's first events can come in before its start-up pass; a chat it is working
    on then is resumed (if anything is left) only when that work has ended."""
    a, _ = replicas
    messages = await left_mid_precheck(a, channel, write)
    async with a.runner.working(CHAT):
        assert await a.recovery.startup() == 0
        (later,) = a.recovery._later.values()  # once, though listed here and in the scan
        assert not later.done() and len(channel.messages) == messages
    await later  # the work here ended: what is left is resumed
    assert count(channel, "Estimate") == 2 and (await a.store.load(CHAT)).phase == "awaiting_confirm"
