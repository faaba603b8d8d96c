"""Flood control's takes: the starts of the sends waiting together given in one round trip,
each at its slot; the window counted at a send's slot; cancelled senders."""

from __future__ import annotations

import asyncio

import pytest

from bot.flood import FloodControl
from conversation.identity import TELEGRAM
from tests.e2e.flood_record import Record, ask, assert_within_limits, returns_recorded  # noqa: F401 (autouse)


async def request() -> None:
    return None


def hold_takes(flood: FloodControl) -> tuple[asyncio.Event, asyncio.Event]:
    """Each take waits, once on its way, until released: (arrived, released)."""
    take, arrived, released = flood._take, asyncio.Event(), asyncio.Event()

    async def held_take(**kw):  # type: ignore[no-untyped-def]
        arrived.set()
        await released.wait()
        return await take(**kw)

    flood._take = held_take
    return arrived, released


async def test_slots_due_soon_are_given_at_once_each_at_its_time(redis):
    """One take gives the slots of the next few intervals to the sends waiting together,
    in their order, each with the time it may start: the pace is the slots', not the
    round trips'."""
    flood = FloodControl(redis)
    interval, ahead = 1000, 3000  # slow slots: the take below falls within one of them
    secs, micros = await redis.time()
    due = secs * 1000 + micros // 1000
    await redis.set(flood.k.flood_all, due)  # a slot due now
    args = [interval, 1000, 29, 30_000, 20, 3000, 20, ahead, 5]
    args += [x for chat in range(1, 6) for x in (chat, f"m{chat}")] + [0]
    reply = [int(x) for x in await flood._take(keys=flood._keys, args=args)]
    taken = [reply[i : i + 3] for i in range(1, 16, 3)]
    assert all(now for now, _, _ in taken[:4])  # due now, +1 s, +2 s, +3 s: within the horizon
    slots = [now + wait for now, wait, _ in taken[:4]]
    assert slots == [taken[0][0], due + interval, due + 2 * interval, due + 3 * interval]
    assert taken[4][0] == 0 and taken[4][2] == 0  # the fifth is held bot-wide ...
    assert reply[0] > 0 and taken[4][1] < reply[0]  # ... and asks again a slot ahead of its own
    assert await redis.zcard(flood.k.flood_log) == 4  # counted in the window from now on


async def test_a_full_window_moves_the_slot_to_a_window_after_the_return_that_makes_room(redis):
    """Three sends a second: two returned 950 ms ago, one in flight. The next send may start
    a window after those returns (51 ms from now, within the slots given out at once), and
    so may the one after it, a third of an interval later, not at the same moment (two
    returns left together: the spacing lets two missed slots be caught up, from the slot the
    window set, spread so that they do not leave the window as one); the third would need
    the one in flight back: held, asked again soon."""
    flood = FloodControl(redis)
    log = flood.k.flood_log
    secs, micros = await redis.time()
    now = secs * 1000 + micros // 1000
    await redis.zadd(log, {"old": now - 950, "older": now - 950, "flying": now + 30_000})
    await redis.set(flood.k.flood_all, now - 100)  # no spacing holds anything
    interval, window, limit, retry, ahead = 10, 1000, 3, 20, 100
    args = [interval, window, limit, 30_000, retry, 3000, 20, ahead, 3]
    args += [x for chat in (1, 2, 3) for x in (chat, f"m{chat}")] + [0]
    reply = [int(x) for x in await flood._take(keys=flood._keys, args=args)]
    (t1, w1, _), (t2, w2, _), (t3, w3, c3) = (reply[i : i + 3] for i in (1, 4, 7))
    assert t1 and t1 + w1 == now - 950 + window + 1  # the two returns have left the window
    assert t2 and t2 + w2 == t1 + w1 + interval // 3  # the second room, a third of an interval on
    assert (t3, w3, c3) == (0, retry, 0)  # full of sends in flight: held, bot-wide


async def test_a_send_held_beyond_the_horizon_asks_again_an_interval_before_its_slot(redis):
    """The window has room again only in 501 ms, beyond the 100 ms of slots given out at
    once: the send asks again an interval before that room, as a take before a slot the
    spacing set, so the next take gives it and the rooms after it within the horizon (asked
    again as it entered the horizon, a full window's takes gave one slot each)."""
    flood = FloodControl(redis)
    secs, micros = await redis.time()
    now = secs * 1000 + micros // 1000
    await redis.zadd(flood.k.flood_log, {"a": now - 500, "b": now - 499})
    await redis.set(flood.k.flood_all, now - 100)  # no spacing holds anything
    interval, window, limit, horizon = 10, 1000, 2, 100
    args = [interval, window, limit, 30_000, 20, 3000, 20, horizon, 1, "1", "m1", 0]
    reply = [int(x) for x in await flood._take(keys=flood._keys, args=args)]
    given, held, for_chat = reply[1:4]
    assert given == 0 and for_chat == 0  # held bot-wide
    room = now - 500 + window + 1  # the first return leaves the window
    assert room - now - interval - 5 <= held <= room - now - interval  # read a few ms after `now`


