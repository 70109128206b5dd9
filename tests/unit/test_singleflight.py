"""Single flight: concurrent askers share one run; cancellation of the leader does not
reach them; errors reach everyone; a finished flight is not reused."""

from __future__ import annotations

import asyncio

import pytest

from bot.core.singleflight import Flight, SingleFlight, joined_note


class Check:
    """A fake expensive check that counts its runs and waits until released."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def __call__(self) -> str:
        self.calls += 1
        run = self.calls
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return f"report {run}"


async def test_concurrent_askers_share_one_run() -> None:
    flights, check = SingleFlight(clock=lambda: 100.0), Check()
    told: list[str] = []

    async def on_join(flight: Flight[str]) -> None:
        told.append(joined_note(flight, "check", f"{flight.age:g}s"))

    tasks = [
        asyncio.create_task(flights.run("upgrades", f"@m{n}:test", check, on_join))
        for n in range(5)
    ]
    await asyncio.sleep(0)
    assert check.calls == 1
    assert told == ["Sharing the check started 0s ago by @m0:test; its answer follows."] * 4
    check.release.set()
    assert await asyncio.gather(*tasks) == ["report 1"] * 5
    assert check.calls == 1
    assert flights.running("upgrades") is None
    # other keys are other flights; a finished one is not reused
    assert await flights.run("apps", "@m0:test", check) == "report 2"
    assert await flights.run("upgrades", "@m0:test", check) == "report 3"


async def test_a_cancelled_leader_hands_over_to_a_joined_asker() -> None:
    flights, check = SingleFlight(), Check()
    leader = asyncio.create_task(flights.run("k", "@a:test", check))
    await asyncio.sleep(0)
    follower = asyncio.create_task(flights.run("k", "@b:test", check))
    await asyncio.sleep(0)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    await asyncio.sleep(0)
    assert check.calls == 2  # the follower leads now
    check.release.set()
    assert await follower == "report 2"


async def test_a_cancelled_follower_does_not_cancel_the_leader() -> None:
    flights, check = SingleFlight(), Check()
    leader = asyncio.create_task(flights.run("k", "@a:test", check))
    await asyncio.sleep(0)
    follower = asyncio.create_task(flights.run("k", "@b:test", check))
    await asyncio.sleep(0)
    follower.cancel()
    with pytest.raises(asyncio.CancelledError):
        await follower
    check.release.set()
    assert await leader == "report 1"


async def test_an_error_reaches_every_asker() -> None:
    flights, check = SingleFlight(), Check()
    check.fail = RuntimeError("registry down")
    tasks = [asyncio.create_task(flights.run("k", f"@m{n}:test", check)) for n in range(3)]
    await asyncio.sleep(0)
    check.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [str(r) for r in results] == ["registry down"] * 3
    assert check.calls == 1
