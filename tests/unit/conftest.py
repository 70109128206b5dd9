"""The make_bot fixture: a Bot wired to a FakeChat and a tmp data_dir."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import Bot
from bot.config import parse_config
from bot.core.registry import CommandGroup
from commands import GROUPS
from tests.fakes import FakeChat
from tests.unit.helpers import ADMIN, OPERATOR, VIEWER, BotFactory

# Keyword arguments of make_bot that are passed through to Bot().
BOT_KWARGS = ("clock", "sweep_interval")


@pytest.fixture
async def make_bot(tmp_path: Path) -> AsyncIterator[BotFactory]:
    """make_bot(*groups, members=..., **config sections) -> a Bot on a FakeChat.

    The real command groups (help, jobs, audit) are always included. Members
    default to an admin (power 100), an operator (50) and a viewer (0).
    `clock` and `sweep_interval` are passed through to Bot, not into the config.
    """
    bots: list[Bot] = []

    def factory(
        *groups: CommandGroup,
        members: dict[str, Any] | None = None,
        **sections: Any,
    ) -> Bot:
        bot_kwargs = {key: sections.pop(key) for key in BOT_KWARGS if key in sections}
        sections.setdefault("data_dir", str(tmp_path / f"data{len(bots)}"))
        jobs = {"progress_interval": 0.01, **sections.pop("jobs", {})}
        config = parse_config({"jobs": jobs, **sections}, tmp_path)
        chat = FakeChat(
            members
            if members is not None
            else {ADMIN: (True, 100), OPERATOR: (True, 50), VIEWER: (True, 0)}
        )
        bot = Bot(config, chat=chat, groups=[*GROUPS, *groups], **bot_kwargs)
        bots.append(bot)
        return bot

    yield factory
    for bot in bots:
        await bot.dispatcher.shutdown()
        bot.store.close()
