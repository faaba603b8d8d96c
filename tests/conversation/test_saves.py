"""When the runner saves a chat's state: compare-and-set, and steps left unsaved until a
step needs saving (tests/conversation/test_store.py has the store's own part)."""

from __future__ import annotations

from conversation.events import CommandReceived, FileReceived
from conversation.identity import qualify
from conversation.state import ChatState
from conversation.store import is_cluster_client
from tests.conversation.test_flow import CHAT, app  # noqa: F401


async def test_a_file_to_its_estimate_is_saved_three_times_never_read_and_its_outbox_emptied_as_it_ends(
    app,  # noqa: F811
    write,
    monkeypatch,
):
    store = app.store
    saves: list[str] = []
    reads = 0
    save_if, get = store.save_if, store.r.get

    async def counting_save(chat, base, state, *rest):  # type: ignore[no-untyped-def]
        saves.append(state.phase)
        return await save_if(chat, base, state, *rest)

    async def counting_get(key):  # type: ignore[no-untyped-def]
        nonlocal reads
        reads += key == store.k.chat(CHAT, "state")
        return await get(key)

    removals: list[tuple[int, ...]] = []
    hdel = store.r.hdel

    async def counting_hdel(key, *fields):  # type: ignore[no-untyped-def]
        removals.append(fields)
        return await hdel(key, *fields)

    monkeypatch.setattr(store, "save_if", counting_save)
    monkeypatch.setattr(store.r, "get", counting_get)
    monkeypatch.setattr(store.r, "hdel", counting_hdel)
    src = write("p.csv", "prompt\na cat\n")
    await app.runner.handle(CHAT, FileReceived(str(src), "p.csv", src.stat().st_size))
    # A small file's report goes with its estimate, and the upload's outcome is saved with
    # that message, not on its own.
    assert saves == ["resolving", "inspecting", "awaiting_confirm"]
    assert reads == 0  # a new chat is guessed new (the first save checks); then known
    # One message, its outbox entry removed at the end of the work, in the write that
    # unlists the chat (no HDEL of its own).
    assert removals == [] and await store.outbox(CHAT) == []
    listing = app.runner.leases.k.replica_chats(app.runner.leases.replica)
    assert not await store.r.sismember(listing, qualify(CHAT))


async def test_a_change_made_while_an_unsaved_step_runs_is_kept_and_the_step_taken_again(
    app,  # noqa: F811
    redis,
    channel,
    sandbox,
    write,
    monkeypatch,
):
    """While the precheck runs, the stored phase is still "inspecting" (a crash there reads
    and uploads again); /lang zh arrives through another replica meanwhile. The estimate's save finds
    that change, so the upload's step is taken again on top of it: both kept."""
    from tests.conversation.test_flow import make_app

    other = make_app(redis, channel, sandbox, app.runner.settings.media_dir.parent)
    precheck = app.client.precheck
    seen: list[ChatState] = []

    async def meanwhile(n, model, mode):  # type: ignore[no-untyped-def]
        seen.append(await other.store.load(CHAT))
        await other.runner.handle(CHAT, CommandReceived("lang", ("zh",), 1, False))
        return await precheck(n, model, mode)

    monkeypatch.setattr(app.client, "precheck", meanwhile)
    src = write("p.csv", "prompt\na cat\n")
    await app.runner.handle(CHAT, FileReceived(str(src), "p.csv", src.stat().st_size), client_lang="en")
    assert [s.phase for s in seen] == ["inspecting"]
    state = await app.store.load(CHAT)
    assert state.phase == "awaiting_confirm" and state.lang == "zh" and state.lang_fixed
    assert state.pending is not None and state.pending.file_id  # the upload's outcome, stepped again
    # Every message kept its own outbox number: the /lang answer's and the estimate's.
    texts = channel.texts()
    assert any("预估费用" in t for t in texts)  # the estimate, in the language set meanwhile
    assert state.out_seq == 2 and await app.store.outbox(CHAT) == []
    await other.client.aclose()


