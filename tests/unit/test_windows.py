# ruff: noqa: F811  (the room fixtures are imported from test_gate and used by name)
"""Maintenance windows (bot/core/windows.py): the crontab reading, when a held proposal
runs, and through the real Bot's gate (FakeChat, injected clock): an approved
windowed command outside the window waits for its start (past its expiry), the room
is told when, a 👎 meanwhile cancels it, `--now` skips the window;
`!upgrade --now` needs break-glass (auto-patches held to the window:
test_autopatch.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.app import Bot
from bot.core.approvals import State
from bot.core.records import ProposalRow, StoredPlan
from bot.core.windows import delayed, inside, next_start
from bot.errors import UserError
from tests.unit.helpers import ADMIN, OPERATOR, BotFactory, drain
from tests.unit.test_gate import (  # noqa: F401 (the fixtures: clock, risky, room, make_room)
    APP,
    OP1,
    OP2,
    T0,
    Risky,
    Room,
    clock,
    make_room,
    risky,
    room,
)
from tests.unit.test_upgrades import ask, make_site, wire

WEEKEND_NIGHTS = "* 2-4 * * 6,0"  # Saturday and Sunday 02:00-04:59


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# -- the crontab reading -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "is_inside"),
    [
        ("2024-06-01 02:00:00", True),  # a Saturday, the first minute
        ("2024-06-01 04:59:59", True),  # the last one
        ("2024-06-01 05:00:00", False),
        ("2024-06-01 01:59:59", False),
        ("2024-06-02 03:30:00", True),  # Sunday
        ("2024-06-03 03:30:00", False),  # Monday
    ],
)
def test_inside(when: str, is_inside: bool) -> None:
    assert inside(WEEKEND_NIGHTS, UTC, at(when)) is is_inside


def test_next_start_is_now_inside_and_the_next_first_minute_outside() -> None:
    assert next_start(WEEKEND_NIGHTS, UTC, at("2024-06-01 03:00:00")) == at("2024-06-01 03:00:00")
    assert next_start(WEEKEND_NIGHTS, UTC, at("2024-06-03 10:00:00")) == at("2024-06-08 02:00:00")
    assert next_start(WEEKEND_NIGHTS, UTC, at("2024-06-01 05:00:00")) == at("2024-06-02 02:00:00")


def test_the_window_is_read_in_the_configured_zone() -> None:
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")  # UTC+2 in June
    assert inside("* 2-4 * * *", berlin, at("2024-06-01 00:30:00"))
    assert not inside("* 2-4 * * *", berlin, at("2024-06-01 03:30:00"))


def row_of(**fields: Any) -> ProposalRow:
    base: dict[str, Any] = {
        "id": "abc",
        "command": "upgrade",
        "text": "!upgrade cloud.test",
        "app": "cloud.test",
        "policy": "upgrade",
        "plan": StoredPlan("s", ""),
        "requester": "@r:test",
        "room_id": "!room:test",
        "event_id": "$e",
        "message_id": "$m",
        "state": State.OPEN,
        "created_at": 0.0,
        "expires_at": 10_000.0,
        "decided_at": None,
    }
    return ProposalRow(**{**base, **fields})


def test_delayed_alone() -> None:
    assert delayed(row_of(), 100.0, 0.0) is None
    assert delayed(row_of(), 100.0, 60.0) == 160.0
    assert delayed(row_of(run_at=150.0), 100.0, 60.0) == 150.0
    assert delayed(row_of(run_at=150.0), 151.0, 60.0) is None


# -- through the gate ------------------------------------------------------------------------

NIGHTLY = "* 2-4 * * *"  # T0 is 22:13 UTC: the window opens 3 h 46 min later, past expiry
OPENS = at("2023-11-15 02:00:00")


def windowed_room(make_room: Any, **sections: Any) -> Room:
    made: Room = make_room(timezone="UTC", servers={"default": {"window": NIGHTLY}}, **sections)
    windows = made.bot.services.windows
    assert windows is not None
    windows.commands = frozenset({"nuke"})  # the test's risky command stands for upgrade

    async def server_of(domain: str) -> str | None:
        return "default"

    windows.server_of = server_of
    return made


async def test_only_an_app_gone_means_no_window(make_room: Any) -> None:
    windows = windowed_room(make_room).bot.services.windows
    assert windows is not None

    async def gone(domain: str) -> str | None:
        raise UserError(f"No app {domain} on any configured server.")

    async def broken(domain: str) -> str | None:
        raise RuntimeError("abra_dir unreadable")

    windows.server_of = gone
    assert await windows.server(APP) is None  # nothing to hold it to
    windows.server_of = broken
    with pytest.raises(RuntimeError):  # not "no window": the sweep tries again
        await windows.server(APP)


async def approve(room: Room) -> Any:
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1)
    await room.react(proposal.message_id, OP2)
    return proposal


async def test_approved_outside_the_window_waits_for_its_start(
    make_room: Any, risky: Risky
) -> None:
    room = windowed_room(make_room)
    assert T0 < OPENS
    proposal = await approve(room)
    assert risky.calls == []
    row = room.row(proposal)
    assert row.run_at == OPENS
    assert row.expires_at > OPENS  # the window starts after the vote's expiry: extended
    note = [s.markdown for s in room.chat.sent if s.markdown.startswith("🕑")]
    assert len(note) == 1, room.chat.texts()
    assert "runs at **2023-11-15 02:00 UTC**" in note[0]
    assert f"the maintenance window `{NIGHTLY}` of server default (UTC)" in note[0]
    assert "maintenance window" in room.shown(proposal)
    # Just before the window: still waiting; then it runs, once.
    room.clock.now = OPENS - 1
    await room.bot.gate.sweep()
    await drain(room.bot)
    assert risky.calls == []
    room.clock.now = OPENS + 5
    await room.bot.gate.sweep()
    await drain(room.bot)
    assert [c.app for c in risky.calls] == [APP]
    await room.bot.gate.sweep()
    await drain(room.bot)
    assert len(risky.calls) == 1
    assert any("held for the maintenance window" in d for d in room.audit("window"))


async def test_a_thumbs_down_before_the_window_cancels_it(make_room: Any, risky: Risky) -> None:
    room = windowed_room(make_room, approvals={"veto": False})
    proposal = await approve(room)
    room.clock.now += 3 * 3600  # past the vote's original expiry, before the window
    await room.react(proposal.message_id, ADMIN, "👎")
    room.clock.now = OPENS + 5
    await room.bot.gate.sweep()
    await drain(room.bot)
    assert risky.calls == []
    assert room.row(proposal).state == State.REJECTED


async def test_inside_the_window_it_runs_at_once(make_room: Any, risky: Risky) -> None:
    room = windowed_room(make_room)
    room.clock.now = OPENS + 3600  # 03:00
    await approve(room)
    assert [c.app for c in risky.calls] == [APP]
    assert not [s for s in room.chat.sent if s.markdown.startswith("🕑")]


async def test_now_skips_the_window(make_room: Any, risky: Risky) -> None:
    room = windowed_room(make_room)
    windows = room.bot.services.windows
    assert windows is not None
    row = row_of(command="nuke", text="!nuke cloud.test --now -- the hole")
    assert await windows.run_at(row, T0, 0.0) is None
    assert await windows.run_at(row_of(command="nuke"), T0, 0.0) == OPENS


async def test_without_windows_the_delay_alone_holds(make_room: Any, risky: Risky) -> None:
    room = make_room(approvals={"policies": {"undeploy": {"delay": "10m"}}})
    assert room.bot.services.windows is None
    proposal = await approve(room)
    assert room.row(proposal).run_at == T0 + 600


# -- the upgrade command: --now and queued auto-patches ------------------------------------


def upgrade_bot(tmp_path: Path, make_bot: BotFactory, **sections: Any) -> tuple[Bot, Any]:
    site = make_site(tmp_path, auto_patch=True)
    site.add("a.test", labels={"coop-cloud.a_test.autoupdate": "true"})
    bot = make_bot(servers={"default": {"window": NIGHTLY}}, timezone="UTC", **sections)
    wire(bot, site)
    windows = bot.services.windows
    assert windows is not None

    async def server_of(domain: str) -> str | None:
        return "default"

    windows.server_of = server_of
    return bot, site


async def test_upgrade_now_needs_break_glass_an_admin_and_a_reason(
    tmp_path: Path, make_bot: BotFactory
) -> None:
    bot, site = upgrade_bot(tmp_path, make_bot)
    (off,) = await ask(bot, "!upgrade a.test 1.0.1+1.0 --now -- exploited", ADMIN)
    assert "`--now` needs break-glass" in off
    assert "approvals.policies.upgrade.break_glass" in off
    bot, site = upgrade_bot(
        tmp_path / "2", make_bot, approvals={"policies": {"upgrade": {"break_glass": True}}}
    )
    (operator,) = await ask(bot, "!upgrade a.test 1.0.1+1.0 --now -- exploited", OPERATOR)
    assert "for an admin who says why" in operator
    (silent,) = await ask(bot, "!upgrade a.test 1.0.1+1.0 --now", ADMIN)
    assert "for an admin who says why" in silent
    assert bot.store.proposals() == []
    (asked,) = await ask(bot, "!upgrade a.test 1.0.1+1.0 --now -- exploited", ADMIN)
    assert "Proposal" in asked
    assert f"⚡ **--now** (break-glass, by {ADMIN})" in asked
    assert site.apps.deploys == []
