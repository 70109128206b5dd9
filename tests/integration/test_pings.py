"""Dead-man pings from real scheduled runs to a real HTTP server on 127.0.0.1: the
repository check against a repository that is not there fails (restic really runs)
and pings start, then fail with the run's summary; the upgrade check succeeds and
pings start, then success; a dead ping URL fails nothing and is counted."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from prometheus_client import generate_latest

from bot.app import Bot
from bot.config import parse_config
from bot.core.records import JobState
from tests.fakes import FakeChat
from tests.harness.dockerd import free_port


@dataclass
class Monitor:
    """What an Uptime Kuma / healthchecks.io push endpoint would have received."""

    url: str
    pings: list[tuple[str, str]] = field(default_factory=list)  # (path, body)


@pytest.fixture
async def monitor() -> AsyncIterator[Monitor]:
    port = free_port()
    found = Monitor(f"http://127.0.0.1:{port}")

    async def ping(request: web.Request) -> web.Response:
        found.pings.append((request.path, (await request.read()).decode()))
        return web.Response(text="OK")

    app = web.Application()
    app.router.add_post("/{tail:.*}", ping)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield found
    await runner.cleanup()


def make_bot(tmp_path: pathlib.Path, pings: dict[str, str]) -> Bot:
    (tmp_path / "pw").write_text("pings test\n")
    (tmp_path / "abra" / "recipes").mkdir(parents=True)
    config = parse_config(
        {
            "data_dir": str(tmp_path / "data"),
            "abra_dir": str(tmp_path / "abra"),
            "backups": {
                "repository": str(tmp_path / "no-such-repo"),
                "password_file": str(tmp_path / "pw"),
                "schedule": None,
                "drill_schedule": None,
                "check_schedule": "0 5 * * *",
            },
            "upgrades": {"check_schedule": "0 9 * * *", "fetch_recipes": False},
            "pings": {**pings, "timeout": "2s"},
            "timezone": "UTC",
        }
    )
    return Bot(config, chat=FakeChat(), swarms={})


async def run_day(bot: Bot) -> None:
    """The scheduler's own tick over one day (every task due once), to the runs' ends."""
    start = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
    await bot.scheduler.tick(start)  # first sight: the tasks are only noted
    await bot.scheduler.tick(start + timedelta(days=1))
    await bot.dispatcher.drain()
    async with asyncio.timeout(30):
        while bot.deadman._waiting:
            await asyncio.gather(*bot.deadman._waiting, return_exceptions=True)


async def test_start_success_and_fail_pings_with_the_summaries(
    tmp_path: pathlib.Path, monitor: Monitor
) -> None:
    bot = make_bot(tmp_path, {"check": f"{monitor.url}/chk", "upgrades": f"{monitor.url}/upg/"})
    try:
        await run_day(bot)
    finally:
        await bot.close()
    by_path = dict(monitor.pings)
    assert set(by_path) == {"/chk/start", "/chk/fail", "/upg/start", "/upg"}, monitor.pings
    assert by_path["/chk/start"] == "!backup check"
    assert "❌ `restic check` failed" in by_path["/chk/fail"]
    assert "!backup check: done" in by_path["/chk/fail"]
    assert by_path["/upg/start"] == "!upgrades"
    assert "!upgrades: done (ok)" in by_path["/upg"]
    # Each start came before its end.
    paths = [path for path, _ in monitor.pings]
    assert paths.index("/chk/start") < paths.index("/chk/fail")
    assert paths.index("/upg/start") < paths.index("/upg")


async def test_a_dead_ping_url_fails_no_run_and_is_counted(tmp_path: pathlib.Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/dead"
    bot = make_bot(tmp_path, {"upgrades": dead})
    try:
        await run_day(bot)
        (row,) = [job for job in bot.store.jobs() if job.text == "!upgrades"]
        assert row.state == JobState.DONE
        metrics = generate_latest(bot.metrics.registry).decode()
    finally:
        await bot.close()
    assert 'coopbot_pings_total{kind="start",outcome="failed",task="upgrades"} 1.0' in metrics
    assert 'coopbot_pings_total{kind="success",outcome="failed",task="upgrades"} 1.0' in metrics
