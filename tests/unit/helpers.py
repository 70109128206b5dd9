"""Helpers shared by the unit tests."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from bot.app import Bot
from bot.core.chat import Message
from tests.fakes import FakeChat

ROOM = "!room:test"
ADMIN = "@admin:test"
OPERATOR = "@operator:test"
VIEWER = "@viewer:test"
STRANGER = "@stranger:test"

_event_ids = itertools.count(1)

# make_bot(*groups, members=..., **config sections) -> Bot (see conftest.py)
BotFactory = Callable[..., Bot]


def message(body: str, sender: str = ADMIN, *, thread_root: str | None = None) -> Message:
    return Message(
        ROOM, f"$in-{next(_event_ids)}", sender, body, 1_700_000_000_000, thread_root=thread_root
    )


async def until(predicate: Callable[[], object], what: str = "condition") -> None:
    """Let the loop run until predicate() is true (bounded, so a bug cannot hang the suite)."""
    async with asyncio.timeout(5):
        while not predicate():  # noqa: ASYNC110 (polls state, not an event)
            await asyncio.sleep(0.001)
    assert predicate(), what


async def drain(bot: Bot) -> None:
    async with asyncio.timeout(5):
        await bot.dispatcher.drain()


def chat_of(bot: Bot) -> FakeChat:
    assert isinstance(bot.chat, FakeChat)
    return bot.chat
