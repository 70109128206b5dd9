"""A co-op room on the test Synapse: members with roles, and the bot to run in it."""

from __future__ import annotations

import pathlib
import uuid
from dataclasses import dataclass
from typing import Any

import nio

from tests.harness.bot import BotRunner, bot_config
from tests.harness.member import Member, MemberFactory
from tests.harness.synapse import Synapse

BOT_PASSWORD = "bot-password-for-tests"


@dataclass
class Coop:
    """A co-op room: alice created it (room v12 creator: admin), bob has power 50
    (operator), carol has none (viewer), and the bot is invited."""

    synapse: Synapse
    room: str
    bot_id: str
    alice: Member
    bob: Member
    carol: Member
    data_dir: pathlib.Path

    def runner(
        self,
        sections: dict[str, Any] | None = None,
        bot_options: dict[str, Any] | None = None,
        **matrix: Any,
    ) -> BotRunner:
        """A bot for this room; `sections` are extra top-level config sections,
        `bot_options` go to Bot (clock=, sweep_interval=), the rest to `matrix:`."""
        config = bot_config(
            self.synapse.url,
            self.bot_id,
            BOT_PASSWORD,
            [self.room],
            self.data_dir,
            sections,
            **matrix,
        )
        return BotRunner(config, **(bot_options or {}))

    async def ask(self, member: Member, command: str, expect: str, timeout: float = 30) -> str:  # noqa: ASYNC109
        """Send a command; return the body of the bot's reply to it, which must contain `expect`."""
        event_id = await member.send(self.room, command)

        def answers(room: str, event: nio.Event) -> bool:
            content = event.source.get("content", {})
            relates = content.get("m.relates_to") or {}
            return (
                room == self.room
                and event.sender == self.bot_id
                and relates.get("m.in_reply_to", {}).get("event_id") == event_id
            )

        reply = await member.wait_for(answers, timeout)
        body = str(reply.source["content"]["body"])
        assert expect in body, body
        return body


async def make_coop(
    synapse: Synapse, make_member: MemberFactory, tmp_path: pathlib.Path, encrypted: bool = False
) -> Coop:
    bot_id = synapse.register(f"coopbot-{uuid.uuid4().hex[:8]}", BOT_PASSWORD)
    alice = await make_member(encrypted=encrypted)
    bob = await make_member(encrypted=encrypted)
    carol = await make_member(encrypted=encrypted)
    room = await alice.create_room(
        invite=[bot_id, bob.user_id, carol.user_id],
        encrypted=encrypted,
        power_users={bob.user_id: 50},
    )
    await bob.join(room)
    await carol.join(room)
    return Coop(synapse, room, bot_id, alice, bob, carol, tmp_path / "bot-data")


def bot_messages(coop: Coop, events: list[tuple[str, nio.Event]]) -> list[str]:
    return [
        str(event.source["content"].get("body", ""))
        for room, event in events
        if room == coop.room and event.sender == coop.bot_id and isinstance(event, nio.RoomMessage)
    ]
