"""An Element-like client (matrix-js-sdk with rust crypto, trusting only cross-signed
devices) uses the bot in an encrypted room. Against a bot with cross-signing off the
same client cannot read the bot's answers: that is what makes the first test mean
something.

Needs Node 20+ and `npm ci` in tests/js (make test does it); skipped without them.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import nio
import pytest

from tests.harness.bot import BotRunner, bot_config
from tests.harness.coop import BOT_PASSWORD
from tests.harness.member import DEFAULT_PASSWORD, Member, MemberFactory
from tests.harness.synapse import Synapse

JS_DIR = pathlib.Path(__file__).parent.parent / "js"
SCRIPT = JS_DIR / "element_client.mjs"
NODE = shutil.which("node")


@pytest.fixture(autouse=True)
def _js_client_installed() -> None:
    # `make test` installs it (`npm ci` in tests/js): a missing client is a failure,
    # never a quiet skip.
    assert NODE is not None, "node is not on the PATH"
    assert (JS_DIR / "node_modules" / "matrix-js-sdk").is_dir(), "run `make js` (npm ci)"


@dataclass
class Room:
    synapse: Synapse
    room: str
    bot_id: str
    alice: Member
    js_user: str


@pytest.fixture
async def room(synapse: Synapse, make_member: MemberFactory) -> Room:
    """An encrypted room: alice (nio, E2EE) made it and invited the bot and a user
    that only the Element-like client will log in as."""
    bot_id = synapse.register(f"coopbot-{uuid.uuid4().hex[:8]}", BOT_PASSWORD)
    js_user = synapse.register(f"element-{uuid.uuid4().hex[:8]}", DEFAULT_PASSWORD)
    alice = await make_member(encrypted=True)
    room_id = await alice.create_room(invite=[bot_id, js_user], encrypted=True)
    return Room(synapse, room_id, bot_id, alice, js_user)


@pytest.fixture
async def bot_factory(room: Room, tmp_path: pathlib.Path) -> AsyncIterator[Any]:
    runners: list[BotRunner] = []

    async def start(**matrix: Any) -> BotRunner:
        config = bot_config(
            room.synapse.url, room.bot_id, BOT_PASSWORD, [room.room], tmp_path / "bot", **matrix
        )
        runner = BotRunner(config)
        runners.append(runner)
        await runner.start()
        # The bot joins the room on its first sync: ready once alice sees it there.
        await room.alice.wait_for(
            lambda rid, event: (
                rid == room.room
                and isinstance(event, nio.RoomMemberEvent)
                and event.state_key == room.bot_id
                and event.membership == "join"
            ),
            timeout=30,
        )
        return runner

    yield start
    for runner in runners:
        await runner.stop()


class ElementClient:
    """The node script as a child process: JSON lines on stdout, a hard time limit."""

    def __init__(self, room: Room, send: str | None, expect: str, timeout: float) -> None:
        self.options = {
            "homeserver": room.synapse.url,
            "user_id": room.js_user,
            "password": DEFAULT_PASSWORD,
            "room_id": room.room,
            "bot_id": room.bot_id,
            "send": send,
            "expect": expect,
            "timeout_ms": int(timeout * 1000),
        }
        self.limit = timeout + 60  # login, wasm start-up and sync on a busy machine
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> ElementClient:
        assert NODE is not None
        self.proc = await asyncio.create_subprocess_exec(
            NODE,
            str(SCRIPT),
            json.dumps(self.options),
            cwd=JS_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()  # this child only
            await self.proc.wait()

    async def line(self, event: str) -> dict[str, Any]:
        """The next JSON line of that kind (fails with the client's stderr)."""
        assert self.proc is not None
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(self.limit):
                while raw := await self.proc.stdout.readline():
                    message: dict[str, Any] = json.loads(raw)
                    if message.get("event") == event:
                        return message
        except TimeoutError:
            pass
        self.proc.kill()
        assert self.proc.stderr is not None
        stderr = (await self.proc.stderr.read()).decode(errors="replace")[-4000:]
        pytest.fail(f"the Element-like client gave no {event!r} line; stderr:\n{stderr}")


async def test_an_element_like_client_reads_the_cross_signed_bot(
    room: Room, bot_factory: Any
) -> None:
    await bot_factory()
    async with ElementClient(room, send="!ping", expect="pong", timeout=45) as client:
        ready = await client.line("ready")
        result = await client.line("result")
    assert result["decrypted"], result
    assert "pong" in result["body"]
    # The bot answered this client's own command: it could read it, so the client
    # shared its room key with the bot's (signed) device as well.
    assert result["reply_to"] == ready["sent"]


async def test_the_same_client_cannot_read_a_bot_without_cross_signing(
    room: Room, bot_factory: Any
) -> None:
    await bot_factory(cross_signing=False)
    async with ElementClient(room, send="!ping", expect="pong", timeout=20) as client:
        await client.line("ready")
        # This client withholds its room key from the unsigned bot, which therefore
        # never reads its !ping; alice's nio client shares with every device, so the
        # bot answers her, encrypted for every device in the room.
        await room.alice.send(room.room, "!ping")
        await room.alice.wait_for_reply(room.room, room.bot_id, "pong", timeout=30)
        result = await client.line("result")
    assert not result["decrypted"], result
    assert result["bot_events"] >= 1, result
    assert "UNSIGNED_SENDER_DEVICE" in result["failures"], result
