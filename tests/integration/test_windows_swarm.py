"""Maintenance windows on the real swarm and Synapse: an upgrade approved outside its
server's window waits for the window, the room is told when it runs, and it runs
once the window opens; a scheduled auto-patch outside it is one message a 👎 cancels.

The bot's clock is injected (Bot(clock=...), the same clock for the gate and the
windows): it runs at real speed, set to two minutes before the window's first
minute, and jumps into the window once the hold is seen. Votes and messages keep
the homeserver's real timestamps."""

from __future__ import annotations

import asyncio
import pathlib
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import docker

from bot.ops.swarm import Swarm
from tests.harness.coop import make_coop
from tests.harness.dockerd import Dockerd
from tests.harness.member import MemberFactory
from tests.harness.recipes import make_app_env, make_recipe
from tests.harness.synapse import Synapse
from tests.integration.test_upgrades_swarm import (  # noqa: F401 (images: a fixture)
    DEMO,
    compose,
    demo_releases,
    images,
    stack,
)

WINDOW = "* 3 * * *"  # every day 03:00-03:59 UTC


@dataclass
class Clock:
    offset: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def set(self, when: datetime) -> None:
        self.offset = when.timestamp() - time.time()


def version(client: docker.DockerClient) -> str:
    (service,) = client.services.list(filters={"name": f"{stack(DEMO)}_app"})
    return str(service.attrs["Spec"]["Labels"][f"coop-cloud.{stack(DEMO)}.version"])


async def test_an_upgrade_approved_outside_the_window_waits_for_it(
    synapse: Synapse,
    make_member: MemberFactory,
    dockerd: Dockerd,
    docker_client: docker.DockerClient,
    images: str,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    abra = tmp_path / "abra"
    make_recipe(abra / "recipes", "demo", demo_releases(images))
    make_app_env(abra, "default", DEMO, "demo")
    coop = await make_coop(synapse, make_member, tmp_path)
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    opens = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 3, 0, tzinfo=UTC)
    clock = Clock()
    clock.set(opens - timedelta(minutes=2))
    config = {
        "abra_dir": str(abra),
        "timezone": "UTC",
        "servers": {"default": {"docker_host": dockerd.host, "window": WINDOW}},
        "approvals": {"required": 1},
        "jobs": {"progress_interval": "0.5s"},
        "upgrades": {"check_schedule": None},
    }
    runner = coop.runner(config, bot_options={"clock": clock, "sweep_interval": 0.5})
    await runner.start()
    try:
        await coop.bob.send(coop.room, f"!deploy {DEMO} 1.0.0+1.0")  # not windowed
        await coop.bob.wait_for_reply(coop.room, coop.bot_id, "runs 1.0.0+1.0", 150)

        body = await coop.ask(coop.bob, f"!upgrade {DEMO} 1.0.1+1.0", "Proposal `")
        found = re.search(r"Proposal `(\w+)`", body)
        assert found, body
        await coop.ask(coop.alice, f"!approve {found.group(1)}", "Counted")
        note = await coop.bob.wait_for_reply(coop.room, coop.bot_id, "🕑 Proposal", 30)
        text = str(note.source["content"]["body"])
        assert f"runs at **{opens:%Y-%m-%d} 03:00 UTC**" in text, text
        assert f"the maintenance window `{WINDOW}` of server default (UTC)" in text, text
        assert "👎 until then cancels it" in text
        # Outside the window nothing runs, however long the sweeper looks.
        await asyncio.sleep(3)
        assert version(docker_client) == "1.0.0+1.0"
        bot = runner.bot
        assert bot is not None
        (row,) = [r for r in bot.store.proposals() if r.id == found.group(1)]
        assert row.run_at == opens.timestamp()

        clock.set(opens + timedelta(seconds=5))  # the window opens
        await coop.bob.wait_for_reply(coop.room, coop.bot_id, "runs 1.0.1+1.0", 150)
        assert version(docker_client) == "1.0.1+1.0"
    finally:
        await runner.stop()
        swarm = Swarm(dockerd.host)
        await swarm.remove(stack(DEMO))
        await swarm.close()


def patch_releases(registry: str) -> list[tuple[str, dict[str, str]]]:
    """demo's patch releases, labelled for auto-patching."""
    image, labels = f"{registry}/upg/busybox:1.0", ["coop-cloud.${STACK_NAME}.autoupdate=true"]
    return [
        (tag, {"compose.yml": compose(image, tag.split("+")[0], labels),
               f"release/{tag}": "A patch.\n"})
        for tag in ("1.0.0+1.0", "1.0.1+1.0", "1.0.2+1.0")
    ]  # fmt: skip


