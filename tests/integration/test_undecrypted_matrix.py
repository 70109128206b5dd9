"""A member whose client withholds the room key from the bot's device is not heard: the
bot counts the events it cannot decrypt, asks for the keys, and /healthz and
`coopbot check` name the member with a next step. Once the member's client shares the
key again, the bot answers and the problem is gone. Real Synapse, real E2EE (nio)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import socket
import subprocess
import sys

import aiohttp
import nio
import yaml

from tests.harness.coop import BOT_PASSWORD, make_coop
from tests.harness.member import Member, MemberFactory
from tests.harness.synapse import Synapse


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def healthz(port: int) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/healthz") as response,
    ):
        return response.status, await response.text()


async def bot_devices(member: Member, bot_id: str) -> list[nio.crypto.OlmDevice]:
    """The bot's devices as the member's client knows them (after a key query)."""
    async with asyncio.timeout(30):
        while True:
            await member.drain()
            devices = list(member.client.device_store.active_user_devices(bot_id))
            if devices:
                return devices
            await asyncio.sleep(0.2)


async def test_a_member_the_bot_cannot_decrypt_is_reported_until_keys_flow(
    synapse: Synapse, make_member: MemberFactory, tmp_path: pathlib.Path
) -> None:
    coop = await make_coop(synapse, make_member, tmp_path, encrypted=True)
    port = free_port()
    runner = coop.runner({"web": {"listen": f"127.0.0.1:{port}"}}, encryption=True)
    bot = await runner.start()
    try:
        alice = coop.alice
        # The bot answers alice while her client shares keys with it.
        for _ in range(3):  # the first message may race the bot's key upload
            await alice.send(coop.room, "!ping")
            try:
                await alice.wait_for_reply(coop.room, coop.bot_id, "pong", 15)
                break
            except TimeoutError:
                continue
        else:
            raise AssertionError("the bot never answered in the encrypted room")
        assert bot.chat.problems() == []
        assert await healthz(port) == (200, "ok\n")

        # alice's client withholds the room key from the bot's device, as Element does
        # for a device it excludes; a new session is started so the old key is no help.
        for device in await bot_devices(alice, coop.bot_id):
            alice.client.blacklist_device(device)
        alice.client.invalidate_outbound_session(coop.room)
        for _ in range(2):
            await alice.send(coop.room, "!ping")
        wanted = f"2 encrypted message(s) from {alice.user_id}"
        async with asyncio.timeout(30):
            while not any(p.startswith(wanted) for p in bot.chat.problems()):  # noqa: ASYNC110
                await asyncio.sleep(0.2)  # (the bot's sync loop counts)
        (problem,) = bot.chat.problems()
        assert problem.startswith(f"2 encrypted message(s) from {alice.user_id}"), problem
        assert "Next step" in problem
        status, text = await healthz(port)
        assert status == 503
        assert f"problem: 2 encrypted message(s) from {alice.user_id}" in text

        # `coopbot check` (another process, beside the running bot) reports it too.
        config = {
            "matrix": {
                "homeserver": synapse.url,
                "user_id": coop.bot_id,
                "password": BOT_PASSWORD,
                "rooms": [coop.room],
                "encryption": True,
            },
            "data_dir": str(coop.data_dir),
        }
        path = tmp_path / "check.yaml"
        path.write_text(yaml.safe_dump(config))
        checked = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bot", "check", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"},
        )
        assert f"FAIL  2 encrypted message(s) from {alice.user_id}" in checked.stdout, (
            checked.stdout + checked.stderr
        )
        assert checked.returncode == 1

        # alice's client trusts the bot's device again and shares a new key: heard again.
        for device in await bot_devices(alice, coop.bot_id):
            alice.client.unblacklist_device(device)
        alice.client.invalidate_outbound_session(coop.room)
        await alice.send(coop.room, "!ping")
        await alice.wait_for_reply(coop.room, coop.bot_id, "pong", 30)
        assert bot.chat.problems() == []
        assert await healthz(port) == (200, "ok\n")
    finally:
        await runner.stop()
