"""/healthz and /metrics follow the sync loop through a homeserver outage;
`coopbot check` reports on the real homeserver, docker and restic."""

from __future__ import annotations

import asyncio
import os
import pathlib
import socket
import subprocess
import sys
from collections.abc import Iterator

import aiohttp
import pytest
import yaml

from tests.harness.bot import BotRunner, bot_config
from tests.harness.coop import BOT_PASSWORD, make_coop
from tests.harness.dockerd import Dockerd
from tests.harness.member import DEFAULT_PASSWORD, Member, MemberFactory
from tests.harness.synapse import Synapse


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def own_synapse(tmp_path: pathlib.Path) -> Iterator[Synapse]:
    """A Synapse of this test's own, so stopping it disturbs no other test."""
    server = Synapse(tmp_path / "synapse")
    try:
        server.start()
        yield server
    finally:
        server.stop()


async def status(session: aiohttp.ClientSession, url: str) -> int:
    try:
        async with session.get(url) as response:
            return response.status
    except aiohttp.ClientConnectionError:
        return -1


async def wait_status(session: aiohttp.ClientSession, url: str, wanted: int) -> None:
    async with asyncio.timeout(90):
        while await status(session, url) != wanted:  # noqa: ASYNC110  (polling HTTP)
            await asyncio.sleep(0.2)


async def test_health_and_metrics_through_a_homeserver_outage(
    own_synapse: Synapse, tmp_path: pathlib.Path
) -> None:
    bot_id = own_synapse.register("coopbot", "bot-password")
    alice = Member(
        own_synapse.url, own_synapse.register("alice", DEFAULT_PASSWORD), DEFAULT_PASSWORD
    )
    await alice.login()
    room = await alice.create_room(invite=[bot_id])
    listen = f"127.0.0.1:{free_port()}"
    config = bot_config(own_synapse.url, bot_id, "bot-password", [room], tmp_path / "bot")
    config = config.model_copy(update={"web": config.web.model_copy(update={"listen": listen})})
    runner = BotRunner(config)
    await runner.start()
    health, metrics = f"http://{listen}/healthz", f"http://{listen}/metrics"
    try:
        async with aiohttp.ClientSession() as session:
            assert await status(session, health) == 200
            await alice.send(room, "!ping")
            await alice.wait_for_reply(room, bot_id, "pong")
            async with session.get(metrics) as response:
                text = await response.text()
            assert 'coopbot_commands_total{command="ping",outcome="accepted"} 1.0' in text
            assert "coopbot_sync_lag_seconds" in text

            port = own_synapse.port
            own_synapse.stop()
            await wait_status(session, health, 503)
            own_synapse.start(port)
            await wait_status(session, health, 200)
            # The bot reconnected by itself and hears commands again.
            await alice.send(room, "!ping")
            await alice.wait_for_reply(room, bot_id, "pong", timeout=60)
    finally:
        await runner.stop()
        await alice.close()


def run_check(
    config: dict[str, object], tmp_path: pathlib.Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "bot", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_check_reports_every_component(
    synapse: Synapse,
    dockerd: Dockerd,
    tmp_path: pathlib.Path,
) -> None:
    bot_id = synapse.register("coopbot-check", "check-password")
    secret = tmp_path / "password"
    secret.write_text("check-password\n")
    config: dict[str, object] = {
        "matrix": {
            "homeserver": synapse.url,
            "user_id": bot_id,
            "password_file": "password",
            "rooms": ["!any"],
        },
        "data_dir": "data",
        "abra_dir": "abra",
        "servers": {"swarm1": {"docker_host": dockerd.host}},
        "backups": {
            "repository": str(tmp_path / "repo"),
            "password_file": "restic-password",
            "volumes_root": str(tmp_path),
        },
    }
    (tmp_path / "abra").mkdir()
    restic_password = tmp_path / "restic-password"
    restic_password.write_text("restic-check-password\n")
    env: dict[str, str] = {}
    fresh = run_check(config, tmp_path, env)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "none yet, made on the first backup" in fresh.stdout
    subprocess.run(
        ["restic", "init"],
        env={**os.environ, "RESTIC_REPOSITORY": str(tmp_path / "repo"),
             "RESTIC_PASSWORD_FILE": str(restic_password)},
        check=True,
        capture_output=True,
    )  # fmt: skip
    good = run_check(config, tmp_path, env)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "FAIL" not in good.stdout
    for expected in (
        "homeserver",
        "password login",
        "server swarm1: docker answers",
        "swarm active",
        "abra_dir",
        "restic",
        f"backups.volumes_root {tmp_path} exists",
        f"restic repository {tmp_path / 'repo'} opens (0 snapshots)",
    ):
        assert expected in good.stdout

    secret.write_text("wrong-password")
    restic_password.write_text("not-the-restic-password\n")
    config["servers"] = {"gone": {"docker_host": "unix:///nonexistent/docker.sock"}}
    bad = run_check(config, tmp_path, env)
    assert bad.returncode == 1
    assert "FAIL  password login" in bad.stdout
    assert "FAIL  server gone: docker is unreachable" in bad.stdout
    assert f"FAIL  restic repository {tmp_path / 'repo'}: wrong password" in bad.stdout
    assert "not-the-restic-password" not in bad.stdout

    invalid = run_check({"matrix": {"homeserver": "ftp://x"}, "bogus": 1}, tmp_path, env)
    assert invalid.returncode == 2
    assert "matrix.homeserver" in invalid.stderr
    assert "bogus: unknown key" in invalid.stderr


async def test_check_warns_when_the_room_cannot_pass_a_vote(
    synapse: Synapse, make_member: MemberFactory, tmp_path: pathlib.Path
) -> None:
    # alice (creator: admin) and bob (power 50: operator) are the only voters; carol
    # is a viewer. The defaults (2 approvals besides the requester) need three.
    coop = await make_coop(synapse, make_member, tmp_path)
    runner = coop.runner()
    await runner.start()  # the bot joins the room, so its state can be read
    await runner.stop()
    config: dict[str, object] = {
        "matrix": {
            "homeserver": synapse.url,
            "user_id": coop.bot_id,
            "password": BOT_PASSWORD,
            "rooms": [coop.room],
        },
        "data_dir": str(coop.data_dir),
    }
    env = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    short = await asyncio.to_thread(run_check, config, tmp_path, env)
    warnings = [line for line in short.stdout.splitlines() if line.startswith("WARN  ")]
    assert len(warnings) == 1, short.stdout + short.stderr
    (warning,) = warnings
    assert f"room {coop.room}: votes on " in warning
    assert "so 3 eligible members, but the room has 2" in warning
    assert coop.alice.user_id in warning
    assert coop.bob.user_id in warning
    assert coop.carol.user_id not in warning  # a viewer does not vote
    assert "password login" in short.stdout  # the rest of the check ran
    # The co-op lowers the bar (or gives carol power): no warning.
    config["approvals"] = {"allow_self_approval": True}
    met = await asyncio.to_thread(run_check, config, tmp_path, env)
    assert "WARN" not in met.stdout, met.stdout
    config["approvals"] = {}
    await coop.alice.set_power_levels(coop.room, {coop.bob.user_id: 50, coop.carol.user_id: 50})
    met = await asyncio.to_thread(run_check, config, tmp_path, env)
    assert "WARN" not in met.stdout, met.stdout
