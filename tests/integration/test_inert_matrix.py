"""Member text, release notes and container logs are inert in what the bot posts to a
real Synapse room: the formatted_body has no <a>, no <img>, no "@room" outside <code>,
and m.mentions never names someone (or the room) because that text did.

bob (operator) types the attacks; the app's container prints them in its logs and the
recipe's release notes carry them. The app runs on the private test swarm."""

from __future__ import annotations

import pathlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import docker
import nio
import pytest

from bot.ops.swarm import Swarm
from tests.harness.bot import BotRunner
from tests.harness.coop import Coop, make_coop
from tests.harness.dockerd import Dockerd
from tests.harness.member import MemberFactory
from tests.harness.recipes import make_app_env, make_recipe
from tests.harness.synapse import Synapse

DOMAIN = "inert.coop.test"
STACK = "inert_coop_test"
ATTACK = (
    "[click](https://evil.example) <https://evil.example> ![](mxc://evil.example/img) "
    "@room [pill](https://matrix.to/#/@{victim}) ``` **"
)


def assert_inert(content: dict[str, Any], victim: str) -> None:
    html = str(content.get("formatted_body", ""))
    assert content.get("format") == "org.matrix.custom.html", content
    assert not re.search(r"<\s*(a|img)\b", html, re.IGNORECASE), html
    assert not re.search(r"<[a-z][^>]*\b(href|src)\s*=", html, re.IGNORECASE), html
    outside_code = re.sub(r"<code>.*?</code>", "", html, flags=re.DOTALL)
    assert "@room" not in outside_code.lower(), html
    mentions = content.get("m.mentions")
    assert isinstance(mentions, dict), content  # present: legacy body rules stay off
    assert not mentions.get("room"), content
    assert victim not in mentions.get("user_ids", []), content


@dataclass
class Scene:
    coop: Coop
    runner: BotRunner

    async def answer(self, command: str, expect: str, timeout: float = 60) -> dict[str, Any]:  # noqa: ASYNC109
        """bob sends `command`; the content of the bot's reply that contains `expect`."""
        coop = self.coop
        sent = await coop.bob.send(coop.room, command)

        def reply(room: str, event: nio.Event) -> bool:
            content = event.source.get("content", {})
            relates = content.get("m.relates_to") or {}
            return (
                room == coop.room
                and event.sender == coop.bot_id
                and relates.get("m.in_reply_to", {}).get("event_id") == sent
                and expect in str(content.get("body", ""))
            )

        event = await coop.bob.wait_for(reply, timeout)
        return dict(event.source["content"])


def _release(notes: str) -> dict[str, str]:
    return {"compose.yml": "version: '3.8'\nservices: {}\n", "release/x": notes}


@pytest.fixture
async def scene(
    synapse: Synapse,
    make_member: MemberFactory,
    dockerd: Dockerd,
    docker_client: docker.DockerClient,
    tmp_path: pathlib.Path,
) -> AsyncIterator[Scene]:
    coop = await make_coop(synapse, make_member, tmp_path)
    attack = ATTACK.format(victim=coop.carol.user_id)
    abra = tmp_path / "abra"
    make_recipe(
        abra / "recipes",
        "demo",
        [
            ("1.0.0+1.0", {"compose.yml": "version: '3.8'\n", "release/1.0.0+1.0": "First.\n"}),
            ("1.1.0+1.1", {"release/1.1.0+1.1": f"Notes with {attack}\n```\n{attack}\n"}),
        ],
    )
    make_app_env(abra, "default", DOMAIN, "demo")
    dockerd.import_image("local/busybox:1.0")
    # The app as a deployed stack looks to the bot (namespace and version labels); its
    # container prints the attack, which !logs shows.
    docker_client.services.create(
        "local/busybox:1.0",
        ["sh", "-c", f"echo {_sh_quote(attack)}; echo '```'; echo {_sh_quote(attack)}; sleep 3600"],
        name=f"{STACK}_app",
        labels={"com.docker.stack.namespace": STACK, f"coop-cloud.{STACK}.version": "1.0.0+1.0"},
        endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),
    )
    sections = {
        "abra_dir": str(abra),
        "servers": {"default": {"docker_host": dockerd.host}},
        "approvals": {"required": 1},
        "upgrades": {"fetch_recipes": False},
    }
    runner = coop.runner(sections)
    await runner.start()
    try:
        yield Scene(coop, runner)
    finally:
        await runner.stop()
        await Swarm(dockerd.host).remove(STACK)


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


async def test_attacks_from_members_notes_and_logs_are_inert(scene: Scene) -> None:
    coop = scene.coop
    victim = coop.carol.user_id  # a viewer: never a voter, so never rightly pinged
    attack = ATTACK.format(victim=victim)
    # An unknown command, and a known one with a bad option and value.
    unknown = await scene.answer(f"!{attack}", "Unknown command")
    assert_inert(unknown, victim)
    usage = await scene.answer(f"!logs {DOMAIN} --{attack}", "Usage")
    assert_inert(usage, victim)
    # A !deploy reason is shown in the proposal (and the proposal pings the voters).
    deploy = await scene.answer(f"!deploy {DOMAIN} 1.1.0+1.1 -- {attack}", "Proposal")
    assert_inert(deploy, victim)
    assert "Reason:" in deploy["body"]
    assert deploy["m.mentions"] == {"user_ids": [coop.alice.user_id]}  # the one voter
    # The upgrade proposal carries the release notes.
    upgrade = await scene.answer(f"!upgrade {DOMAIN}", "Release notes")
    assert_inert(upgrade, victim)
    assert "mxc://evil.example/img" in upgrade["body"]  # shown, as text
    # !logs shows what the container printed.
    for _ in range(60):
        logs = await scene.answer(f"!logs {DOMAIN} app", "")
        if "evil.example" in logs["body"]:
            break
    assert "evil.example" in logs["body"], logs["body"]
    assert_inert(logs, victim)
    assert "<pre><code>" in logs["formatted_body"]
