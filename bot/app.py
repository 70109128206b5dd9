"""The one place that builds the real clients and wires everything together."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from bot.core.access import Access
from bot.features.apps import Apps
from bot.features.backups import Backups
from bot.core.chat import Chat
from bot.config import Config
from bot.core.console import CONSOLE_USER, ConsoleChat
from bot.core.dispatcher import Dispatcher, Services
from bot.core.gate import ApprovalGate
from bot.core.metrics import Metrics
from bot.core.registry import CommandGroup, Registry
from bot.core.scheduler import Scheduler, tasks_from
from bot.core.store import Store
from bot.features.upgrades import Upgrades
from bot.core.web import serve

log = logging.getLogger(__name__)


def build_chat(
    config: Config, store: Store, metrics: Metrics, console_as: str | None = None
) -> Chat:
    """Matrix when configured, else the console room."""
    if config.matrix is not None and console_as is None:
        from bot.ops.matrix import MatrixChat  # nio loads slowly; the console doesn't need it

        return MatrixChat(config.matrix, store, config.data_dir, metrics)
    prefix = config.matrix.prefix if config.matrix else "!"
    return ConsoleChat(prefix, console_as or CONSOLE_USER)


class Bot:
    def __init__(
        self,
        config: Config,
        *,
        chat: Chat | None = None,
        groups: Iterable[CommandGroup] | None = None,
        console_as: str | None = None,
        clock: Callable[[], float] = time.time,
        sweep_interval: float = 5.0,
    ) -> None:
        if groups is None:
            from commands import GROUPS

            groups = GROUPS
        self.config = config
        self.store = Store(config.data_dir / "coopbot.sqlite")
        self.metrics = Metrics()
        self.chat = chat or build_chat(config, self.store, self.metrics, console_as)
        apps = Apps(config, self.store)
        backups = (
            Backups(
                config.backups, apps, self.store, data_dir=config.data_dir, metrics=self.metrics
            )
            if config.backups
            else None
        )
        self.services = Services(
            config=config,
            chat=self.chat,
            store=self.store,
            registry=Registry(groups),
            access=Access(config.access, self.chat),
            metrics=self.metrics,
            apps=apps,
            backups=backups,
            upgrades=Upgrades(config, apps, self.store, backups),
        )
        prefix = config.matrix.prefix if config.matrix else "!"
        self.gate = ApprovalGate(self.services, prefix, clock, sweep_interval)
        self.dispatcher = Dispatcher(self.services, prefix, self.gate)
        self.scheduler = Scheduler(
            tasks_from(config),
            self.store,
            self.dispatcher.run_scheduled,
            self._announce,
            timezone=config.timezone,
            clock=lambda: datetime.fromtimestamp(clock(), UTC),
        )
        self.services.scheduler = self.scheduler

    async def can_report(self) -> bool:
        """Scheduled work waits until the home room can be written to."""
        return self.chat.alive() and await self.chat.home_room() is not None

    async def _announce(self, text: str) -> None:
        room_id = await self.chat.home_room()
        if room_id is not None:
            await self.chat.send(room_id, text)

    async def run(self) -> None:
        """Run until the chat loop ends (console EOF) or the task is cancelled."""
        for job in self.store.interrupt_unfinished_jobs():
            log.warning("job #%s (%s) was interrupted by the last stop", job.id, job.text)
            self.store.audit(
                job.sender,
                "job.interrupted",
                f"#{job.id} {job.text}",
                app=job.app,
                room_id=job.room_id,
                event_id=job.event_id,
            )
        runner = None
        if self.config.web.listen:
            runner = await serve(self.metrics, self.chat.alive, self.config.web.listen)
            log.info("web: http://%s/healthz and /metrics", self.config.web.listen)
        upkeep = asyncio.create_task(self.gate.maintain(self.chat.alive), name="proposals")
        schedule = asyncio.create_task(self.scheduler.run(self.can_report), name="scheduler")
        try:
            await self.chat.run(self.dispatcher.submit)
            # End of input (console): let the work that was asked for finish.
            await self.dispatcher.drain()
        finally:
            upkeep.cancel()
            schedule.cancel()
            await asyncio.gather(upkeep, schedule, return_exceptions=True)
            await self.dispatcher.shutdown()
            if runner is not None:
                await runner.cleanup()
            close = getattr(self.chat, "close", None)
            if close is not None:
                await asyncio.shield(close())
            self.store.close()
