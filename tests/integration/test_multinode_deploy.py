"""A worker stopped during a deploy, on the three-node swarm (issue 16, part 5): the
deploy's job names the services hit by the node going down and reports no success
that is not; the swarm watch's node incident names the apps that ran there."""

from __future__ import annotations

import asyncio
import pathlib
import re
from collections.abc import AsyncIterator
from typing import Any

import docker
import pytest

from bot.config import BackupsConfig
from bot.core.store import Store
from bot.features.backups import Backups
from bot.features.backups.resume import resume_restore, save_checkpoint
from bot.features.watch import Rules, Thresholds
from bot.ops.restic import Restic
from bot.ops.swarm import Swarm
from bot.ops.swarm.convergence import node_down_line
from bot.ops.swarm.events import SwarmSnapshot, snapshot_sync
from tests.harness.coop import Coop, make_coop
from tests.harness.member import MemberFactory
from tests.harness.multinode import RESTIC_IMAGE, MultiNodeSwarm
from tests.harness.recipes import make_app_env, make_recipe
from tests.harness.synapse import Synapse
from tests.integration.test_multinode import wait_running

DOMAIN = "hit.coop.test"
STACK = "hit_coop_test"


def compose(command: str) -> str:
    # app is pinned to the worker that dies; web may run on either worker.
    return f"""version: "3.8"
services:
  app:
    image: local/busybox:1.0
    command: {command}
    stop_grace_period: 1s
    deploy:
      endpoint_mode: dnsrr
      placement: {{constraints: ["node.hostname == mn-worker-1"]}}
      labels: ["coop-cloud.${{STACK_NAME}}.timeout=40"]
  web:
    image: local/busybox:1.0
    command: {command}
    stop_grace_period: 1s
    deploy:
      endpoint_mode: dnsrr
      placement: {{constraints: ["node.role == worker"]}}
"""


RELEASES = [
    ("1.0.0+1.0", {"compose.yml": compose("sleep 3600"), "release/1.0.0+1.0": "First.\n"}),
    ("1.1.0+1.1", {"compose.yml": compose("sleep 3601"), "release/1.1.0+1.1": "Second.\n"}),
]


@pytest.fixture
async def coop(
    synapse: Synapse,
    make_member: MemberFactory,
    multinode: MultiNodeSwarm,
    tmp_path: pathlib.Path,
) -> AsyncIterator[Coop]:
    abra = tmp_path / "abra"
    make_recipe(abra / "recipes", "hit", RELEASES)
    make_app_env(abra, "default", DOMAIN, "hit")
    c = await make_coop(synapse, make_member, tmp_path)
    sections: dict[str, Any] = {
        "abra_dir": str(abra),
        "servers": {"default": {"docker_host": multinode.manager.host}},
        "approvals": {"required": 1},
        "jobs": {"progress_interval": "0.5s"},
        "upgrades": {"check_schedule": None},
    }
    runner = c.runner(sections)
    await runner.start()
    try:
        yield c
    finally:
        await runner.stop()
        multinode.manager.cli("stack", "rm", STACK, check=False)


async def said(c: Coop, text: str, timeout: float = 240) -> str:  # noqa: ASYNC109
    reply = await c.bob.wait_for_reply(c.room, c.bot_id, text, timeout)
    content = reply.source["content"]
    return str(content.get("m.new_content", content)["body"])


async def snapshot(client: docker.DockerClient, at: float) -> SwarmSnapshot:
    """What the swarm watch sees of the real manager now."""
    nodes, services = await asyncio.to_thread(snapshot_sync, client)
    return SwarmSnapshot(at, nodes, services, True)


# docker-py leaves the socket of a failed connect unclosed (the dead worker's tasks
# are asked about through the manager only, but the watch may try): let only that pass.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_worker_stopped_during_a_deploy_names_what_it_hit(
    coop: Coop,
    multinode: MultiNodeSwarm,
) -> None:
    m, worker = multinode.manager, multinode.node("mn-worker-1")
    await coop.bob.send(coop.room, f"!deploy {DOMAIN} 1.0.0+1.0")
    await said(coop, f"{DOMAIN} runs 1.0.0+1.0", 180)
    assert wait_running(multinode, f"{STACK}_app", 1) == ["mn-worker-1"]
    client = docker.DockerClient(base_url=m.host, version="auto")
    rules = Rules(Thresholds())
    try:
        rules.snapshot("default", await snapshot(client, 0.0))
        body = await coop.ask(coop.bob, f"!deploy {DOMAIN} 1.1.0+1.1", "Proposal `")
        proposal = re.search(r"Proposal `(\w+)`", body)
        assert proposal, body
        await coop.bob.drain()  # the first deploy's messages said "Waiting" too
        await coop.ask(coop.alice, f"!approve {proposal.group(1)}", "Counted")
        await said(coop, "Waiting for convergence", 120)
        worker.kill()
        report = await said(coop, "; the app is")
        assert "Converged" not in report, report
        assert f"{DOMAIN} runs" not in report
        assert "not converged after 40s" in report  # its own budget, not a rounding of it
        assert f"Deploy of {DOMAIN} 1.1.0+1.1 failed" in report, report
        # The pinned service is named with the node that went away.
        assert node_down_line("app", "mn-worker-1") in report, report
        assert "no suitable node" in report, report
        # The watch's node incident, from what the real manager reports now.
        snap = await snapshot(client, 1.0)
        state = {n.hostname: n.state for n in snap.nodes}
        assert state["mn-worker-1"] == "down", state
        decisions = rules.snapshot("default", snap)
        [node] = [d.incident for d in decisions if d.incident.kind == "node"]
        assert node.summary.startswith("node **mn-worker-1** is down; apps that ran there:")
        assert f"`{STACK}`" in node.summary
        # web runs on the other worker again: its stack is told, not the healthy manager.
        assert wait_running(multinode, f"{STACK}_web", 1, timeout=90) == ["mn-worker-2"]
    finally:
        client.close()
        worker.kill()
        worker.revive()
        multinode.wait_ready(timeout=90)


