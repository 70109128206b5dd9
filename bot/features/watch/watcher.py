"""The swarm watch: each server's events and snapshots, the volumes' disks and
external alerts through the rules, and the decisions to the reporter.

One task per server follows `Swarm.events()`; one checks the disks; one sends the
quiet-hours digest when they end. All live in one task group (`run`)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from bot.config import WatchConfig
from bot.features.watch.report import Reporter, as_incident
from bot.features.watch.rules import Decision, Disk, Rules, Thresholds
from bot.ops.swarm.events import SwarmEvent, SwarmSnapshot

log = logging.getLogger(__name__)

DIGEST_CHECK = 30.0  # how often the end of quiet hours is looked for
RETRY = 5.0
LOCAL = "local"  # the server name of the bot's own disks


class Followable(Protocol):
    def events(
        self, *, poll_interval: float = ..., fallback_interval: float = ...
    ) -> AsyncIterator[SwarmEvent | SwarmSnapshot]: ...


def thresholds(config: WatchConfig) -> Thresholds:
    return Thresholds(
        failures=config.failures,
        window=config.window,
        recover_after=config.recover_after,
        converge_timeout=config.converge_timeout,
        disk_percent=config.disk_percent,
        disk_critical=config.disk_critical,
    )


def disk_usage(path: Path) -> Disk:
    """statvfs: what `df` shows (blocks for unprivileged users count as free)."""
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    return Disk(str(path), total - free, total)


class Watch:
    def __init__(
        self,
        config: WatchConfig,
        swarms: Mapping[str, Followable],
        reporter: Reporter,
        *,
        disk_paths: Sequence[Path] = (),
        clock: Callable[[], float] = time.time,
        disk_usage: Callable[[Path], Disk] = disk_usage,
    ) -> None:
        self.config = config
        self.rules = Rules(thresholds(config))
        self.reporter = reporter
        self._swarms = swarms
        self._disk_paths = list(disk_paths)
        self._clock = clock
        self._disk_usage = disk_usage
        self._lock = asyncio.Lock()  # one decision at a time: rules and store agree
        self.on_event: Callable[[str, SwarmEvent], None] | None = None  # benches, tests
        self.rules.restore([as_incident(row) for row in reporter.store.open_incidents()], clock())

    async def _decide(self, decisions: list[Decision]) -> None:
        if decisions:
            await self.reporter.apply(decisions)

    async def snapshot(self, server: str, snap: SwarmSnapshot) -> None:
        async with self._lock:
            await self._decide(self.rules.snapshot(server, snap))

    async def alert(self, server: str, name: str, summary: str | None) -> None:
        """An external alert firing (`summary`) or resolved (None): an incident too."""
        async with self._lock:
            await self._decide(self.rules.alert(server, name, summary, self._clock()))

    async def check_disks(self) -> None:
        readings = []
        for path in self._disk_paths:
            try:
                readings.append(await asyncio.to_thread(self._disk_usage, path))
            except OSError as e:
                log.warning("watch: cannot read the disk of %s: %s", path, e)
        async with self._lock:
            await self._decide(self.rules.disks(LOCAL, readings, self._clock()))

    async def follow(self, server: str, swarm: Followable) -> None:
        """Until cancelled; a failure of the iterator itself is retried."""
        while True:
            try:
                events = swarm.events(
                    poll_interval=self.config.poll_interval,
                    fallback_interval=self.config.fallback_interval,
                )
                async for item in events:
                    if isinstance(item, SwarmSnapshot):
                        await self.snapshot(server, item)
                    elif self.on_event is not None:
                        self.on_event(server, item)
            except Exception:
                log.exception("watch of %s failed; again in %.0f s", server, RETRY)
            await asyncio.sleep(RETRY)

    async def _every(self, interval: float, work: Callable[[], Awaitable[object]]) -> None:
        while True:
            try:
                await work()
            except Exception:
                log.exception("watch upkeep failed")
            await asyncio.sleep(interval)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for server, swarm in self._swarms.items():
                group.create_task(self.follow(server, swarm), name=f"watch-{server}")
            if self._disk_paths:
                group.create_task(
                    self._every(self.config.disk_interval, self.check_disks), name="watch-disks"
                )
            if self.config.quiet_hours:
                group.create_task(
                    self._every(DIGEST_CHECK, lambda: self.reporter.digest(self._clock())),
                    name="watch-digest",
                )