async def test_sends_waiting_together_share_a_take(redis, monkeypatch):
    """Seven sends at once: two round trips give them their starts (four slots, three with
    the two missed ones caught up, then three), within the limits."""
    from bot import flood as flood_mod

    monkeypatch.setattr(flood_mod, "DONE_FLUSH_S", 3600)  # returns ride on takes only
    flood = FloodControl(redis)
    calls: list[str] = []
    execute = redis.execute_command

    async def counted(*args, **kw):  # type: ignore[no-untyped-def]
        calls.append(str(args[0]))
        return await execute(*args, **kw)

    await flood.send(100, request)  # loads the script
    record = Record(flood)
    await redis.delete(flood.k.flood_all)  # no slot set: the first take catches two up
    flood._slot_due = 0.0
    monkeypatch.setattr(redis, "execute_command", counted)
    await asyncio.gather(*(flood.send(chat, request) for chat in range(1, 8)))
    assert calls == ["EVALSHA"] * 2
    assert len(record.starts()) == 7
    assert_within_limits(record, range(1, 8), 1.0)


async def test_a_sender_cancelled_while_waiting_is_dropped_and_its_given_slot_freed(redis, monkeypatch):
    """A sender cancelled before its take answers is not given a slot: its place goes to the
    next. One cancelled while the take that gives it a slot is on its way has the slot
    recorded as over at once: the window and its chat are not held for it."""
    flood = FloodControl(redis)
    arrived, released = hold_takes(flood)

    first = asyncio.create_task(flood.send("1", request))
    await arrived.wait()  # its take is on its way
    first.cancel()
    released.set()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert flood._taker is not None
    await flood._taker  # the take came back, and gave it a slot
    await flood.flush()
    log, busy = flood.k.flood_log_of(TELEGRAM), flood.k.flood_busy_of(TELEGRAM)
    secs, micros = await redis.time()
    # Its return is recorded (a few ms ahead at most: dated through the offset's upper
    # bound), not its in-flight lapse 30 s ahead.
    assert await redis.zscore(log, f"{flood._me}:0") < secs * 1000 + micros // 1000 + 1000
    assert await redis.zscore(busy, "1") is None  # its chat is free
    # Cancelled while waiting behind another: dropped, never counted.
    arrived.clear()
    released.clear()
    ahead = asyncio.create_task(flood.send("2", request))
    await arrived.wait()
    behind = asyncio.create_task(flood.send("3", request))
    for _ in range(1000):
        if len(flood._waiting):
            break
        await asyncio.sleep(0)
    behind.cancel()
    released.set()
    await ahead
    with pytest.raises(asyncio.CancelledError):
        await behind
    assert await redis.zscore(busy, "3") is None and not flood._waiting
    assert await redis.zcard(log) == 2  # the first and `ahead`


async def test_the_first_answers_waiting_are_told_as_seconds_of_the_budget(redis):
    """What the intake holds files back on: the first answers waiting here for a take, in
    seconds of the bot-wide budget (30 a second); other sends and the ones already being
    taken do not count, and none once all are sent."""
    from conversation.channel import FIRST_ANSWER, PROGRESS, SEND_PRIORITY

    flood = FloodControl(redis)
    flood.take_at_most = 1
    take = flood._take
    arrived, released = hold_takes(flood)

    sends = []
    for chat, priority in (("1", FIRST_ANSWER), ("2", FIRST_ANSWER), ("3", FIRST_ANSWER), ("4", PROGRESS)):
        token = SEND_PRIORITY.set(priority)
        sends.append(asyncio.create_task(flood.send(chat, request)))
        SEND_PRIORITY.reset(token)
    await arrived.wait()  # the first is being taken; the other three wait
    for _ in range(1000):
        if len(flood._waiting) == 3:
            break
        await asyncio.sleep(0)
    assert flood.answers_ahead() == pytest.approx(2 / 30)
    flood._take = take
    released.set()
    await asyncio.gather(*sends)
    assert flood.answers_ahead() == 0


async def test_sends_leave_no_cycle_for_the_collector(redis):
    """Each send's renewal timer is kept by its member, not in a closure naming itself:
    sends leave nothing of the flood control for the cyclic collector (whose passes over
    a burst's garbage paused the loop)."""
    import gc

    flood = FloodControl(redis)
    await flood.send("1", request)  # the scripts loaded
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept to be looked at
    try:
        for chat in range(2, 12):
            await flood.send(str(chat), request)
        gc.collect()
        left = [o for o in gc.garbage if getattr(o, "__qualname__", "").startswith("FloodControl.")]
        timers = [o for o in gc.garbage if isinstance(o, asyncio.TimerHandle)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == [] and timers == [] and flood._renewals == {}
