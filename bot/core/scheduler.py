"""Scheduled work: cron lines from the config, run through the dispatcher as the
scheduler identity (so it is authorised, locked, tracked and reported like a
member's command).

APScheduler's CronTrigger does the calendar arithmetic (day-of-week rules, DST
gaps and folds, timezones). The loop around it is ours, for two reasons:
APScheduler 3's own loop reads the wall clock directly, so a test cannot drive it
with an injected clock, and its persistence (needed to notice a run missed while
the bot was down) wants SQLAlchemy and pickled jobs. Here each task's last run is
one row in the store's key-value table; on start, a task whose next fire time
after its last run has passed runs once (several missed runs coalesce into one)
and the room is told.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from bot.config import Config
from bot.core.cron import crontab_trigger
from bot.core.store import Store

log = logging.getLogger(__name__)

# A fire time this late is a missed run (the bot was down), not loop jitter.
LATE = timedelta(minutes=2)
MAX_SLEEP = 60.0  # re-read the clock at least this often (suspend, clock changes)
AGE_CHECK = "17 * * * *"  # hourly: alert when an app's newest backup is too old


@dataclass(frozen=True)
class Task:
    name: str
    cron: str
    command: str  # run as "<prefix><command>" by the scheduler identity
    what: str  # for people: "the nightly backup"


def tasks_from(config: Config) -> list[Task]:
    tasks = []
    if config.backups is not None:
        b = config.backups
        if b.schedule:
            tasks.append(Task("backup", b.schedule, "backup all", "the backup of every app"))
        if b.check_schedule:
            tasks.append(Task("check", b.check_schedule, "backup check", "the repository check"))
        if b.drill_schedule:
            tasks.append(Task("drill", b.drill_schedule, "backup drill", "the restore drill"))
        tasks.append(Task("backup-age", AGE_CHECK, "backups", "the backup age check"))
    if config.upgrades.check_schedule:
        tasks.append(
            Task("upgrades", config.upgrades.check_schedule, "upgrades", "the upgrade check")
        )
    return tasks


def _zone(name: str | None) -> tzinfo:
    if name is None:
        from tzlocal import get_localzone  # APScheduler's own dependency

        return get_localzone()
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


class Schedule:
    """The cron tasks and when each last ran and runs next (state in the store).
    What `!schedule` reads; the Scheduler below is what fires them."""

    def __init__(
        self,
        tasks: list[Task],
        store: Store,
        *,
        timezone: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.tasks = tasks
        self.zone = _zone(timezone)
        self._triggers = {t.name: crontab_trigger(t.cron, self.zone) for t in tasks}
        self._store = store
        self.clock = clock

    def _key(self, task: Task) -> str:
        return f"schedule.{task.name}.last"

    def last_run(self, task: Task) -> datetime | None:
        """When the task last ran, or was first seen (the start of its schedule)."""
        text = self._store.get(self._key(task))
        return datetime.fromisoformat(text) if text else None

    def ran(self, task: Task) -> datetime | None:
        """When the task really last ran (None if never): what `!schedule` shows."""
        text = self._store.get(f"schedule.{task.name}.ran")
        return datetime.fromisoformat(text) if text else None

    def next_run(self, task: Task, now: datetime | None = None) -> datetime | None:
        """The first fire time after the last run (or after now, for a new task)."""
        after = self.last_run(task) or (now or self.clock())
        fire: datetime | None = self._triggers[task.name].get_next_fire_time(
            None, after + timedelta(microseconds=1)
        )
        return fire

    def due(self, now: datetime) -> list[tuple[Task, datetime]]:
        """The tasks due at `now` with the time each was due, marked as run. A new
        task is only noted (its first run is its next fire time)."""
        found = []
        for task in self.tasks:
            if self.last_run(task) is None:
                self._store.put(self._key(task), now.isoformat())
                continue
            due = self.next_run(task, now)
            if due is None or due > now:
                continue
            self._store.put(self._key(task), now.isoformat())
            self._store.put(f"schedule.{task.name}.ran", now.isoformat())
            found.append((task, due))
        return found

    def rows(
        self, now: datetime | None = None
    ) -> list[tuple[Task, datetime | None, datetime | None]]:
        """(task, last run, next run) for `!schedule`."""
        now = now or self.clock()
        return [(t, self.ran(t), self.next_run(t, now)) for t in self.tasks]


class Scheduler:
    """Fires the schedule's tasks at their times through `run` (the dispatcher)."""

    def __init__(
        self,
        schedule: Schedule,
        run: Callable[[str], Awaitable[None]],
        announce: Callable[[str], Awaitable[None]],
    ) -> None:
        self.schedule = schedule
        self._run = run
        self._announce = announce

    async def tick(self, now: datetime | None = None) -> list[Task]:
        """Run every task that is due at `now`; returns them."""
        schedule = self.schedule
        now = now or schedule.clock()
        fired = []
        for task, due in schedule.due(now):
            if now - due > LATE:
                when = due.astimezone(schedule.zone).strftime("%Y-%m-%d %H:%M %Z")
                await self._say(
                    f"⏰ {task.what.capitalize()} was due at {when} while the bot was not "
                    "running; running it once now."
                )
            log.info("scheduled: %s (%s)", task.name, task.command)
            fired.append(task)
            try:
                await self._run(task.command)
            except Exception:  # one task's failure must not stop the schedule
                log.exception("scheduled task %s failed to start", task.name)
        return fired

    async def _say(self, text: str) -> None:
        try:
            await self._announce(text)
        except Exception:
            log.exception("could not announce a missed run")

    async def run(self, ready: Callable[[], Awaitable[bool]] | None = None) -> None:
        """Once `ready` says so (there is a room to report in), fire tasks at their
        times until cancelled."""
        while ready is not None and not await ready():  # noqa: ASYNC110 (a predicate, not an event)
            await asyncio.sleep(0.2)
        schedule = self.schedule
        while True:
            now = schedule.clock()
            await self.tick(now)
            upcoming = [n for t in schedule.tasks if (n := schedule.next_run(t, now)) is not None]
            wait = (
                min((n - schedule.clock()).total_seconds() for n in upcoming)
                if upcoming
                else MAX_SLEEP
            )
            await asyncio.sleep(min(max(wait, 0.5), MAX_SLEEP))
