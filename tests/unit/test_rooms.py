"""Room roles (matrix.rooms[].hears / .reports): a room hears only its families, !help
there lists only those, and scheduled reports go to the room that takes them."""

from __future__ import annotations

import dataclasses
from typing import Any, get_args

import pytest

from bot.app import Bot
from bot.config import FamilyName, ReportName, parse_config
from bot.core.chat import Message
from bot.core.context import CommandContext
from bot.core.registry import CommandGroup, Registry
from bot.errors import ConfigError
from commands import GROUPS
from tests.unit.helpers import ADMIN, OPERATOR, ROOM, BotFactory, chat_of, drain, message

BACKUPS_ROOM = "!backups:test"
ANNOUNCE = "#announce:test"
ANNOUNCE_ID = "!announce:test"


def test_family_names_are_the_command_groups() -> None:
    # The config's vocabulary is the modules' group names: neither can drift.
    assert set(get_args(FamilyName)) == Registry(GROUPS).families()
    assert set(get_args(ReportName)) <= set(get_args(FamilyName))


def matrix(*rooms: Any) -> dict[str, Any]:
    return {"homeserver": "http://hs.test", "user_id": "@bot:test", "password": "pw",
            "rooms": list(rooms)}  # fmt: skip


def test_config_errors_name_the_room_and_key(tmp_path: Any) -> None:
    cases: list[tuple[list[Any], str]] = [
        ([ROOM, {"room": BACKUPS_ROOM, "hears": ["backup"]}], "matrix.rooms.1.hears.0"),
        ([ROOM, {"room": BACKUPS_ROOM, "reports": ["apps"]}], "matrix.rooms.1.reports.0"),
        ([ROOM, {"room": BACKUPS_ROOM, "heard": ["apps"]}], "matrix.rooms.1.heard: unknown key"),
        ([ROOM, {"hears": ["apps"]}], "matrix.rooms.1.room: required key is missing"),
        ([ROOM, ROOM], f"rooms: {ROOM} listed more than once"),
    ]
    for rooms, expected in cases:
        with pytest.raises(ConfigError) as error:
            parse_config({"matrix": matrix(*rooms)}, tmp_path)
        assert expected in str(error.value)
    plain = parse_config({"matrix": matrix(ROOM)}, tmp_path).matrix
    assert plain is not None
    assert plain.room_refs == [ROOM]
    assert plain.rooms[0].hears is None  # a plain room hears everything, as before


@pytest.fixture
def ticks() -> tuple[CommandGroup, list[str]]:
    """A test command in the backups family (scheduled as the nightly work would be)."""
    ran: list[str] = []
    group = CommandGroup("backups")

    @group.command("tick", help="Tick.", quick=True)
    async def tick(ctx: CommandContext) -> None:
        ran.append(ctx.message.room_id)
        await ctx.reply("tock")

    return group, ran


def two_rooms(make_bot: BotFactory, *groups: CommandGroup, announce: bool = False) -> Bot:
    rooms: list[Any] = [ROOM, {"room": BACKUPS_ROOM, "hears": ["backups", "jobs"],
                               "reports": ["backups"]}]  # fmt: skip
    if announce:
        rooms.append({"room": ANNOUNCE, "hears": [], "reports": ["upgrade", "incidents"]})
    bot = make_bot(*groups, matrix=matrix(*rooms))
    chat_of(bot).aliases[ANNOUNCE] = ANNOUNCE_ID
    return bot


def in_room(room: str, body: str, sender: str = OPERATOR) -> Message:
    return dataclasses.replace(message(body, sender), room_id=room)


async def ask(bot: Bot, msg: Message) -> list[str]:
    await bot.dispatcher.handle(msg)
    await drain(bot)
    return chat_of(bot).replies_to(msg.event_id)


async def test_a_room_hears_only_its_families_and_says_where_once(
    make_bot: BotFactory, ticks: tuple[CommandGroup, list[str]]
) -> None:
    group, ran = ticks
    bot = two_rooms(make_bot, group, announce=True)
    assert await ask(bot, in_room(BACKUPS_ROOM, "!tick")) == ["tock"]
    (told,) = await ask(bot, in_room(BACKUPS_ROOM, "!apps"))
    assert "`!apps` is not heard in this room" in told
    assert f"Ask in {ROOM}." in told  # the one room that hears apps
    assert await ask(bot, in_room(BACKUPS_ROOM, "!apps")) == []  # once, then quiet
    assert await ask(bot, in_room(BACKUPS_ROOM, "!apps", ADMIN)) != []  # told per member
    # The announcements room hears nothing but help; the home room hears everything.
    (told,) = await ask(bot, in_room(ANNOUNCE_ID, "!tick"))
    assert f"Ask in {ROOM} or {BACKUPS_ROOM}." in told
    assert await ask(bot, in_room(ROOM, "!tick")) == ["tock"]
    assert ran == [BACKUPS_ROOM, ROOM]
    (ping,) = await ask(bot, in_room(ANNOUNCE_ID, "!ping"))
    assert ping.startswith("pong")


async def test_help_lists_only_what_the_room_hears(
    make_bot: BotFactory, ticks: tuple[CommandGroup, list[str]]
) -> None:
    group, _ = ticks
    bot = two_rooms(make_bot, group)
    (here,) = await ask(bot, in_room(BACKUPS_ROOM, "!help", ADMIN))
    assert "`!tick`" in here
    assert "`!jobs" in here
    assert "`!help" in here
    assert "`!apps" not in here
    assert "`!deploy" not in here
    (home,) = await ask(bot, in_room(ROOM, "!help", ADMIN))
    assert "`!apps" in home
    assert "`!tick`" in home


async def test_scheduled_reports_go_to_the_room_that_takes_them(
    make_bot: BotFactory, ticks: tuple[CommandGroup, list[str]]
) -> None:
    group, ran = ticks
    bot = two_rooms(make_bot, group, announce=True)
    await bot.dispatcher.run_scheduled("tick")  # backups: the backups room takes them
    await drain(bot)
    assert ran == [BACKUPS_ROOM]
    assert chat_of(bot).sent[-1].room == BACKUPS_ROOM
    assert await bot.dispatcher.rooms.report_room("upgrade") == ANNOUNCE_ID  # by alias
    assert await bot.dispatcher.rooms.report_room("incidents") == ANNOUNCE_ID
    plain = two_rooms(make_bot, group)
    assert await plain.dispatcher.rooms.report_room("upgrade") == ROOM  # nobody takes it
