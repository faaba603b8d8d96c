"""Files taken in a bounded number at a time, oldest input first, fewer when the loop lags.

The intakes here sample no lag of their own (`tick_s=None`): the tests say when the loop lags."""

from __future__ import annotations

import asyncio

from conversation.intake import FEWEST, Intake


async def hold(intake: Intake, since: int, order: list[int], release: asyncio.Event) -> None:
    async with intake.turn(since):
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


async def test_a_lagging_loop_takes_fewer_files_at_once_and_an_idle_one_more_again():
    intake = Intake(32, tick_s=None)
    for _ in range(20):
        intake.lag(0.1)  # ticks 100 ms late: the CPU is the limit
    assert intake.bound == FEWEST
    release = asyncio.Event()
    order: list[int] = []
    tasks = [asyncio.create_task(hold(intake, i, order, release)) for i in range(20)]
    await asyncio.sleep(0)
    assert intake.held == FEWEST and len(order) == FEWEST
    for _ in range(3):
        intake.lag(0.0)  # on time again: more each tick
    await asyncio.sleep(0)
    assert intake.held == int(intake.bound) > FEWEST + 3 and order == list(range(intake.held))
    release.set()
    await asyncio.gather(*tasks)
    assert intake.held == 0 and sorted(order) == list(range(20))


async def test_intakes_waiting_on_a_slow_service_all_run_up_to_the_bound():
    """Nothing lags while they wait on the network: as many run as the bound allows."""
    intake = Intake(64, tick_s=None)
    release = asyncio.Event()
    order: list[int] = []
    tasks = [asyncio.create_task(hold(intake, i, order, release)) for i in range(100)]
    await asyncio.sleep(0)
    assert intake.held == 64 and len(order) == 64
    release.set()
    await asyncio.gather(*tasks)
    assert len(order) == 100 and intake.held == 0


async def test_a_slot_handed_to_a_cancelled_intake_goes_on_to_the_next():
    intake = Intake(1, tick_s=None)
    order: list[int] = []
    go = asyncio.Event()
    go.set()
    async with intake.turn(1):
        cancelled = asyncio.create_task(hold(intake, 2, order, go))
        later = asyncio.create_task(hold(intake, 3, order, go))
        await asyncio.sleep(0)  # both wait
    # The slot was just handed to the oldest waiter (2), which is cancelled before it runs.
    cancelled.cancel()
    # Without the hand-on, 3 would wait for ever for a slot nobody holds.
    await asyncio.wait_for(asyncio.gather(cancelled, later, return_exceptions=True), 10)
    assert cancelled.cancelled() and order == [3] and intake.held == 0
