"""Apps on a real swarm, driven from a real Matrix room.

A recipe repo made here has four releases: 1.0.0 and 1.1.0 run, 2.0.0 names an
image that does not exist, 2.0.1 crash-loops. bob (operator) asks; alice
(admin) approves; approvals.required is 1 to keep the conversations short.
"""

from __future__ import annotations

import asyncio
import pathlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import docker
import pytest

from bot.ops.abra import parse_env
from bot.ops.swarm import Swarm
from tests.harness.bot import BotRunner
from tests.harness.coop import Coop, make_coop
from tests.harness.dockerd import Dockerd
from tests.harness.member import Member, MemberFactory
from tests.harness.recipes import commit_files, make_app_env, make_recipe
from tests.harness.registry import Registry
from tests.harness.synapse import Synapse

DOMAIN = "demo.coop.test"
STACK = "demo_coop_test"


def compose(image: str, command: str = "sleep 3600", rollback: bool = False) -> str:
    update = "      update_config: {failure_action: rollback, monitor: 3s}\n" if rollback else ""
    return f"""version: "3.8"
services:
  app:
    image: {image}
    command: {command}
    stop_grace_period: 1s
    environment:
      - GREETING=${{GREETING}}
      - ENTRY=${{APP_ENTRY_VERSION}}
    secrets: [db_password]
    volumes: [data:/data]
    deploy:
      endpoint_mode: dnsrr
      restart_policy: {{condition: on-failure, delay: 1s}}
{update}      labels:
        - "coop-cloud.${{STACK_NAME}}.timeout=40"
secrets:
  db_password:
    external: true
    name: ${{STACK_NAME}}_db_password_${{SECRET_DB_PASSWORD_VERSION}}
volumes:
  data:
"""


