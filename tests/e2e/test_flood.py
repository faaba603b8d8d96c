"""Flood control: sends are spaced per chat and overall, measured from completion."""

from __future__ import annotations

import asyncio

from bot.flood import FloodControl
from bot.flood_rules import GLOBAL_INTERVAL_MS, PRIVATE_INTERVAL_MS, WINDOW_LIMIT, WINDOW_MS
from conversation.channel import ANSWER, BACKGROUND, FIRST_ANSWER, SEND_PRIORITY
from conversation.identity import TELEGRAM
from tests.e2e.flood_record import Record, ask, assert_within_limits, returns_recorded  # noqa: F401 (autouse)


async def test_sends_are_spaced_per_chat_and_overall(redis):
    """Per chat: from one request's return to the next one's start. Overall: between starts,
    with several requests in flight at once (the round trip does not cap throughput)."""
    scale = 0.25  # 262 ms per chat, 10 ms overall
    flood = FloodControl(redis, scale=scale)
    record = Record(flood)
    in_flight: list[int] = [0, 0]  # now, most

    async def request() -> None:
        in_flight[0] += 1
        in_flight[1] = max(in_flight)
        await asyncio.sleep(0.03)  # the request travelling: longer than the overall interval
        in_flight[0] -= 1

    async def sender(chat: int, n: int) -> None:
        for _ in range(n):
            await flood.send(chat, request)

    async def two_at_once(chat: int) -> None:  # two tasks sending to one chat
        await asyncio.gather(sender(chat, 2), sender(chat, 2))

    await asyncio.gather(*(sender(c, 4) for c in (1, 2, 3, 4, 5)), two_at_once(6))
    assert len(record.starts()) == 24
    assert_within_limits(record, range(1, 7), scale)
    assert in_flight[1] > 1  # several requests travel at once


async def test_a_late_start_keeps_the_pace_and_catches_up_two_slots_at_most(redis):
    """The next slot follows the one that was due, so a sender that woke a little late does
    not lower the rate; after a long gap, two missed slots are caught up, a third of an
    interval apart (a bunch given at one moment would leave the window as one, a window
    later), then the pace holds."""
    flood = FloodControl(redis)
    interval = GLOBAL_INTERVAL_MS

    async def take(chats: range, interval: int = interval, ahead: int = 0) -> list[int]:
        """The slots given (every chat a new one: only the pace holds up), 0 for one held."""
        args = [interval, 1000, 29, 30_000, 20, 3000, 20, ahead, len(chats)]
        args += [x for chat in chats for x in (chat, f"m{chat}")] + [0]
        reply = [int(x) for x in await flood._take(keys=flood._keys, args=args)]
        answers = [reply[i : i + 3] for i in range(1, len(reply), 3)]
        assert not any(for_chat for _, _, for_chat in answers)
        return [now + wait if now else 0 for now, wait, _ in answers]

    secs, micros = await redis.time()
    due = secs * 1000 + micros // 1000 - 5  # due 5 ms ago: a little late
    await redis.set(flood.k.flood_all, due)
    [taken] = await take(range(1))
    assert taken >= due
    assert int(await redis.get(flood.k.flood_all)) == due + interval  # as if taken on time
    slow = 60_000  # a minute's spacing: the take below falls within one interval
    await redis.set(flood.k.flood_all, taken - 10 * slow)  # due long ago: very late
    await redis.set(flood.k.flood_last_of(TELEGRAM), taken - 10 * slow)
    slots = await take(range(10, 15), slow, ahead=2 * slow)
    first, gap = slots[0], slow // 3
    assert first >= taken
    assert slots == [first, first + gap, first + 2 * gap, first + slow, first + 2 * slow]
    assert int(await redis.get(flood.k.flood_all)) == first + 3 * slow  # then the pace holds
    assert int(await redis.get(flood.k.flood_last_of(TELEGRAM))) == first + 2 * slow


async def test_no_window_holds_more_sends_than_the_limit_however_slow_the_requests(redis):
    """Telegram counts a message when it arrives, somewhere between its start and its return:
    at each start, the sends that could still arrive within one window of it (in flight, or
    returned less than a window ago) number fewer than the limit, so however late requests
    get out of a busy process, no window sees more arrivals than the limit."""
    scale = 0.05  # a 50 ms window
    flood = FloodControl(redis, scale=scale)
    record = Record(flood)
    window = int(WINDOW_MS * scale)

    async def slow_request() -> None:
        await asyncio.sleep(0.2)  # far longer than the spacing: more than the limit would be in flight

    await asyncio.gather(*(flood.send(chat, slow_request) for chat in range(1, 81)))
    start = {chat: ms for chat, what, ms in record.events if what == "start"}  # one send per chat
    done = {chat: ms for chat, what, ms in record.events if what == "done"}
    assert len(start) == len(done) == 80
    spans = [(start[chat], done[chat]) for chat in start]
    starts = sorted(start.values())
    could_arrive = [sum(1 for s_i, r_i in spans if s_i <= s_j and r_i > s_j - window) for s_j in starts]
    assert max(could_arrive) <= WINDOW_LIMIT, could_arrive
    # And the window was what held them back: at some start it was full.
    assert max(could_arrive) == WINDOW_LIMIT, could_arrive


