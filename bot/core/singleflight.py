"""Single flight: an expensive read-only command (`!upgrades`: git fetches and registry
lookups that count against Docker Hub's pull limit; `!apps`: every server's services
and every recipe's tags) asked by several members while it runs is run once, and every
asker gets the same result.

The first caller (the leader) runs the work in its own job; later callers with the
same key join it and are told whose check they share and since when. When the leader
is cancelled (its job timed out, or was cancelled), the joined callers do not inherit
the cancellation: the first of them runs the work again as the new leader. An error
of the work is every caller's error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from bot.fmt import human_age

if TYPE_CHECKING:
    from bot.core.context import CommandContext

T = TypeVar("T")


class _LeaderGone(Exception):
    """The leader was cancelled: a joined caller runs the work itself."""


@dataclass
class Flight(Generic[T]):
    owner: str  # who started it (a member's user id, or the scheduler)
    started: float  # time.monotonic()
    future: asyncio.Future[T]
    joined: int = 0  # how many callers share it
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    @property
    def age(self) -> float:
        return self.clock() - self.started


class SingleFlight:
    """Work by key: at most one run per key at a time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._flights: dict[Hashable, Flight[Any]] = {}

    def running(self, key: Hashable) -> Flight[Any] | None:
        flight = self._flights.get(key)
        return flight if flight is not None and not flight.future.done() else None

    async def run(
        self,
        key: Hashable,
        owner: str,
        work: Callable[[], Awaitable[T]],
        on_join: Callable[[Flight[T]], Awaitable[None]] | None = None,
    ) -> T:
        """`work()`'s result, run here or shared with the run already going for `key`
        (then `on_join(flight)` first, so the asker hears at once that it waits)."""
        while True:
            flight = self.running(key)
            if flight is None:
                return await self._lead(key, owner, work)
            flight.joined += 1
            if on_join is not None:
                await on_join(flight)
                on_join = None  # told once, even if it has to lead after all
            try:
                # shield: a joined caller's own cancellation must not cancel the leader's
                return await asyncio.shield(flight.future)
            except _LeaderGone:
                continue

    async def _lead(self, key: Hashable, owner: str, work: Callable[[], Awaitable[T]]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._flights[key] = Flight(owner, self._clock(), future, clock=self._clock)
        try:
            result = await work()
        except asyncio.CancelledError:
            future.set_exception(_LeaderGone())
            future.exception()  # retrieved: nobody may be waiting
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()
            raise
        else:
            future.set_result(result)
            return result
        finally:
            if self._flights.get(key) is not None and self._flights[key].future is future:
                del self._flights[key]


def joined_note(flight: Flight[Any], what: str, age_text: str) -> str:
    """What a joined caller is told: `Sharing the check started 3s ago by @x.`"""
    return f"Sharing the {what} started {age_text} ago by {flight.owner}; its answer follows."


# The bot's flights. Keys start with the Services of the bot asking, so two bots in
# one process (the tests) never share a result.
FLIGHTS = SingleFlight()


async def shared(ctx: CommandContext, what: str, work: Callable[[], Awaitable[T]]) -> T:
    """`work()` run once for every member asking for `what` while it runs; a member who
    joins is told at once whose run they share."""

    async def on_join(flight: Flight[T]) -> None:
        await ctx.reply(joined_note(flight, what, human_age(flight.age)))

    return await FLIGHTS.run((id(ctx.services), what), ctx.sender, work, on_join)