async def test_an_auto_patch_outside_the_window_is_one_message_a_no_cancels(
    synapse: Synapse,
    make_member: MemberFactory,
    dockerd: Dockerd,
    docker_client: docker.DockerClient,
    images: str,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    """The scheduler's auto-patch outside the window (as the scheduled check runs it:
    Dispatcher.run_scheduled) is one pinging m.text saying app, version and when; bob's
    👎 on it cancels it (a 🛑 note; it does not run in the window, and is not queued
    again); the next one runs when the window opens."""
    abra = tmp_path / "abra"
    make_recipe(abra / "recipes", "demo", patch_releases(images))
    make_app_env(abra, "default", DEMO, "demo")
    coop = await make_coop(synapse, make_member, tmp_path)
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    opens = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 3, 0, tzinfo=UTC)
    clock = Clock()
    clock.set(opens - timedelta(minutes=2))
    config = {
        "abra_dir": str(abra),
        "timezone": "UTC",
        "servers": {"default": {"docker_host": dockerd.host, "window": WINDOW}},
        "jobs": {"progress_interval": "0.5s"},
        "upgrades": {"check_schedule": None, "auto_patch": True},
    }
    runner = coop.runner(config, bot_options={"clock": clock, "sweep_interval": 0.5})
    await runner.start()
    try:
        await coop.bob.send(coop.room, f"!deploy {DEMO} 1.0.0+1.0")  # not windowed
        await coop.bob.wait_for_reply(coop.room, coop.bot_id, "runs 1.0.0+1.0", 150)
        bot = runner.bot
        assert bot is not None

        await bot.dispatcher.run_scheduled(f"upgrade {DEMO} 1.0.1+1.0")
        held = await coop.bob.wait_for_reply(coop.room, coop.bot_id, "Scheduled auto-patch", 30)
        content = held.source["content"]
        text = str(content["body"])
        assert content["msgtype"] == "m.text", content  # it pings, unlike a notice
        assert set(content["m.mentions"]["user_ids"]) >= {coop.alice.user_id, coop.bob.user_id}
        assert f"upgrade {DEMO} 1.0.1+1.0" in text, text
        assert f"runs at **{opens:%Y-%m-%d} 03:00 UTC**" in text, text
        assert f"the maintenance window `{WINDOW}` of server default (UTC)" in text, text
        await coop.bob.react(coop.room, held.event_id, "👎")
        note = await coop.bob.wait_for_reply(coop.room, coop.bot_id, "🛑 The auto-patch", 30)
        assert f"cancelled by {coop.bob.user_id}" in str(note.source["content"]["body"])
        (cancelled,) = [r for r in bot.store.proposals("rejected") if r.message_id == held.event_id]
        assert any(
            a.action == "rejected" and cancelled.id in a.detail
            for a in bot.store.audit_log(limit=100)
        )

        clock.set(opens + timedelta(seconds=5))  # inside the window: it stays cancelled
        await bot.dispatcher.run_scheduled(f"upgrade {DEMO} 1.0.1+1.0")
        await coop.bob.wait_for_reply(coop.room, coop.bot_id, "cancelled this auto-patch", 30)
        await asyncio.sleep(2)
        assert version(docker_client) == "1.0.0+1.0"

        clock.set(opens - timedelta(minutes=2))  # the next patch, outside again
        await bot.dispatcher.run_scheduled(f"upgrade {DEMO} 1.0.2+1.0")
        again = await coop.bob.wait_for_reply(coop.room, coop.bot_id, "1.0.2+1.0`", 30)
        assert "Scheduled auto-patch" in str(again.source["content"]["body"])
        await asyncio.sleep(3)  # held: the sweeper leaves it
        assert version(docker_client) == "1.0.0+1.0"
        clock.set(opens + timedelta(seconds=5))
        await coop.bob.wait_for_reply(coop.room, coop.bot_id, "runs 1.0.2+1.0", 150)
        assert version(docker_client) == "1.0.2+1.0"
    finally:
        await runner.stop()
        swarm = Swarm(dockerd.host)
        await swarm.remove(stack(DEMO))
        await swarm.close()
