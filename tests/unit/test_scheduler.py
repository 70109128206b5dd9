"""bot/core/scheduler.py with an injected clock: tasks from the config, noting new tasks,
due runs, missed runs coalesced and announced, failures contained, timezones, weekday
numbers as crontab means them, and the run() loop over a patched sleep."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import bot.core.scheduler as scheduler_module
from bot.config import parse_config
from bot.core.cron import crontab_trigger
from bot.core.scheduler import AGE_CHECK, Schedule, Scheduler, Task, tasks_from
from bot.core.store import Store

NIGHTLY = Task("backup", "30 3 * * *", "backup all", "the backup of every app")
HOURLY = Task("backup-age", "17 * * * *", "backups", "the backup age check")
WEEKLY = Task("check", "0 5 * * 0", "backup check", "the repository check")


def at(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    microsecond: int = 0,
    *,
    zone: str = "UTC",
) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=ZoneInfo(zone))


class Recorder:
    def __init__(self, failing: tuple[str, ...] = ()) -> None:
        self.runs: list[str] = []
        self.said: list[str] = []
        self.failing = failing
        self.announce_fails = False

    async def run(self, command: str) -> None:
        self.runs.append(command)
        if command in self.failing:
            raise RuntimeError(f"{command} blew up")

    async def announce(self, text: str) -> None:
        if self.announce_fails:
            raise ConnectionError("homeserver down")
        self.said.append(text)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "scheduler.sqlite")
    yield s
    s.close()


def make(
    store: Store,
    tasks: list[Task],
    recorder: Recorder | None = None,
    *,
    timezone: str | None = "UTC",
    clock: Any = None,
) -> tuple[Scheduler, Recorder]:
    rec = recorder or Recorder()
    kwargs = {"clock": clock} if clock is not None else {}
    return Scheduler(
        Schedule(tasks, store, timezone=timezone, **kwargs), rec.run, rec.announce
    ), rec


# ================================================================ tasks from the config


def test_tasks_from_a_config_with_backups(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("secret\n")
    config = parse_config(
        {"backups": {"repository": "/srv/restic", "password_file": "pw"}}, tmp_path
    )
    assert tasks_from(config) == [
        Task("backup", "30 3 * * *", "backup all", "the backup of every app"),
        Task("check", "0 5 * * 0", "backup check", "the repository check"),
        Task("drill", "0 6 1 * *", "backup drill", "the restore drill"),
        Task("backup-age", AGE_CHECK, "backups", "the backup age check"),
        Task("upgrades", "0 9 * * *", "upgrades", "the upgrade check"),
    ]


def test_tasks_from_a_config_with_schedules_turned_off(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("secret\n")
    config = parse_config(
        {
            "backups": {
                "repository": "/srv/restic",
                "password_file": "pw",
                "schedule": "0  2 * * *",  # spaces are normalised
                "check_schedule": None,
                "drill_schedule": None,
            },
            "upgrades": {"check_schedule": None},
        },
        tmp_path,
    )
    # The age check stays: it is what notices that the nightly run is missing.
    assert [(t.name, t.cron) for t in tasks_from(config)] == [
        ("backup", "0 2 * * *"),
        ("backup-age", AGE_CHECK),
    ]


def test_tasks_without_backups() -> None:
    assert [t.name for t in tasks_from(parse_config({}))] == ["upgrades"]
    assert tasks_from(parse_config({"upgrades": {"check_schedule": None}})) == []


# ================================================================ tick


async def test_a_new_task_is_only_noted(store: Store) -> None:
    scheduler, rec = make(store, [NIGHTLY])
    now = at(2024, 1, 1, 3, 30)  # exactly a fire time: still only noted
    assert await scheduler.tick(now) == []
    assert rec.runs == []
    assert rec.said == []
    assert scheduler.schedule.last_run(NIGHTLY) == now
    assert store.get("schedule.backup.last") == "2024-01-01T03:30:00+00:00"
    assert scheduler.schedule.next_run(NIGHTLY) == at(2024, 1, 2, 3, 30)


async def test_a_due_task_runs_once(store: Store) -> None:
    scheduler, rec = make(store, [NIGHTLY])
    await scheduler.tick(at(2024, 1, 1, 12, 0))
    assert await scheduler.tick(at(2024, 1, 2, 3, 29, 59)) == []
    assert await scheduler.tick(at(2024, 1, 2, 3, 30)) == [NIGHTLY]
    assert rec.runs == ["backup all"]
    assert await scheduler.tick(at(2024, 1, 2, 3, 30)) == []
    assert await scheduler.tick(at(2024, 1, 2, 3, 31)) == []
    assert rec.runs == ["backup all"]
    assert rec.said == []  # on time: nothing to announce
    assert scheduler.schedule.last_run(NIGHTLY) == at(2024, 1, 2, 3, 30)
    assert scheduler.schedule.next_run(NIGHTLY) == at(2024, 1, 3, 3, 30)


async def test_missed_runs_coalesce_into_one_announced_run(store: Store) -> None:
    scheduler, rec = make(store, [NIGHTLY, HOURLY])
    await scheduler.tick(at(2024, 1, 1, 12, 0))
    # The bot was down for four days: four nightly and ~94 hourly runs missed.
    now = at(2024, 1, 5, 10, 0)
    assert await scheduler.tick(now) == [NIGHTLY, HOURLY]
    assert rec.runs == ["backup all", "backups"]
    assert rec.said == [
        "⏰ The backup of every app was due at 2024-01-02 03:30 UTC while the bot was not "
        "running; running it once now.",
        "⏰ The backup age check was due at 2024-01-01 12:17 UTC while the bot was not "
        "running; running it once now.",
    ]
    assert await scheduler.tick(now + timedelta(seconds=1)) == []
    assert scheduler.schedule.next_run(NIGHTLY) == at(2024, 1, 6, 3, 30)
    assert scheduler.schedule.next_run(HOURLY) == at(2024, 1, 5, 10, 17)
    assert len(rec.runs) == 2
    assert len(rec.said) == 2


@pytest.mark.parametrize(
    ("late", "announced"),
    [
        (timedelta(0), False),
        (timedelta(minutes=1, seconds=59), False),
        (timedelta(minutes=2), False),  # loop jitter up to LATE is not a missed run
        (timedelta(minutes=2, microseconds=1), True),
    ],
)
async def test_only_a_late_run_is_announced(store: Store, late: timedelta, announced: bool) -> None:
    scheduler, rec = make(store, [NIGHTLY])
    await scheduler.tick(at(2024, 1, 1, 12, 0))
    assert await scheduler.tick(at(2024, 1, 2, 3, 30) + late) == [NIGHTLY]
    assert rec.runs == ["backup all"]
    assert bool(rec.said) is announced


async def test_a_failing_run_does_not_stop_the_other_tasks(store: Store) -> None:
    scheduler, rec = make(store, [NIGHTLY, HOURLY], Recorder(failing=("backup all",)))
    await scheduler.tick(at(2024, 1, 1, 12, 0))
    now = at(2024, 1, 2, 3, 30)
    assert await scheduler.tick(now) == [NIGHTLY, HOURLY]
    assert rec.runs == ["backup all", "backups"]
    # The failed task counts as run: it is not started again at every tick.
    assert scheduler.schedule.last_run(NIGHTLY) == now
    assert await scheduler.tick(now + timedelta(seconds=30)) == []
    assert rec.runs == ["backup all", "backups"]


async def test_a_failing_announcement_does_not_stop_the_run(store: Store) -> None:
    scheduler, rec = make(store, [NIGHTLY])
    await scheduler.tick(at(2024, 1, 1, 12, 0))
    rec.announce_fails = True
    assert await scheduler.tick(at(2024, 1, 9, 12, 0)) == [NIGHTLY]
    assert rec.runs == ["backup all"]


async def test_the_last_run_survives_a_restart(store: Store) -> None:
    first, _ = make(store, [NIGHTLY])
    await first.tick(at(2024, 1, 1, 12, 0))
    second, rec = make(store, [NIGHTLY, HOURLY])  # a new task added by the restart
    assert await second.tick(at(2024, 1, 2, 3, 30)) == [NIGHTLY]
    assert rec.runs == ["backup all"]
    assert second.schedule.last_run(HOURLY) == at(2024, 1, 2, 3, 30)  # noted, not run


async def test_tick_reads_the_injected_clock(store: Store) -> None:
    times = iter([at(2024, 1, 1, 12, 0), at(2024, 1, 2, 3, 30)])
    scheduler, rec = make(store, [NIGHTLY], clock=lambda: next(times))
    assert await scheduler.tick() == []
    assert await scheduler.tick() == [NIGHTLY]
    assert rec.runs == ["backup all"]


# ================================================================ next_run, schedule()


async def test_next_run_and_schedule(store: Store) -> None:
    now = at(2024, 1, 1, 12, 0)  # a Monday
    scheduler, _ = make(store, [NIGHTLY, HOURLY, WEEKLY], clock=lambda: now)
    # A task never run: its next fire time after now.
    assert scheduler.schedule.rows() == [
        (NIGHTLY, None, at(2024, 1, 2, 3, 30)),
        (HOURLY, None, at(2024, 1, 1, 12, 17)),
        (WEEKLY, None, at(2024, 1, 7, 5, 0)),  # crontab's 0 is Sunday
    ]
    await scheduler.tick(at(2024, 1, 1, 11, 0))
    # Noted at 11:00 (first start), not run: the next fire time after that, even when
    # it has passed, and no last run.
    assert scheduler.schedule.rows(now) == [
        (NIGHTLY, None, at(2024, 1, 2, 3, 30)),
        (HOURLY, None, at(2024, 1, 1, 11, 17)),
        (WEEKLY, None, at(2024, 1, 7, 5, 0)),
    ]
    await scheduler.tick(now)  # 12:00: the hourly task (due 11:17) runs
    assert scheduler.schedule.rows(now)[1] == (HOURLY, now, at(2024, 1, 1, 12, 17))
    assert scheduler.schedule.ran(NIGHTLY) is None


@pytest.mark.parametrize(
    ("weekdays", "fires"),
    [
        ("0", ["Sun", "Sun"]),
        ("7", ["Sun", "Sun"]),
        ("1", ["Mon", "Mon"]),
        ("1-5", ["Tue", "Wed", "Thu", "Fri", "Mon"]),
        ("6,0", ["Sat", "Sun", "Sat"]),
        ("*/2", ["Tue", "Thu", "Sat", "Sun", "Tue"]),  # 0, 2, 4, 6
        ("1-5/2", ["Wed", "Fri", "Mon"]),
        ("*", ["Tue", "Wed", "Thu"]),
        ("sun", ["Sun", "Sun"]),
        ("mon-fri", ["Tue", "Wed", "Thu", "Fri", "Mon"]),
        ("sat,1", ["Sat", "Mon", "Sat"]),
    ],
)
def test_weekdays_are_numbered_as_in_crontab(weekdays: str, fires: list[str]) -> None:
    trigger = crontab_trigger(f"0 5 * * {weekdays}", ZoneInfo("UTC"))
    moment, found = at(2024, 1, 1, 12, 0), []  # Monday noon
    for _ in fires:
        moment = trigger.get_next_fire_time(None, moment + timedelta(seconds=1))
        found.append(moment.strftime("%a"))
    assert found == fires


def test_a_weekday_number_past_seven_is_refused() -> None:
    with pytest.raises(ValueError, match="day of week '8'"):
        crontab_trigger("0 5 * * 8", ZoneInfo("UTC"))


# ================================================================ timezones


async def test_cron_times_are_in_the_configured_zone(store: Store) -> None:
    scheduler, rec = make(store, [NIGHTLY], timezone="Europe/Berlin")
    await scheduler.tick(at(2024, 1, 1, 12, 0))
    assert scheduler.schedule.next_run(NIGHTLY) == at(2024, 1, 2, 2, 30)  # 03:30 CET
    assert scheduler.schedule.next_run(NIGHTLY) == at(2024, 1, 2, 3, 30, zone="Europe/Berlin")
    # A missed run is announced in the zone's own time.
    assert await scheduler.tick(at(2024, 1, 3, 12, 0)) == [NIGHTLY]
    assert rec.said == [
        "⏰ The backup of every app was due at 2024-01-02 03:30 CET while the bot was not "
        "running; running it once now."
    ]


async def test_summer_time_moves_the_utc_fire_time(store: Store) -> None:
    scheduler, _ = make(store, [NIGHTLY], timezone="Europe/Berlin")
    await scheduler.tick(at(2024, 3, 30, 12, 0))  # the day before the clocks go forward
    assert scheduler.schedule.next_run(NIGHTLY) == at(2024, 3, 31, 1, 30)  # 03:30 CEST
    await scheduler.tick(at(2024, 3, 31, 1, 30))
    assert scheduler.schedule.next_run(NIGHTLY) == at(2024, 4, 1, 1, 30)


async def test_a_time_skipped_by_summer_time_fires_once_after_the_gap(store: Store) -> None:
    task = Task("t", "30 2 * * *", "backups", "the t")  # 02:30 is skipped on 31 March
    scheduler, rec = make(store, [task], timezone="Europe/Berlin")
    await scheduler.tick(at(2024, 3, 30, 12, 0))
    due = scheduler.schedule.next_run(task)
    assert due is not None
    # APScheduler gives the wall time 02:30, which does not exist that night; as an
    # instant it is 01:30 UTC (03:30 CEST): the first minute after the gap.
    assert due.astimezone(UTC) == at(2024, 3, 31, 1, 30)
    assert await scheduler.tick(at(2024, 3, 31, 1, 29, 59)) == []
    assert await scheduler.tick(at(2024, 3, 31, 1, 30)) == [task]
    assert rec.said == []
    assert scheduler.schedule.next_run(task) == at(2024, 4, 1, 0, 30)  # 02:30 CEST


def test_the_default_zone_is_the_machines() -> None:
    from tzlocal import get_localzone

    assert scheduler_module._zone(None) == get_localzone()
    assert scheduler_module._zone("Asia/Tokyo") == ZoneInfo("Asia/Tokyo")


# ================================================================ run()


class Stop(Exception):
    pass


async def test_the_run_loop_waits_for_the_chat_and_fires_on_time(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [at(2024, 1, 1, 10, 0)]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += timedelta(seconds=seconds)
        if len(slept) == 21:
            raise Stop

    monkeypatch.setattr(scheduler_module, "asyncio", SimpleNamespace(sleep=sleep))
    scheduler, rec = make(store, [HOURLY], clock=lambda: now[0])
    answers = iter([False, False, True])

    async def ready() -> bool:
        return next(answers)

    with pytest.raises(Stop):
        await scheduler.run(ready)
    # Two waits for the chat, then at most a minute at a time until 10:17, where it
    # lands exactly, runs the task, and goes on towards 11:17.
    assert slept[:2] == [0.2, 0.2]
    assert slept[2:18] == [60.0] * 16
    assert slept[18] == pytest.approx(59.6)
    assert slept[19:] == [60.0, 60.0]
    assert rec.runs == ["backups"]
    assert rec.said == []
    assert scheduler.schedule.last_run(HOURLY) == at(2024, 1, 1, 10, 17)


async def test_the_run_loop_sleeps_at_least_half_a_second(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clock that does not move (or a fire time already passed) must not spin."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            raise Stop

    monkeypatch.setattr(scheduler_module, "asyncio", SimpleNamespace(sleep=sleep))
    # The clock moves past 10:17 between the tick (10:16:59.9, not due yet) and the
    # computation of the wait.
    moments = iter([at(2024, 1, 1, 10, 16, 59, 900000)] + [at(2024, 1, 1, 10, 17, 30)] * 10)
    store.put("schedule.backup-age.last", at(2024, 1, 1, 10, 0).isoformat())
    scheduler, rec = make(store, [HOURLY], clock=lambda: next(moments))
    with pytest.raises(Stop):
        await scheduler.run()
    assert slept == [0.5, 60.0, 60.0]
    assert rec.runs == ["backups"]  # at the second tick, 30 s late: not announced
    assert rec.said == []


async def test_the_run_loop_without_tasks_sleeps_a_minute_at_a_time(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:
            raise Stop

    monkeypatch.setattr(scheduler_module, "asyncio", SimpleNamespace(sleep=sleep))
    scheduler, _ = make(store, [], clock=lambda: at(2024, 1, 1))
    with pytest.raises(Stop):
        await scheduler.run()
    assert slept == [60.0, 60.0]
