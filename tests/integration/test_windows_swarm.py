"""Maintenance windows on the real swarm and Synapse: an upgrade approved outside its
server's window waits for the window, the room is told when it runs, and it runs
once the window opens.

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
from tests.integration.test_upgrades_swarm import DEMO, demo_releases, images, stack  # noqa: F401

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
