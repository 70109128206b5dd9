# ruff: noqa: F811  (the room fixtures are imported from test_gate and used by name)
"""Scheduled auto-patches held to their server's maintenance window (bot/core/autopatch.py)
and the window's 🕑 note (bot/core/windows.py), through the real Bot's gate (FakeChat,
injected clock): an auto-patch outside the window is one pinging message saying which
app, which version and when; it runs when the window opens; an eligible 👎 (or
`!reject`) before then cancels it, audited and told, and the scheduler does not queue
it again; a viewer's 👎 does not. A 👎 in the very tally that approves a windowed
proposal rejects it without a 🕑 note first."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from bot.app import Bot
from bot.core.approvals import AUTO_PATCH, State
from bot.core.chat import Reaction
from bot.core.records import ProposalRow
from tests.fakes import FakeChat
from tests.unit.helpers import ADMIN, OPERATOR, ROOM, VIEWER, BotFactory, chat_of, drain, message
from tests.unit.test_gate import (  # noqa: F401 (the fixtures: clock, risky, make_room)
    OP1,
    OP2,
    T0,
    Clock,
    Risky,
    clock,
    make_room,
    risky,
)
from tests.unit.test_upgrades import make_site, wire
from tests.unit.test_windows import NIGHTLY, OPENS, approve, windowed_room

ASKED = "upgrade a.test 1.0.1+1.0"  # what the scheduled check runs for a patch
_ids = itertools.count(1)


def patch_bot(tmp_path: Path, make_bot: BotFactory, clock: Clock) -> tuple[Bot, Any]:
    """A bot with auto_patch on, one autoupdating app on a server whose window is
    02:00-04:59 UTC, and the clock at T0 (22:13 UTC): outside."""
    site = make_site(tmp_path, auto_patch=True)
    site.add("a.test", labels={"coop-cloud.a_test.autoupdate": "true"})
    bot = make_bot(
        servers={"default": {"window": NIGHTLY}},
        timezone="UTC",
        upgrades={"auto_patch": True},
        clock=clock,
    )
    wire(bot, site)
    windows = bot.services.windows
    assert windows is not None

    async def server_of(domain: str) -> str | None:
        return "default"

    windows.server_of = server_of
    return bot, site


async def scheduled(bot: Bot) -> None:
    await bot.dispatcher.run_scheduled(ASKED)
    await drain(bot)


async def react(bot: Bot, target: str, sender: str, key: str, clock: Clock) -> None:
    reaction = Reaction(ROOM, f"$r-{next(_ids)}", sender, target, key, int(clock.now * 1000))
    await bot.dispatcher.submit(reaction)
    await drain(bot)


async def sweep_at(bot: Bot, clock: Clock, now: float) -> None:
    clock.now = now
    await bot.gate.sweep()
    await drain(bot)


def held(bot: Bot) -> ProposalRow:
    (row,) = bot.store.proposals(State.OPEN)
    return row


def posted(chat: FakeChat, after: int) -> list[str]:
    """What the bot posted (not edits) since `after` messages."""
    return [s.markdown for s in chat.sent[after:]]


async def test_outside_the_window_one_message_says_what_and_when_and_it_runs_then(
    tmp_path: Path, make_bot: BotFactory, clock: Clock
) -> None:
    bot, site = patch_bot(tmp_path, make_bot, clock)
    chat = chat_of(bot)
    await scheduled(bot)
    assert site.apps.deploys == []
    (sent,) = chat.sent  # one message: no separate 🕑 note, no refusal
    assert sent.notify  # an m.text that pings, not a notice
    assert set(sent.mentions) == {ADMIN, OPERATOR}  # who may cancel it; not the viewer
    text = chat.shown(sent.event_id)
    assert "🕑 **Scheduled auto-patch**" in text
    assert f"`!{ASKED}`" in text  # the app and the version
    assert "runs at **2023-11-15 02:00 UTC**" in text
    assert f"the maintenance window `{NIGHTLY}` of server default (UTC)" in text
    assert "An eligible 👎 on this message" in text
    row = held(bot)
    assert (row.policy, row.run_at, row.message_id) == (AUTO_PATCH, OPENS, sent.event_id)
    assert row.expires_at > OPENS
    # The next scheduled check posts nothing new: it is held already.
    await scheduled(bot)
    assert len(bot.store.proposals(State.OPEN)) == 1
    assert "is held already" in chat.texts()[-1]
    # A viewer's 👎 does not count; nothing runs before the window.
    await react(bot, sent.event_id, VIEWER, "👎", clock)
    await sweep_at(bot, clock, OPENS - 1)
    assert site.apps.deploys == []
    assert held(bot).state == State.OPEN
    assert not [t for t in posted(chat, 1) if t.startswith("🕑")]  # no second message
    # The window opens: it runs, once, in the proposal's thread.
    await sweep_at(bot, clock, OPENS + 5)
    await sweep_at(bot, clock, OPENS + 10)
    assert site.apps.deploys == [("a.test", "1.0.1+1.0", "upgrade")]
    done = bot.store.proposal(row.id)
    assert done is not None
    assert done.state == State.DONE


@pytest.mark.parametrize("how", ["reaction", "text"])
async def test_an_eligible_no_before_the_window_cancels_it_for_good(
    tmp_path: Path, make_bot: BotFactory, clock: Clock, how: str
) -> None:
    bot, site = patch_bot(tmp_path, make_bot, clock)
    chat = chat_of(bot)
    await scheduled(bot)
    row = held(bot)
    assert row.message_id is not None
    clock.now = T0 + 3600
    before = len(chat.sent)
    if how == "reaction":
        await react(bot, row.message_id, OPERATOR, "👎", clock)
    else:
        await bot.dispatcher.handle(message(f"!reject {row.id}", OPERATOR))
        await drain(bot)
    cancelled = bot.store.proposal(row.id)
    assert cancelled is not None
    assert cancelled.state == State.REJECTED
    assert "❌ **Rejected** (by @operator:test)" in chat.shown(row.message_id)
    (note,) = [s for s in chat.sent[before:] if s.markdown.startswith("🛑")]
    assert f"The auto-patch `{row.id}` (`!{ASKED}`) is cancelled by {OPERATOR}" in note.markdown
    assert note.notify
    assert OPERATOR in note.mentions
    assert note.thread_root == row.message_id
    details = [r.detail for r in bot.store.audit_log(limit=50) if r.action == "rejected"]
    assert details
    assert row.id in details[0]
    await sweep_at(bot, clock, OPENS + 5)
    assert site.apps.deploys == []
    # The next day's check, inside the window even, does not queue or run it again.
    clock.now = OPENS + 60
    await scheduled(bot)
    assert site.apps.deploys == []
    assert "cancelled this auto-patch" in chat.texts()[-1]
    assert bot.store.proposals(State.OPEN) == []


async def test_a_no_in_the_approving_tally_rejects_without_a_hold_note(
    make_room: Any, risky: Risky
) -> None:
    """The race: a 👎 arrives with the deciding 👍 (veto off, so it does not reject
    alone). The proposal is rejected; the room never reads that it waits."""
    room = windowed_room(make_room, approvals={"veto": False})
    proposal = await room.propose()
    await room.react(proposal.message_id, OP1)
    await room.react(proposal.message_id, ADMIN, "👎")  # 1 of 2: still open
    await room.react(proposal.message_id, OP2)  # deciding: approved, but with a 👎
    assert room.row(proposal).state == State.REJECTED
    assert not [s for s in room.chat.sent if s.markdown.startswith("🕑")], room.chat.texts()
    assert not [s for s in room.chat.sent if s.markdown.startswith("🛑")]  # never held
    assert room.audit("window") == []
    await room.bot.gate.sweep()
    assert risky.calls == []


async def test_a_held_proposal_is_noted_once_and_its_cancel_told(
    make_room: Any, risky: Risky
) -> None:
    """Without a 👎 the 🕑 note comes once; a 👎 later stops it with a 🛑 note."""
    room = windowed_room(make_room, approvals={"veto": False})
    proposal = await approve(room)
    assert len([s for s in room.chat.sent if s.markdown.startswith("🕑")]) == 1
    assert len(room.audit("window")) == 1
    await room.react(proposal.message_id, ADMIN, "👎")
    assert room.row(proposal).state == State.REJECTED
    (note,) = [s for s in room.chat.sent if s.markdown.startswith("🛑")]
    assert "is cancelled by @admin:test before it ran at 2023-11-15 02:00 UTC" in note.markdown
    assert len([s for s in room.chat.sent if s.markdown.startswith("🕑")]) == 1