def releases(registry: str) -> list[tuple[str, dict[str, str]]]:
    """1.0.0's image comes from the local registry (so its digest gets pinned)."""
    crash = '["sh", "-c", "exit 3"]'
    return [
        ("1.0.0+1.0", {"compose.yml": compose(f"{registry}/busybox:1.0"),
                       "abra.sh": "export APP_ENTRY_VERSION=v1\n",
                       "release/1.0.0+1.0": "First release.\n"}),
        ("1.1.0+1.1", {"compose.yml": compose("local/busybox:1.1"),
                       "release/1.1.0+1.1": "Newer busybox.\n"}),
        ("2.0.0+2.0", {"compose.yml": compose("local/nope:2.0", rollback=True),
                       "release/2.0.0+2.0": "BREAKING: an image nobody built.\n"}),
        ("2.0.1+2.0", {"compose.yml": compose("local/busybox:1.1", command=crash),
                       "release/2.0.1+2.0": "Crashes on start.\n"}),
        ("2.0.2+2.0", {"compose.yml": compose("local/busybox:1.1", command=crash, rollback=True),
                       "release/2.0.2+2.0": "Crashes, and swarm rolls back by itself.\n"}),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def images(dockerd: Dockerd, registry: Registry) -> str:
    """The test images; returns the registry's host:port."""
    dockerd.import_image("local/busybox:1.0")
    dockerd.import_image("local/busybox:1.1")
    dockerd.cli("tag", "local/busybox:1.0", f"{registry.host_port}/busybox:1.0")
    dockerd.cli("push", f"{registry.host_port}/busybox:1.0")
    return registry.host_port


@dataclass
class Site:
    coop: Coop
    runner: BotRunner
    abra: pathlib.Path
    docker: docker.DockerClient

    @property
    def room(self) -> str:
        return self.coop.room

    async def run(self, member: Member, command: str, done: str, timeout: float = 120) -> str:  # noqa: ASYNC109
        """Send a command that runs at once; wait for its progress message to say `done`."""
        await member.send(self.room, command)
        reply = await member.wait_for_reply(self.room, self.coop.bot_id, done, timeout)
        return str(reply.source["content"].get("m.new_content", reply.source["content"])["body"])

    async def voted(self, command: str, done: str, timeout: float = 150) -> str:  # noqa: ASYNC109
        """bob asks, alice approves by reaction; wait for the result to say `done`."""
        body = await self.coop.ask(self.coop.bob, command, "Proposal `")
        proposal_id = re.search(r"Proposal `(\w+)`", body)
        assert proposal_id, body
        await self.coop.ask(self.coop.alice, f"!approve {proposal_id.group(1)}", "Counted")
        reply = await self.coop.bob.wait_for_reply(self.room, self.coop.bot_id, done, timeout)
        return str(reply.source["content"].get("m.new_content", reply.source["content"])["body"])

    def labels(self) -> dict[str, str]:
        (service,) = self.docker.services.list(filters={"name": f"{STACK}_app"})
        return dict(service.attrs["Spec"]["Labels"])


@pytest.fixture
async def site(
    synapse: Synapse,
    make_member: MemberFactory,
    dockerd: Dockerd,
    docker_client: docker.DockerClient,
    images: str,
    tmp_path: pathlib.Path,
) -> AsyncIterator[Site]:
    abra = tmp_path / "abra"
    make_recipe(abra / "recipes", "demo", releases(images))
    make_app_env(
        abra,
        "default",
        DOMAIN,
        "demo",
        extra={"GREETING": "hello world"},
        secrets={"db_password": "24"},
    )
    make_app_env(abra, "offline", "far.coop.test", "demo")
    coop = await make_coop(synapse, make_member, tmp_path)
    sections = {
        "abra_dir": str(abra),
        "servers": {
            "default": {"docker_host": dockerd.host},
            "offline": {"docker_host": "unix:///nonexistent/docker.sock"},
        },
        "approvals": {"required": 1},
        "jobs": {"progress_interval": "0.5s"},
    }
    runner = coop.runner(sections)
    await runner.start()
    try:
        yield Site(coop, runner, abra, docker_client)
    finally:
        await runner.stop()
        # The next test deploys the same stack: wait until it is really gone.
        await Swarm(dockerd.host).remove(STACK)
        for secret in docker_client.secrets.list(filters={"name": STACK}):
            secret.remove()


async def test_missing_secrets_are_named_and_nothing_is_created(site: Site) -> None:
    report = await site.run(site.coop.bob, f"!deploy {DOMAIN} 1.0.0+1.0", "Pre-flight failed")
    assert f"{STACK}_db_password_v1" in report
    assert "nothing was created" in report
    assert site.docker.services.list(filters={"name": STACK}) == []
    listed = await site.coop.ask(site.coop.bob, f"!secrets {DOMAIN}", "missing")
    assert f"{STACK}_db_password_v1" in listed
    created = await site.coop.ask(site.coop.bob, f"!secrets {DOMAIN} generate", "Created 1")
    assert f"{STACK}_db_password_v1" in created
    secret = site.docker.secrets.list(filters={"name": f"{STACK}_db_password_v1"})
    assert len(secret) == 1


async def test_deploy_redeploy_version_change_and_rollback(site: Site) -> None:
    coop = site.coop
    await coop.ask(coop.bob, f"!secrets {DOMAIN} generate", "Created 1")
    # A first deploy runs at once, for an operator.
    report = await site.run(coop.bob, f"!deploy {DOMAIN} 1.0.0+1.0", "runs 1.0.0+1.0")
    assert "Converged" in report
    labels = site.labels()
    assert labels[f"coop-cloud.{STACK}.version"] == "1.0.0+1.0"
    assert labels[f"coop-cloud.{STACK}.chaos"] == "false"
    env = parse_env(site.abra / "servers/default" / f"{DOMAIN}.env", "default")
    assert env.pinned_version == "1.0.0+1.0"  # written back, as newer abra does
    (service,) = site.docker.services.list(filters={"name": f"{STACK}_app"})
    container = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert "GREETING=hello world" in container["Env"]
    assert "ENTRY=v1" in container["Env"]
    assert "/busybox:1.0@sha256:" in container["Image"]  # pinned: the registry answered
    # A redeploy of the running version runs at once too.
    await site.run(coop.bob, f"!deploy {DOMAIN}", "runs 1.0.0+1.0")
    # A version change needs a vote.
    report = await site.voted(f"!deploy {DOMAIN} 1.1.0+1.1", "runs 1.1.0+1.1")
    assert "Newer busybox" in report
    status = await coop.ask(coop.carol, f"!status {DOMAIN}", "Version: 1.1.0+1.1")
    assert "local/busybox:1.1" in status
    assert coop.bob.user_id in status
    apps = await coop.ask(coop.carol, "!apps", DOMAIN)
    assert "1.1.0+1.1" in apps  # deployed, and the newest release
    assert "2.0.2+2.0" in apps
    assert "far.coop.test" in apps  # the other server is down
    assert "unreachable" in apps
    # Back to the previous version from history.
    await site.voted(f"!rollback {DOMAIN}", "runs 1.0.0+1.0")
    assert site.labels()[f"coop-cloud.{STACK}.version"] == "1.0.0+1.0"


async def test_failed_releases_are_rolled_back(site: Site) -> None:
    coop = site.coop
    await coop.ask(coop.bob, f"!secrets {DOMAIN} generate", "Created 1")
    await site.run(coop.bob, f"!deploy {DOMAIN} 1.1.0+1.1", "runs 1.1.0+1.1")
    # An image that does not exist is refused before anything changes.
    report = await site.voted(f"!deploy {DOMAIN} 2.0.0+2.0", "Pre-flight failed")
    assert "local/nope:2.0" in report
    assert site.labels()[f"coop-cloud.{STACK}.version"] == "1.1.0+1.1"
    # Tasks that crash are caught by convergence, and the old spec comes back.
    report = await site.voted(f"!deploy {DOMAIN} 2.0.1+2.0", "; the app is", timeout=200)
    assert "Did not converge" in report
    assert "Rolled back" in report
    assert "running the previous version again" in report
    assert site.labels()[f"coop-cloud.{STACK}.version"] == "1.1.0+1.1"
    # With failure_action: rollback, swarm restores the old spec itself; the bot says so.
    report = await site.voted(f"!deploy {DOMAIN} 2.0.2+2.0", "; the app is", timeout=200)
    assert "Swarm rolled the services back" in report
    assert site.labels()[f"coop-cloud.{STACK}.version"] == "1.1.0+1.1"


async def test_chaos_deploys_the_working_tree(site: Site) -> None:
    coop = site.coop
    await coop.ask(coop.bob, f"!secrets {DOMAIN} generate", "Created 1")
    recipe = site.abra / "recipes" / "demo"
    commit_files(recipe, {"compose.yml": compose("local/busybox:1.0")}, "work in progress")
    (recipe / "abra.sh").write_text("export APP_ENTRY_VERSION=chaos\n")  # not committed
    report = await site.run(coop.bob, f"!deploy {DOMAIN} --chaos", "runs")
    assert "Converged" in report
    labels = site.labels()
    assert labels[f"coop-cloud.{STACK}.chaos"] == "true"
    (service,) = site.docker.services.list(filters={"name": f"{STACK}_app"})
    assert "ENTRY=chaos" in service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]


