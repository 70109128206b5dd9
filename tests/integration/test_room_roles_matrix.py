"""Room roles on a real Synapse: the co-op room hears everything; a backups room, given
by its alias, hears only backups and jobs and takes the backup reports. A command of
another family there is answered once with where to ask, !help there lists only what
it hears, and scheduled work reports in the room that takes it."""

from __future__ import annotations

import asyncio
import pathlib
import urllib.parse
import uuid

import nio

from bot.config import parse_config
from bot.core.context import CommandContext
from bot.core.registry import CommandGroup
from bot.ops.matrix import MatrixChat
from commands import GROUPS
from tests.harness.bot import BotRunner
from tests.harness.coop import BOT_PASSWORD, make_coop
from tests.harness.member import MemberFactory
from tests.harness.synapse import Synapse

# A stand-in for the nightly backup: a command of the backups family.
ticks = CommandGroup("backups")


@ticks.command("tick", help="Report a tick.", quick=True)
async def _tick(ctx: CommandContext) -> None:
    await ctx.reply("tock from the backups family")


async def test_two_rooms_with_roles(
    synapse: Synapse, make_member: MemberFactory, tmp_path: pathlib.Path
) -> None:
    coop = await make_coop(synapse, make_member, tmp_path)
    alice, bob = coop.alice, coop.bob
    backups = await alice.create_room(
        name="backups", invite=[coop.bot_id, bob.user_id], power_users={bob.user_id: 50}
    )
    await bob.join(backups)
    alias = f"#backups-{uuid.uuid4().hex[:6]}:localhost"
    await alice.api(
        "PUT",
        f"/_matrix/client/v3/directory/room/{urllib.parse.quote(alias)}",
        {"room_id": backups},
    )
    raw = {
        "matrix": {
            "homeserver": synapse.url,
            "user_id": coop.bot_id,
            "password": BOT_PASSWORD,
            "rooms": [
                coop.room,
                {"room": alias, "hears": ["backups", "jobs"], "reports": ["backups"]},
            ],
            "sync_timeout": "5s",
        },
        "data_dir": str(coop.data_dir),
    }
    runner = BotRunner(parse_config(raw, tmp_path), groups=[*GROUPS, ticks])
    bot = await runner.start()
    assert isinstance(bot.chat, MatrixChat)
    try:
        async with asyncio.timeout(30):
            while await bot.chat.room_for(alias) != backups:  # noqa: ASYNC110 (resolved at start)
                await asyncio.sleep(0.1)
            while backups not in bot.chat.client.rooms:  # noqa: ASYNC110 (joined by its sync)
                await asyncio.sleep(0.1)

        async def reply_to(room: str, command: str, expect: str) -> str:
            sent = await bob.send(room, command)

            def answers(rid: str, event: nio.Event) -> bool:
                relates = event.source.get("content", {}).get("m.relates_to") or {}
                return (
                    rid == room
                    and event.sender == coop.bot_id
                    and relates.get("m.in_reply_to", {}).get("event_id") == sent
                )

            event = await bob.wait_for(answers, 30)
            body = str(event.source["content"]["body"])
            assert expect in body, body
            return sent

        # Another family in the backups room: told where to ask, once.
        await reply_to(backups, "!apps", "is not heard in this room (its `hears` in matrix.rooms")
        again = await bob.send(backups, "!apps")
        # !help there lists only what the room hears (the answer after the quiet one).
        help_id = await bob.send(backups, "!help")
        help_reply = await bob.wait_for_reply(backups, coop.bot_id, "may run here")
        help_body = str(help_reply.source["content"]["body"])
        assert "`!tick`" in help_body
        assert "`!jobs" in help_body
        assert "`!apps" not in help_body
        assert "`!deploy" not in help_body
        assert help_reply.source["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == help_id
        await asyncio.sleep(1)
        for _room, event in await bob.drain():
            relates = event.source.get("content", {}).get("m.relates_to") or {}
            assert relates.get("m.in_reply_to", {}).get("event_id") != again, "told twice"
        # The co-op room hears everything.
        await reply_to(coop.room, "!apps", "")
        await reply_to(coop.room, "!tick", "tock")

        # Scheduled work: the backups family reports in the backups room, the rest at home.
        await bot.dispatcher.run_scheduled("tick")
        await bob.wait_for_reply(backups, coop.bot_id, "tock from the backups family")
        await bot.dispatcher.run_scheduled("ping")
        await bob.wait_for_reply(coop.room, coop.bot_id, "pong")
    finally:
        await runner.stop()
