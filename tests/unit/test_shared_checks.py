"""`!upgrades` and `!apps` asked by several members while one runs: run once, and
everyone gets the answer; the later askers are told whose run they share."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.fakes import FakeApps, swap_services
from tests.unit.helpers import ADMIN, OPERATOR, VIEWER, BotFactory, chat_of, drain, message
from tests.unit.test_upgrades import make_site, wire


class Gate:
    """Wraps an async method: counts the calls, each waits until `open` is set."""

    def __init__(self, method: Any) -> None:
        self.method = method
        self.calls = 0
        self.open = asyncio.Event()

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        await self.open.wait()
        return await self.method(*args, **kwargs)


async def answers(bot: Any, bodies: list[tuple[str, str]], gate: Gate) -> list[list[str]]:
    messages = [message(body, sender) for body, sender in bodies]
    # quick commands (!apps) answer inside handle(), jobs (!upgrades) in a task
    handling = [asyncio.create_task(bot.dispatcher.handle(msg)) for msg in messages]
    for _ in range(20):  # every job reached the gate (the later ones joined the first)
        await asyncio.sleep(0)
    calls_while_waiting = gate.calls
    gate.open.set()
    await asyncio.gather(*handling)
    await drain(bot)
    assert calls_while_waiting == 1
    chat = chat_of(bot)
    return [
        [chat.shown(s.event_id) for s in chat.sent if s.reply_to == m.event_id] for m in messages
    ]


async def test_upgrades_asked_three_times_at_once_checks_once(
    tmp_path: Path, make_bot: BotFactory
) -> None:
    site = make_site(tmp_path)
    site.add("a.test")
    bot = make_bot()
    wire(bot, site)
    gate = Gate(site.upgrades.check)
    site.upgrades.check = gate  # type: ignore[method-assign]
    first, second, third = await answers(
        bot, [("!upgrades", VIEWER), ("!upgrades", OPERATOR), ("!upgrades", ADMIN)], gate
    )
    assert gate.calls == 1
    (report,) = first
    assert "| a.test | 1.0.0+1.0 → **2.0.0+2.0** |" in report
    note = f"Sharing the upgrade check started 0s ago by {VIEWER}; its answer follows."
    assert second == [note, report]
    assert third == [note, report]
    # once it is over, the next ask runs a new check
    gate.open = asyncio.Event()
    gate.open.set()
    msg = message("!upgrades", VIEWER)
    await bot.dispatcher.handle(msg)
    await drain(bot)
    assert gate.calls == 2


async def test_apps_asked_twice_at_once_lists_once(tmp_path: Path, make_bot: BotFactory) -> None:
    bot = make_bot()
    apps = FakeApps({})
    gate = Gate(apps.inventory)
    apps.inventory = gate  # type: ignore[method-assign]
    swap_services(bot.services, apps=apps)
    first, second = await answers(bot, [("!apps", VIEWER), ("!apps", OPERATOR)], gate)
    assert gate.calls == 1
    assert first[0].startswith("No apps: add `servers:`")
    assert second == [
        f"Sharing the apps listing started 0s ago by {VIEWER}; its answer follows.",
        first[0],
    ]