async def test_undeploy_keeps_volumes_and_deploy_again_works(site: Site) -> None:
    coop = site.coop
    await coop.ask(coop.bob, f"!secrets {DOMAIN} generate", "Created 1")
    await site.run(coop.bob, f"!deploy {DOMAIN} 1.0.0+1.0", "runs 1.0.0+1.0")
    report = await site.voted(f"!undeploy {DOMAIN}", "Volumes kept")
    assert f"{STACK}_data" in report
    assert site.docker.services.list(filters={"name": STACK}) == []
    assert site.docker.volumes.get(f"{STACK}_data")
    # Right away: the stack's networks may still be going away.
    await site.run(coop.bob, f"!deploy {DOMAIN} 1.0.0+1.0", "runs 1.0.0+1.0")


async def test_two_deploys_of_one_app_run_one_after_the_other(site: Site) -> None:
    coop = site.coop
    await coop.ask(coop.bob, f"!secrets {DOMAIN} generate", "Created 1")
    await coop.bob.send(site.room, f"!deploy {DOMAIN} 1.0.0+1.0")
    waits = await coop.ask(coop.alice, f"!deploy {DOMAIN} 1.0.0+1.0", "waits")
    assert f"!deploy {DOMAIN} 1.0.0+1.0" in waits
    await coop.bob.wait_for_reply(site.room, coop.bot_id, "runs 1.0.0+1.0", 120)
    await coop.bob.wait_for_reply(site.room, coop.bot_id, "runs 1.0.0+1.0", 120)


async def test_bad_input_changes_nothing(site: Site) -> None:
    coop = site.coop
    for command, answer in [
        ("!deploy nowhere.coop.test", "No app nowhere.coop.test"),
        (f"!deploy {DOMAIN} 9.9.9", "unknown version"),
        (f"!deploy {DOMAIN} '1.0;rm -rf /'", "Usage"),
        ("!deploy ../../etc/passwd", "Usage"),
        (f"!deploy {DOMAIN} '$(reboot)'", "Usage"),
    ]:
        await coop.ask(coop.bob, command, answer)
    assert site.docker.services.list(filters={"name": STACK}) == []


async def test_logs_mask_secrets(site: Site) -> None:
    coop = site.coop
    await coop.ask(coop.bob, f"!secrets {DOMAIN} generate", "Created 1")
    await site.run(coop.bob, f"!deploy {DOMAIN} 1.0.0+1.0", "runs 1.0.0+1.0")
    site.docker.services.list(filters={"name": f"{STACK}_app"})[0].update(
        args=["sh", "-c", "echo DB_PASSWORD=hunter2 visible=yes; sleep 3600"]
    )
    for _ in range(30):
        logs = await coop.ask(coop.bob, f"!logs {DOMAIN} app --tail 20", "")
        if "visible=yes" in logs:
            break
        await asyncio.sleep(1)
    assert "DB_PASSWORD=****" in logs
    assert "hunter2" not in logs