async def test_the_update_is_marked_done_in_the_write_that_applies_its_event(app, write, monkeypatch):  # noqa: F811
    """No round trip of its own: the update's lease is in the chat's slot, and the first
    save marks it done. A redelivery of an update already applied is marked on its own."""
    leases, r = app.runner.leases, app.store.r
    key = leases.k.update(41, CHAT)
    assert await leases.claim_update(41, chat=CHAT) == "new"
    writes: list[str] = []
    real_set = r.set

    async def counting_set(name, *a, **kw):  # type: ignore[no-untyped-def]
        writes.append(name)
        return await real_set(name, *a, **kw)

    monkeypatch.setattr(r, "set", counting_set)
    applied: list[bytes | None] = []

    async def on_applied() -> None:
        applied.append(await r.get(key))

    src = write("p.csv", "prompt\na cat\n")
    event = FileReceived(str(src), "p.csv", src.stat().st_size)
    await app.runner.handle(CHAT, event, event_id="tg:41", on_applied=on_applied, update_key=key)
    assert applied == [b"done"] and key not in writes
    assert 0 < await r.ttl(key) <= 86_400
    await r.delete(key)
    await app.runner.handle(CHAT, event, event_id="tg:41", on_applied=on_applied, update_key=key)
    assert applied == [b"done", b"done"] and writes.count(key) == 1  # nothing to save: a SET


async def test_a_claimed_update_lists_its_chat_in_the_claims_round_trip_and_a_duplicate_unlists_it(
    app,  # noqa: F811
    monkeypatch,
):
    runner, leases = app.runner, app.runner.leases
    listing = leases.k.replica_chats(leases.replica)
    key = leases.k.update(41, CHAT)
    sadd_calls = 0
    sadd = leases.r.sadd

    async def counting_sadd(*a):  # type: ignore[no-untyped-def]
        nonlocal sadd_calls
        sadd_calls += 1
        return await sadd(*a)

    monkeypatch.setattr(leases.r, "sadd", counting_sadd)
    async with runner.claimed(41, CHAT) as claim:
        assert claim == "new"
        assert await leases.r.sismember(listing, qualify(CHAT))  # listed while the update is handled
        assert runner.busy(CHAT)
        await runner.handle(CHAT, CommandReceived("help", (), 1, False), update_key=key, listed=True)
        assert await leases.r.sismember(listing, qualify(CHAT))  # still: the claim's block holds it
    assert not await leases.r.sismember(listing, qualify(CHAT)) and not runner.busy(CHAT)
    # Listed by the claim's pipeline (on a cluster, a SADD sent at the same time as the claim).
    assert sadd_calls == (1 if is_cluster_client(leases.r) else 0)
    async with runner.claimed(41, CHAT) as again:
        assert again == "done"  # marked done by the save that applied its event
    assert not await leases.r.sismember(listing, qualify(CHAT))  # a duplicate leaves nothing listed


async def test_a_burst_of_sufficient_prechecks_ends_a_shortfall_episode_once_a_second(
    app,  # noqa: F811
    monkeypatch,
):
    from conversation.spending_events import ShortfallNotice

    spending = app.runner.spending
    clock = [100.0]
    spending.clock = lambda: clock[0]
    deletes = 0
    delete = spending.r.delete

    async def counting_delete(*keys):  # type: ignore[no-untyped-def]
        nonlocal deletes
        deletes += spending.k.balance_short in keys
        return await delete(*keys)

    monkeypatch.setattr(spending.r, "delete", counting_delete)
    for _ in range(5):
        await spending.balance_sufficient()
    assert deletes == 1
    await spending.r.set(spending.k.balance_short, "1")  # begun by another replica meanwhile
    clock[0] += 0.5
    await spending.balance_sufficient()
    assert await spending.r.exists(spending.k.balance_short)  # within the second: left
    clock[0] += 0.6
    await spending.balance_sufficient()
    assert not await spending.r.exists(spending.k.balance_short) and deletes == 2
    # One this replica begins is ended by the very next sufficient precheck.
    await spending.perform(CHAT, ChatState(), ShortfallNotice(1.0, 2.0, "USD", None))
    assert await spending.r.exists(spending.k.balance_short)
    await spending.balance_sufficient()
    assert not await spending.r.exists(spending.k.balance_short)
