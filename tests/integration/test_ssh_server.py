"""An ssh:// server, reached as abra reaches it: the system ssh client and an ssh config.

A real sshd (tests/harness/sshd.py) on 127.0.0.1 stands in for the co-op's server; its
remote `docker` talks to the private test dockerd. The bot's config names the server
`ssh://coop-server`, an alias of the (throwaway) ssh config, as an admin's ~/.ssh/config
would; the SDK and the docker CLI (`docker stack deploy`) both go through it.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Iterator

import docker
import pytest

from bot.ops.swarm import Swarm
from tests.harness.bot import BotRunner
from tests.harness.coop import Coop, make_coop
from tests.harness.dockerd import Dockerd
from tests.harness.member import MemberFactory
from tests.harness.recipes import make_app_env, make_recipe
from tests.harness.sshd import Sshd
from tests.harness.synapse import Synapse

DOMAIN = "ssh.coop.test"
STACK = "ssh_coop_test"

COMPOSE = """version: "3.8"
services:
  app:
    image: local/busybox:ssh
    command: ["sh", "-c", "echo hello over ssh; exec sleep 3600"]
    stop_grace_period: 1s
    deploy:
      endpoint_mode: dnsrr
      labels:
        - "coop-cloud.${STACK_NAME}.timeout=40"
"""


@pytest.fixture(scope="module")
def sshd(dockerd: Dockerd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    dockerd.import_image("local/busybox:ssh")
    server = Sshd(tmp_path_factory.mktemp("sshd"), dockerd.host)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
async def site(
    synapse: Synapse,
    make_member: MemberFactory,
    sshd: Sshd,
    dockerd: Dockerd,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[Coop, BotRunner]]:
    # `ssh` by name finds the wrapper that reads the throwaway ssh config.
    monkeypatch.setenv("PATH", sshd.client_env()["PATH"])
    abra = tmp_path / "abra"
    make_recipe(abra / "recipes", "demo", [("1.0.0+1.0", {"compose.yml": COMPOSE})])
    make_app_env(abra, sshd.alias, DOMAIN, "demo")
    make_app_env(abra, sshd.refused_alias, "refused.coop.test", "demo")
    make_app_env(abra, sshd.closed_alias, "closed.coop.test", "demo")
    coop = await make_coop(synapse, make_member, tmp_path)
    servers = {a: {"docker_host": sshd.url(a)} for a in (sshd.alias, sshd.refused_alias)}
    servers[sshd.closed_alias] = {"docker_host": sshd.url(sshd.closed_alias)}
    runner = coop.runner(
        {"abra_dir": str(abra), "servers": servers, "jobs": {"progress_interval": "0.5s"}}
    )
    await runner.start()
    try:
        yield coop, runner
    finally:
        await runner.stop()
        await Swarm(dockerd.host).remove(STACK)


async def test_apps_deploy_and_logs_over_ssh(
    site: tuple[Coop, BotRunner], docker_client: docker.DockerClient
) -> None:
    coop, _ = site
    apps = await coop.ask(coop.bob, "!apps", DOMAIN)
    assert "not deployed" in apps
    await coop.bob.send(coop.room, f"!deploy {DOMAIN} 1.0.0+1.0")
    reply = await coop.bob.wait_for_reply(coop.room, coop.bot_id, "runs 1.0.0+1.0", 120)
    content = reply.source["content"]
    assert "Converged" in str(content.get("m.new_content", content)["body"])
    (service,) = docker_client.services.list(filters={"name": f"{STACK}_app"})
    assert service.attrs["Spec"]["Labels"][f"coop-cloud.{STACK}.version"] == "1.0.0+1.0"
    apps = await coop.ask(coop.bob, "!apps", DOMAIN)
    assert "1/1 running" in apps
    logs = await coop.ask(coop.bob, f"!logs {DOMAIN}", "hello over ssh", timeout=60)
    assert "Traceback" not in logs


async def test_unreachable_and_refusing_servers_are_named_in_a_sentence(
    site: tuple[Coop, BotRunner], sshd: Sshd
) -> None:
    coop, _ = site
    apps = await coop.ask(coop.bob, "!apps", "closed.coop.test")
    lines = {
        line.split(":")[0].lstrip("⚠ "): line for line in apps.splitlines() if line.startswith("⚠")
    }
    refused = lines[sshd.refused_alias]
    closed = lines[sshd.closed_alias]
    assert "Permission denied (publickey)" in refused, refused
    assert "Connection refused" in closed, closed
    for line in (refused, closed):
        assert line.count("\n") == 0
        assert "Traceback" not in line
        assert "Connection aborted" not in line  # the HTTP library's words, not ssh's
