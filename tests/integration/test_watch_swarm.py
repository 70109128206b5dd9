"""The swarm watch on the real private swarm, heard in a real room: a crash-looping
service raises exactly one incident message (mentioning the admin) and a recovery
message once it is fixed; the single node drained and made active again likewise.
Thresholds are small (3 failures, recovered after 5 s of quiet) to keep it short."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import docker
import nio
import pytest

from tests.harness.bot import BotRunner
from tests.harness.coop import Coop, make_coop
from tests.harness.dockerd import Dockerd
from tests.harness.member import MemberFactory
from tests.harness.synapse import Synapse

SERVICE = "watchcrash_app"


@dataclass
class Site:
    coop: Coop
    runner: BotRunner
    dockerd: Dockerd

    async def bot_said(self, text: str, timeout: float = 90) -> nio.RoomMessage:  # noqa: ASYNC109
        """The bot's next new message (not an edit) containing `text`, as alice sees it."""
        coop = self.coop

        def match(room: str, event: nio.Event) -> bool:
            content = event.source.get("content", {})
            return (
                room == coop.room
                and event.sender == coop.bot_id
                and isinstance(event, nio.RoomMessage)
                and (content.get("m.relates_to") or {}).get("rel_type") != "m.replace"
                and text in str(content.get("body", ""))
            )

        event = await coop.alice.wait_for(match, timeout)
        assert isinstance(event, nio.RoomMessage)
        return event

    async def new_messages(self, about: str) -> list[str]:
        """The bot's new messages (not edits) about `about` since the last look."""
        found = []
        for room, event in await self.coop.alice.drain():
            content = event.source.get("content", {})
            if (
                room == self.coop.room
                and event.sender == self.coop.bot_id
                and isinstance(event, nio.RoomMessage)
                and (content.get("m.relates_to") or {}).get("rel_type") != "m.replace"
                and about in str(content.get("body", ""))
            ):
                found.append(str(content["body"]))
        return found


@pytest.fixture
async def site(
    synapse: Synapse,
    make_member: MemberFactory,
    dockerd: Dockerd,
    docker_client: docker.DockerClient,
    tmp_path: pathlib.Path,
) -> AsyncIterator[Site]:
    dockerd.import_image("local/busybox:1.0")
    (tmp_path / "abra" / "servers" / "default").mkdir(parents=True)
    coop = await make_coop(synapse, make_member, tmp_path)
    runner = coop.runner(
        {
            "abra_dir": str(tmp_path / "abra"),
            "servers": {"default": {"docker_host": dockerd.host}},
            "access": {"admins": [coop.alice.user_id]},
            "upgrades": {"check_schedule": None},
            "watch": {
                "failures": 3,
                "window": "5m",
                "recover_after": "5s",
                "poll_interval": "2s",
                "fallback_interval": "2s",
            },
        }
    )
    await runner.start()
    try:
        yield Site(coop, runner, dockerd)
    finally:
        await runner.stop()
        dockerd.cli("service", "rm", SERVICE, check=False)
        for node in docker_client.nodes.list():
            dockerd.cli("node", "update", "--availability", "active", node.id, check=False)


async def test_a_crash_loop_is_one_incident_then_one_recovery(site: Site) -> None:
    site.dockerd.cli(
        "service", "create", "--detach", "--name", SERVICE,
        "--label", "com.docker.stack.namespace=watchcrash",
        "--restart-condition", "on-failure", "--restart-delay", "1s",
        "--endpoint-mode", "dnsrr", "--stop-grace-period", "1s",
        "local/busybox:1.0", "sh", "-c", "exit 3",
    )  # fmt: skip
    opened = await site.bot_said(SERVICE, timeout=90)
    body = str(opened.source["content"]["body"])
    assert "Incident #" in body, body
    assert "task failure(s)" in body, body
    assert site.coop.alice.user_id in body
    content = opened.source["content"]
    assert content["msgtype"] == "m.text"  # notifies: a notice would not
    assert content["m.mentions"] == {"user_ids": [site.coop.alice.user_id]}
    # It keeps crashing for a while: still the one message (edited, not repeated).
    await asyncio.sleep(8)
    assert await site.new_messages(SERVICE) == []
    site.dockerd.cli("service", "update", "--detach", "--args", "sleep 3600", SERVICE)
    recovered = await site.bot_said("Recovered", timeout=90)
    assert SERVICE in str(recovered.source["content"]["body"])
    # !incidents agrees, and nothing more is said about it.
    listed = await site.coop.ask(site.coop.bob, "!incidents", "No open incident")
    assert "✅" in listed
    assert await site.new_messages(f"on **default**: **{SERVICE}**") == []


async def test_the_node_drained_and_back(site: Site, docker_client: docker.DockerClient) -> None:
    (node,) = docker_client.nodes.list()
    hostname = node.attrs["Description"]["Hostname"]
    site.dockerd.cli("node", "update", "--availability", "drain", node.id)
    opened = await site.bot_said(f"node **{hostname}**", timeout=60)
    assert "drain" in str(opened.source["content"]["body"])
    listed = await site.coop.ask(site.coop.bob, "!incidents", "open incident")
    assert hostname in listed
    site.dockerd.cli("node", "update", "--availability", "active", node.id)
    recovered = await site.bot_said("Recovered", timeout=60)
    assert hostname in str(recovered.source["content"]["body"])
    # (alice also saw the !incidents answer: only new incident messages count)
    later = [m for m in await site.new_messages(hostname) if "Incident #" in m]
    assert later == []
