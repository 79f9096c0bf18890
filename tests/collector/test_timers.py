"""``collector.timers``: deadlines set in any order, on the heap or in a delay's FIFO, are each served
once, never before their time and within the window after it, in few wake-ups; a failing callback
leaves the others served."""

from __future__ import annotations

import asyncio
import gc
import random
import weakref

import pytest

from collector.echonet_client import EchonetController
from collector.errors import DeviceUnreachable
from collector.timers import WINDOW_S, Timers, timers
from protocols.echonet.frame import EOJ


async def test_deadlines_served_once_on_time_in_few_wake_ups() -> None:
    loop = asyncio.get_running_loop()
    shared = Timers(loop, window_s=0.02)
    served: dict[int, float] = {}
    due: dict[int, float] = {}
    rng = random.Random(7)
    t0 = loop.time()

    def note(i: int) -> None:
        assert i not in served
        served[i] = loop.time()

    for i in range(300):
        if i % 3 == 0:  # timeouts: one of two delays, set as time goes on
            delay = (0.05, 0.2)[i % 2]
            due[i] = loop.time() + delay
            shared.call_later(delay, note, i)
        else:
            due[i] = t0 + rng.uniform(0.0, 0.3)
            shared.call_at(due[i], note, i)
        if i % 50 == 0:
            await asyncio.sleep(0.01)
    wake_ups = 0
    fire = shared._fire

    def counted() -> None:
        nonlocal wake_ups
        wake_ups += 1
        fire()

    shared._fire = counted  # type: ignore[method-assign]
    shared._arm(shared._armed_at)  # re-armed with the counting callback
    await asyncio.sleep(0.45)
    assert served.keys() == due.keys()
    lateness = [served[i] - due[i] for i in due]
    assert min(lateness) >= 0  # never early
    assert max(lateness) < 0.02 + 0.05  # the window, and the loop's own delay on a busy machine
    assert wake_ups < 40, wake_ups  # 300 deadlines over 0.35 s, a wake-up per window at most


async def test_a_failing_callback_leaves_the_others_served() -> None:
    loop = asyncio.get_running_loop()
    errors: list[BaseException | None] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx.get("exception")))
    served: list[int] = []
    shared = timers(loop)
    assert timers(loop) is shared  # one per loop
    now = loop.time()

    def boom() -> None:
        raise RuntimeError("bug")

    shared.call_at(now + 0.01, served.append, 1)
    shared.call_at(now + 0.01, boom)
    shared.call_later(0.01, served.append, 2)
    shared.call_at(now + 0.01, served.append, 3)
    await asyncio.sleep(0.1)
    assert sorted(served) == [1, 2, 3]
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)


def test_a_closed_loop_is_not_kept_alive_by_its_deadlines() -> None:
    """Pending deadlines hold futures of their loop: the loop's ``Timers`` must go with it."""
    loop = asyncio.new_event_loop()

    async def set_some() -> None:
        running = asyncio.get_running_loop()
        shared = timers(running)
        shared.wake_at(running.time() + 100)
        shared.call_later(50, print, "never")

    loop.run_until_complete(set_some())
    loop.close()
    gone = weakref.ref(loop)
    del loop
    gc.collect()
    assert gone() is None


async def test_a_request_that_never_went_out_leaves_no_deadline_behind() -> None:
    """A Get whose send fails (here the controller's socket closed under it) raises at once; its
    deadline must not later fail the future nobody awaits any more (asyncio would log 'Future
    exception was never retrieved')."""
    loop = asyncio.get_running_loop()
    errors: list[str] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx["message"]))
    ctl = EchonetController("127.0.0.1", 0, timeout_s=0.05, multicast=False)
    await ctl.start()
    assert ctl._sock is not None
    ctl._sock.close()  # sendto now fails with EBADF
    with pytest.raises(DeviceUnreachable):
        await ctl.get("127.0.0.1", EOJ(0x02, 0x88, 0x01), [0xE7])
    await asyncio.sleep(0.05 + WINDOW_S + 0.05)  # past the deadline
    gc.collect()
    await asyncio.sleep(0)
    assert errors == []
