"""Files taken in a bounded number at a time, oldest input first, fewer when the loop lags.

The intakes here sample no lag of their own (`tick_s=None`): the tests say when the loop lags."""

from __future__ import annotations

import asyncio

from conversation.intake import AHEAD_MOST_S, AT_ONCE, FEWEST, FIRST, Intake


async def passes(n: int = 20) -> None:
    """Let the loop make `n` passes (turns beyond AT_ONCE are given one pass later each)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def hold(intake: Intake, since: int, order: list[int], release: asyncio.Event) -> None:
    async with intake.turn((since, "")):
        order.append(since)
        await release.wait()


async def test_waiting_intakes_go_oldest_input_first():
    intake = Intake(1, tick_s=None)
    order: list[int] = []
    first = asyncio.Event()
    holder = asyncio.create_task(hold(intake, 5, order, first))
    await asyncio.sleep(0)  # the holder takes the one slot
    go = asyncio.Event()
    go.set()
    waiters = [asyncio.create_task(hold(intake, since, order, go)) for since in (30, 10, 20)]
    await asyncio.sleep(0)
    assert order == [5] and intake.held == 1
    first.set()
    await asyncio.gather(holder, *waiters)
    assert order == [5, 10, 20, 30]  # by arrival of their input, not of their request
    assert intake.held == 0


async def test_inputs_of_one_millisecond_keep_one_order_across_their_steps():
    intake = Intake(1, tick_s=None)
    order: list[str] = []

    async def step(key: str) -> None:
        async with intake.turn((10, key)):
            order.append(key)

    async with intake.turn((5, "")):
        tasks = [asyncio.create_task(step(k)) for k in ("c", "a", "b", "a", "c")]
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == ["a", "a", "b", "c", "c"]  # each input's steps together, not interleaved


async def test_a_lagging_loop_takes_fewer_files_at_once_and_an_idle_one_more_again():
    intake = Intake(32, tick_s=None)
    release = asyncio.Event()
    order: list[int] = []
    tasks = [asyncio.create_task(hold(intake, i, order, release)) for i in range(40)]
    await passes()
    for _ in range(3):
        intake.lag(0.1)  # ticks 100 ms late: the CPU is the limit
    assert intake.bound == FIRST and intake.held == FIRST  # a burst's start is not raised by it
    for _ in range(15):
        intake.lag(0.0)  # on time again: more each tick
    await passes()
    assert intake.held == 32 and order == list(range(32))
    for _ in range(20):
        intake.lag(0.1)
    assert intake.bound == FEWEST  # shrunk by a quarter a tick, down to the floor
    release.set()
    await asyncio.gather(*tasks)
    assert intake.held == 0 and sorted(order) == list(range(40))


async def test_intakes_waiting_on_a_slow_service_all_run_up_to_the_bound():
    """Nothing lags while they wait on the network: the bound grows at every tick on time
    until as many run as the slots allow."""
    intake = Intake(64, tick_s=None)
    release = asyncio.Event()
    order: list[int] = []
    tasks = [asyncio.create_task(hold(intake, i, order, release)) for i in range(100)]
    await passes()
    assert intake.held == FIRST  # a burst starts low
    for _ in range(15):
        intake.lag(0.0)
        await passes()
    assert intake.held == 64 and len(order) == 64
    release.set()
    await asyncio.gather(*tasks)
    assert len(order) == 100 and intake.held == 0


async def test_turns_are_given_a_few_at_a_time_so_that_sends_get_through_in_between():
    """Files that could all start at once start AT_ONCE a pass of the loop, oldest first:
    a callback that becomes ready meanwhile (a send's slot, an answer) runs between them
    rather than after every file's first step."""
    intake = Intake(64, tick_s=None)
    intake.bound = 64.0  # as grown in a burst: the pass, not the bound, holds them back
    release = asyncio.Event()
    order: list[int] = []
    between: list[int] = []
    tasks = [asyncio.create_task(hold(intake, i, order, release)) for i in range(3 * AT_ONCE)]
    await asyncio.sleep(0)  # the tasks' first steps: AT_ONCE start, the rest wait
    assert intake.held == AT_ONCE
    asyncio.get_running_loop().call_soon(lambda: between.append(len(order)))  # "a send"
    await passes()
    assert between == [AT_ONCE] and order == list(range(3 * AT_ONCE)) and intake.held == 3 * AT_ONCE
    release.set()
    await asyncio.gather(*tasks)
    assert intake.held == 0


async def test_no_file_is_taken_in_while_its_answer_could_not_leave_for_seconds():
    """While the first answers waiting for the channel would take AHEAD_MOST_S of its send
    budget, no turn is given, not even with slots free; as they leave, the oldest input
    goes on at the next tick."""
    ahead = [AHEAD_MOST_S]
    intake = Intake(64, tick_s=None, answers_ahead=lambda: ahead[0])
    release = asyncio.Event()
    release.set()
    order: list[int] = []
    tasks = [asyncio.create_task(hold(intake, i, order, release)) for i in (3, 1, 2)]
    await asyncio.sleep(0)
    intake.lag(0.0)  # a tick on time: slots to spare, but the answers ahead hold them
    await asyncio.sleep(0)
    assert order == [] and intake.held == 0
    ahead[0] = AHEAD_MOST_S - 0.1
    intake.lag(0.0)
    await asyncio.gather(*tasks)
    assert order == [1, 2, 3] and intake.held == 0


async def test_a_slot_handed_to_a_cancelled_intake_goes_on_to_the_next():
    intake = Intake(1, tick_s=None)
    order: list[int] = []
    go = asyncio.Event()
    go.set()
    async with intake.turn((1, "")):
        cancelled = asyncio.create_task(hold(intake, 2, order, go))
        later = asyncio.create_task(hold(intake, 3, order, go))
        await asyncio.sleep(0)  # both wait
    # The slot was just handed to the oldest waiter (2), which is cancelled before it runs.
    cancelled.cancel()
    # Without the hand-on, 3 would wait for ever for a slot nobody holds.
    await asyncio.wait_for(asyncio.gather(cancelled, later, return_exceptions=True), 10)
    assert cancelled.cancelled() and order == [3] and intake.held == 0


async def test_the_runner_takes_files_in_through_the_intake(redis, channel, sandbox, write, tmp_path):
    """Downloads, readings, uploads and prechecks of several chats hold the intake's slots:
    with one slot, never two at once; every file still reaches its estimate."""
    from conversation.events import FileReceived
    from conversation.performing import INTAKE
    from tests.conversation.test_flow import make_app

    app = make_app(redis, channel, sandbox, tmp_path, intake_slots=1)
    running, most, steps = 0, 0, []
    perform = app.runner._perform

    async def counted(chat_id, state, effect):  # type: ignore[no-untyped-def]
        nonlocal running, most
        if not isinstance(effect, INTAKE):
            return await perform(chat_id, state, effect)
        running += 1
        most = max(most, running)
        steps.append(type(effect).__name__)
        try:
            return await perform(chat_id, state, effect)
        finally:
            running -= 1

    app.runner._perform = counted  # type: ignore[method-assign]
    sources = [write(f"p{i}.csv", "prompt\na cat\n") for i in range(3)]
    try:
        await asyncio.gather(
            *(
                app.runner.handle(str(300 + i), FileReceived(str(src), src.name, src.stat().st_size))
                for i, src in enumerate(sources)
            )
        )
        assert most == 1 and sorted(set(steps)) == ["Download", "Inspect", "Precheck", "Upload"]
        for i in range(3):
            assert (await app.store.load(str(300 + i))).phase == "awaiting_confirm"
    finally:
        await app.client.aclose()


async def test_the_runner_takes_no_file_in_while_its_channels_answers_wait(
    redis, channel, sandbox, write, tmp_path
):
    """The runner's intake asks the channel how long its waiting first answers will take:
    while that is seconds, a dropped file is not even downloaded; then it goes on."""
    from conversation.events import FileReceived
    from conversation.performing import INTAKE
    from tests.conversation.test_flow import make_app

    ahead = [AHEAD_MOST_S + 1]
    channel.answers_ahead = lambda chat_id: ahead[0] if chat_id == "401" else 0.0
    app = make_app(redis, channel, sandbox, tmp_path)
    steps: list[str] = []
    perform = app.runner._perform

    async def counted(chat_id, state, effect):  # type: ignore[no-untyped-def]
        if isinstance(effect, INTAKE):
            steps.append(type(effect).__name__)
        return await perform(chat_id, state, effect)

    app.runner._perform = counted  # type: ignore[method-assign]
    src = write("p.csv", "prompt\na cat\n")
    try:
        task = asyncio.create_task(app.runner.handle("401", FileReceived(str(src), src.name, 13)))
        for _ in range(10_000):
            if app.runner.intake_for("401")._waiting:
                break
            await asyncio.sleep(0)
        assert app.runner.intake_for("401")._waiting and steps == []
        held = app.runner.intake_for("401")
        assert app.runner.intake_for("402") is held and app.runner.intake_for("lark:oc_1") is not held
        ahead[0] = 0.0
        await task
        assert steps == ["Download", "Inspect", "Upload", "Precheck"]
        assert (await app.store.load("401")).phase == "awaiting_confirm"
    finally:
        await app.client.aclose()


def test_a_router_tells_each_chat_the_answers_of_its_own_channel():
    """With several channels in one process, one channel's waiting answers hold back only
    its own files: the router asks the chat's channel; one without a budget (the agents'
    API) or not served has none."""
    from bot.channels import ChannelRouter

    class Budgeted:
        def answers_ahead(self, chat_id: str) -> float:
            return 3.0

    router = ChannelRouter({"tg": Budgeted(), "api": object()})  # type: ignore[dict-item]
    assert router.answers_ahead("tg:5") == 3.0
    assert router.answers_ahead("api:sub_1") == 0.0
    assert router.answers_ahead("lark:oc_1") == 0.0


async def test_a_burst_starts_with_few_files_in_flight_and_the_next_one_again():
    """A burst's first files go through their stages without queueing behind the whole
    bound at each (their answers leave at once); a tick that finds the intakes idle makes
    the next burst start low again, however high the last one grew."""
    intake = Intake(64, tick_s=None)
    release = asyncio.Event()
    order: list[int] = []
    tasks = [asyncio.create_task(hold(intake, i, order, release)) for i in range(40)]
    await passes()
    assert intake.held == FIRST and order == list(range(FIRST))
    for _ in range(15):
        intake.lag(0.0)  # on time: the bound grows
        await passes()
    assert intake.held == 40 and intake.bound > 40
    release.set()
    await asyncio.gather(*tasks)
    intake.lag(0.0)  # a tick with nothing held or waiting
    assert intake.bound == FIRST
    again = asyncio.Event()
    tasks = [asyncio.create_task(hold(intake, 100 + i, order, again)) for i in range(20)]
    await passes()
    assert intake.held == FIRST
    again.set()
    await asyncio.gather(*tasks)