RS_DOMAIN = "rs.coop.test"
RS_STACK = "rs_coop_test"
RS_COMPOSE = """version: "3.8"
services:
  app:
    image: local/busybox:1.0
    command: sleep 3600
    stop_grace_period: 1s
    volumes: [data:/data]
    deploy:
      endpoint_mode: dnsrr
      placement: {constraints: ["node.hostname == mn-worker-1"]}
volumes:
  data:
"""


class OneServer:
    """What Backups uses of Apps here: the server's Swarm adapter."""

    def __init__(self, swarm: Swarm) -> None:
        self._swarm = swarm
        self.prefix = "!"

    def swarm(self, server: str) -> Swarm:
        return self._swarm


async def test_a_restore_on_a_worker_cut_short_is_resumed_there(
    multinode: MultiNodeSwarm,
    tmp_path: pathlib.Path,
) -> None:
    """What the bot finds after a crash mid-way through a restore of data on mn-worker-1
    (the app at 0, the replaced data kept beside it there): resume_restore scales it
    back through the manager and lists the copy on the worker, by a one-off task."""
    m, worker = multinode.manager, multinode.node("mn-worker-1")
    compose = tmp_path / "rs.yml"
    compose.write_text(RS_COMPOSE)
    m.cli("stack", "deploy", "-c", str(compose), RS_STACK)
    manager, on_worker = Swarm(m.host), Swarm(worker.host)
    store = Store(tmp_path / "store.sqlite")
    try:
        assert wait_running(multinode, f"{RS_STACK}_app", 1) == ["mn-worker-1"]
        await manager.scale(RS_STACK, {"app": 0})  # where the crash left it
        folder = worker.volumes_root / f"{RS_STACK}_data"
        kept = folder / "coopbot-previous-c0ffee"
        (kept / "_data").mkdir(parents=True)  # the replaced data, kept on the worker
        (kept / "_data" / "old.txt").write_text("old\n")
        root = m.volumes_root  # the paths as the bot names them (its volumes_root)
        aside = str(root / f"{RS_STACK}_data" / "coopbot-previous-c0ffee")
        staging = str(root / f"{RS_STACK}_data" / "coopbot-restore-c0ffee")  # not there
        assert not pathlib.Path(aside).exists()  # noqa: ASYNC240 - only the worker has it
        save_checkpoint(
            store,
            RS_DOMAIN,
            {
                "step": "1 of 1 path(s) swapped in",
                "server": "default",
                "stack": RS_STACK,
                "snapshot": "feedbeef",
                "replicas": {"app": 1},
                "scope": [f"{RS_STACK}_data/_data"],
                "replaced": [f"{RS_STACK}_data/_data"],
                "aside": [aside],
                "staging": [staging],
                "node": {"id": worker.node_id, "hostname": "mn-worker-1"},
            },
        )
        password = tmp_path / "pw"
        password.write_text("pw\n")
        config = BackupsConfig.model_validate(
            {
                "repository": str(tmp_path / "repo"),
                "password_file": str(password),
                "volumes_root": str(root),
                "remote_image": RESTIC_IMAGE,
            }
        )
        backups = Backups(
            config,
            OneServer(manager),  # type: ignore[arg-type]
            store,
            Restic(str(tmp_path / "repo"), password),
            data_dir=tmp_path,
            node_swarms={"default": {"mn-worker-1": on_worker}},
        )
        text = await resume_restore(backups, store, RS_DOMAIN, "!")
        assert text is not None
        assert text.startswith("The restore (of its data on mn-worker-1) had got to:"), text
        assert f"scaled {RS_DOMAIN} back to app=1: it runs again" in text, text
        assert f"- the data it replaced is kept at `{aside}` on mn-worker-1" in text, text
        assert staging not in text, text
        assert "maybe" not in text, text
        assert wait_running(multinode, f"{RS_STACK}_app", 1) == ["mn-worker-1"]
        assert (kept / "_data" / "old.txt").read_text() == "old\n"  # nothing deleted
        services = m.cli("service", "ls", "--format", "{{.Name}}").stdout
        assert "coopbot-resume" not in services  # the listing task is gone
    finally:
        store.close()
        await manager.close()
        await on_worker.close()
        m.cli("stack", "rm", RS_STACK, check=False)