async def test_replicas_share_the_budget(redis):
    """Two bot processes (two FloodControl objects on one Redis) sending to the same chats:
    starts stay spaced overall and per chat, as if one process sent everything."""
    scale = 0.25
    replicas = [FloodControl(redis, scale=scale), FloodControl(redis, scale=scale)]
    record = Record(*replicas)

    async def request() -> None:
        await asyncio.sleep(0.02)

    async def sender(flood: FloodControl, chat: int, n: int) -> None:
        for _ in range(n):
            await flood.send(chat, request)

    await asyncio.gather(*(sender(f, chat, 3) for f in replicas for chat in (1, 2, 3)))
    assert len(record.starts()) == 18
    assert_within_limits(record, (1, 2, 3), scale)


async def test_first_answers_then_answers_then_background_sends(redis):
    """Waiting sends are given their starts in priority order: queued first answers
    overtake further answers, which overtake progress edits; first come first served within
    each."""
    flood = FloodControl(redis, scale=0.01)
    record = Record(flood)

    async def queued(name: str, chat: int, priority: int) -> None:
        SEND_PRIORITY.set(priority)  # this task's own context

        async def req() -> None:
            return None

        await flood.send(chat, req)

    # The next overall start is a second away: every sender below is waiting by then.
    secs, micros = await redis.time()
    await redis.set(flood.k.flood_all, secs * 1000 + micros // 1000 + 1000)
    senders = [("answer0", 1, ANSWER)]
    senders += [(f"progress{i}", 10 + i, BACKGROUND) for i in range(2)]
    senders += [(f"answer{i}", 20 + i, ANSWER) for i in range(1, 3)]
    senders += [(f"first{i}", 30 + i, FIRST_ANSWER) for i in range(2)]
    await asyncio.gather(*(queued(*s) for s in senders))
    names = {chat: name for name, chat, _ in senders}
    # In the order the slots were given (the observer hears them in that order).
    order = [names[chat] for chat, what, _ in record.events if what == "start"]
    assert order == ["first0", "first1", "answer0", "answer1", "answer2", "progress0", "progress1"]
    starts = [ms for _, what, ms in record.events if what == "start"]
    assert starts == sorted(starts)  # and each slot is no earlier than the one before


def test_secrets_are_redacted_from_every_log_record(caplog):
    import logging

    from bot.redact import redact_secrets

    redact_secrets("very-secret-token-123")
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("httpx").info("HTTP Request: POST %s", "http://x/botvery-secret-token-123/getMe")
    assert "very-secret-token-123" not in caplog.text and "bot***/getMe" in caplog.text


async def test_a_slow_request_keeps_its_chat_busy_and_a_dead_senders_mark_lapses(redis, monkeypatch):
    from bot import flood as flood_mod

    monkeypatch.setattr(flood_mod, "IN_FLIGHT_MS", 2000)
    monkeypatch.setattr(flood_mod, "RENEW_S", 0.05)
    flood = FloodControl(redis, scale=0.01)
    busy = flood.k.flood_busy_of(TELEGRAM)
    renewed: list[float] = []

    async def slow() -> None:
        await asyncio.sleep(0.1)
        first = await redis.zscore(busy, "5")
        for _ in range(500):  # until its lapse moves on again (a condition, not a time)
            await asyncio.sleep(0.01)
            if (now := await redis.zscore(busy, "5")) > first:
                renewed.append(now)
                return

    await flood.send("5", slow)
    assert renewed  # renewed while the request lives
    for _ in range(1000):  # its return is recorded soon, on its own: the chat is free
        if await redis.zscore(busy, "5") is None:
            break
        await asyncio.sleep(0.01)
    assert await redis.zscore(busy, "5") is None
    # A sender that dies mid-request renews nothing: its mark lapses within IN_FLIGHT_MS.
    taken = ask("6", "dead:0")
    await flood._take_for([taken])
    assert taken.answer.result()[0]  # taken
    secs, micros = await redis.time()
    assert 0 < await redis.zscore(busy, "6") - (secs * 1000 + micros // 1000) <= 2000


async def test_a_send_costs_one_round_trip(redis, monkeypatch):
    """The start, chat and bot-wide at once, carrying earlier sends' returns: what this
    process knows of its own sends saves the rest."""
    from bot import flood as flood_mod

    # Returns wait for the next start however slow this machine is (recorded on their own
    # after 50 ms otherwise: one more round trip, which the next test counts).
    monkeypatch.setattr(flood_mod, "DONE_FLUSH_S", 3600)
    flood = FloodControl(redis, scale=0.05)
    calls: list[str] = []
    execute = redis.execute_command

    async def counted(*args, **kw):  # type: ignore[no-untyped-def]
        calls.append(str(args[0]))
        return await execute(*args, **kw)

    monkeypatch.setattr(redis, "execute_command", counted)

    async def request() -> None:
        return None

    await flood.send(100, request)  # loads the script
    calls.clear()
    for chat in range(1, 21):
        await flood.send(chat, request)
    assert calls == ["EVALSHA"] * 20


async def test_a_stop_records_the_returns_at_once(redis, monkeypatch):
    from bot import flood as flood_mod

    monkeypatch.setattr(flood_mod, "DONE_FLUSH_S", 3600)
    flood = FloodControl(redis)
    busy, ready = flood.k.flood_busy_of(TELEGRAM), flood.k.flood_ready_of(TELEGRAM)

    async def request() -> None:
        return None

    await flood.send(9, request)
    assert await redis.zscore(busy, "9") is not None  # returned, not recorded yet
    await flood.flush()
    assert await redis.zscore(busy, "9") is None  # free for other replicas now
    secs, micros = await redis.time()
    assert await redis.zscore(ready, "9") > secs * 1000 + micros // 1000  # after its interval


async def test_a_chat_busy_on_another_replica_waits_for_its_return(redis):
    """Two replicas write to one chat: the second starts only after the first's request
    returned and the chat's interval passed, on Redis's clock."""
    a, b = FloodControl(redis, scale=0.05), FloodControl(redis, scale=0.05)
    record = Record(a, b)
    started = asyncio.Event()

    async def held() -> None:
        started.set()
        await asyncio.sleep(0.1)  # in flight on replica a

    async def quick() -> None:
        return None

    first = asyncio.ensure_future(a.send(7, held))
    await started.wait()
    await b.send(7, quick)
    await first
    turns = sorted(record.per_chat(7), key=lambda t: (t[1], t[0] == "sent"))
    assert [what for what, _ in turns] == ["chat", "sent", "chat", "sent"], turns
    assert turns[2][1] - turns[1][1] >= int(PRIVATE_INTERVAL_MS * 0.05)


async def test_returns_ride_on_the_next_start_or_are_recorded_on_their_own(redis):
    flood = FloodControl(redis)
    record = Record(flood)
    log = flood.k.flood_log

    async def request() -> None:
        return None

    await flood.send(1, request)
    first = f"{flood._me}:0"
    done = {chat: ms for chat, what, ms in record.events if what == "done"}
    await flood.send(2, request)  # its start records the first send's return
    assert int(await redis.zscore(log, first)) == done[1]
    done = {chat: ms for chat, what, ms in record.events if what == "done"}
    second = f"{flood._me}:1"
    for _ in range(1000):  # nothing else starts: recorded on its own, soon
        if (await redis.zscore(log, second) or 0) < done[2] + 1000:
            break
        await asyncio.sleep(0.01)
    assert int(await redis.zscore(log, second)) == done[2]
    # Each return is recorded no earlier than the start that followed its request on Redis.
    starts = {chat: ms for chat, what, ms in record.events if what == "start"}
    assert done[1] >= starts[1] and done[2] >= starts[2]


async def test_a_return_is_never_recorded_before_it_happened_on_redis(redis):
    """The window counts a send until a window after its return; a return recorded too early
    would let the window admit a send too soon. Redis's clock, read as each request ends,
    is a lower bound of its return: the recorded return is at or after it."""
    flood = FloodControl(redis, scale=0.05)
    record = Record(flood)
    ended: dict[int, int] = {}

    def request_for(chat: int):  # type: ignore[no-untyped-def]
        async def request() -> None:
            secs, micros = await redis.time()
            ended[chat] = secs * 1000 + micros // 1000

        return request

    await asyncio.gather(*(flood.send(chat, request_for(chat)) for chat in range(1, 21)))
    done = {chat: ms for chat, what, ms in record.events if what == "done"}
    assert len(done) == 20
    assert all(done[chat] >= ended[chat] for chat in done), (done, ended)


def test_a_forward_step_of_redis_clock_is_not_hidden_by_older_bounds(redis):
    """Returns are dated on Redis's clock through the least bound of its offset from ours.
    If that clock steps forward (an NTP step, a moved VM), older bounds are too low and
    would date returns before they happened; a sample above them even less its round trip
    starts the bound again, however small the step. A slow reply is no step: the least
    bound (widened by drift) still wins."""
    flood = FloodControl(redis)
    flood._learn_offset(1_000.0, 10.0, 1.0)
    flood._learn_offset(1_004.0, 11.0, 5.0)  # a slower reply: the tighter bound stays
    assert flood._offset_hi == 1_001.0  # widened by 1 ms of possible drift
    flood._learn_offset(6_000.0, 12.0, 1.0)  # the clock stepped 5 s forward
    assert flood._offset_hi == 6_000.0
    flood._learn_offset(5_999.0, 13.0, 1.0)
    assert flood._offset_hi == 5_999.0
    flood._learn_offset(6_062.0, 14.0, 72.0)  # 63 ms high, from a reply 72 ms slow: no step
    assert flood._offset_hi == 6_000.0
    flood._learn_offset(6_012.0, 15.0, 1.0)  # a step of 10 ms, seen by a quick reply
    assert flood._offset_hi == 6_012.0
