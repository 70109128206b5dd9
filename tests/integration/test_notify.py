"""Chat.send(notify=True) on a real Synapse: its push rules notify exactly the people
mentioned, and a notice (the default) notifies nobody (.m.rule.suppress_notices)."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.ops.matrix import MatrixChat
from tests.harness.coop import Coop, make_coop
from tests.harness.member import Member, MemberFactory
from tests.harness.synapse import Synapse


@pytest.fixture
async def running(
    synapse: Synapse, make_member: MemberFactory, tmp_path: pathlib.Path
) -> AsyncIterator[tuple[Coop, MatrixChat]]:
    coop = await make_coop(synapse, make_member, tmp_path)
    runner = coop.runner()
    bot = await runner.start()
    assert isinstance(bot.chat, MatrixChat)
    try:
        # nio sends only to rooms its own sync has shown it: wait for that, not for
        # the join event that other members may see first
        async with asyncio.timeout(30):
            while coop.room not in bot.chat.client.rooms:  # noqa: ASYNC110 (nio has no event)
                await asyncio.sleep(0.05)
        yield coop, bot.chat
    finally:
        await runner.stop()


def _highlights(notification: dict[str, Any]) -> bool:
    """A mention of the member (the highlight tweak; its value defaults to true)."""
    return any(
        isinstance(action, dict)
        and action.get("set_tweak") == "highlight"
        and action.get("value", True)
        for action in notification.get("actions", [])
    )


async def notified(member: Member, event_id: str, wait: float = 5.0) -> dict[str, Any] | None:
    """The member's notification for that event, if any arrives within `wait`
    (Synapse evaluates push rules as it persists the event)."""
    async with asyncio.timeout(wait + 5):
        for _ in range(int(wait * 10)):
            for notification in await member.notifications():
                if notification["event"]["event_id"] == event_id:
                    return notification
            await asyncio.sleep(0.1)
    return None


async def test_notify_pings_exactly_the_mentions_and_a_notice_nobody(
    running: tuple[Coop, MatrixChat],
) -> None:
    coop, chat = running
    bob, carol = coop.bob, coop.carol
    ping = await chat.send(
        coop.room, f"{bob.user_id}: your vote is needed", mentions=[bob.user_id], notify=True
    )
    notice = await chat.send(coop.room, f"{bob.user_id}: routine", mentions=[bob.user_id])

    event = await bob.wait_for(lambda room, e: getattr(e, "event_id", None) == ping)
    content = event.source["content"]
    assert content["msgtype"] == "m.text"
    assert content["m.mentions"] == {"user_ids": [bob.user_id]}
    assert content["format"] == "org.matrix.custom.html"

    bob_ping = await notified(bob, ping)
    assert bob_ping is not None
    assert _highlights(bob_ping)  # a mention: highlighted, as phones show it
    # carol was not mentioned: whatever her room setting does, it is no mention of her
    carol_ping = await notified(carol, ping, wait=1)
    assert carol_ping is None or not _highlights(carol_ping)
    # the notice named bob in its mentions too, and still notified nobody
    assert await notified(bob, notice, wait=2) is None
    assert await notified(carol, notice, wait=0.5) is None


async def test_notify_without_mentions_pings_no_one_by_mention(
    running: tuple[Coop, MatrixChat],
) -> None:
    coop, chat = running
    # Typed text naming someone is not a mention: m.mentions is present and empty.
    text = f"done, {coop.bob.user_id} @room"
    event_id = await chat.send(coop.room, text, notify=True)
    event = await coop.bob.wait_for(lambda room, e: getattr(e, "event_id", None) == event_id)
    assert event.source["content"]["m.mentions"] == {"user_ids": []}  # no @room either
    bob_ping = await notified(coop.bob, event_id, wait=2)
    assert bob_ping is None or not _highlights(bob_ping)
