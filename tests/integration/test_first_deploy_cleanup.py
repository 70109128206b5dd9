"""A first deploy that never gets healthy leaves nothing behind, on the real test swarm.

The recipe's app fails its healthcheck forever; the deploy made a network and a config
(`file:`) for the stack, and uses a secret the operator generated first. After the
failure the room is told what was removed, the stack's services, network and config
are gone, and the operator's secret is still there (a second try needs it).
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import docker
import pytest

from bot.ops.swarm import Swarm
from tests.harness.coop import Coop, make_coop
from tests.harness.dockerd import Dockerd
from tests.harness.member import MemberFactory
from tests.harness.recipes import make_app_env, make_recipe
from tests.harness.synapse import Synapse

DOMAIN = "sick.coop.test"
STACK = "sick_coop_test"
IMAGE = "local/busybox:1.0"

COMPOSE = f"""version: "3.8"
services:
  app:
    image: {IMAGE}
    command: sleep 3600
    stop_grace_period: 1s
    secrets: [db_password]
    configs:
      - source: greeting
        target: /greeting.txt
    networks: [internal]
    healthcheck:
      test: ["CMD", "false"]
      interval: 1s
      timeout: 1s
      retries: 1
      start_period: 0s
    deploy:
      endpoint_mode: dnsrr
      restart_policy: {{condition: on-failure, delay: 1s}}
networks:
  internal:
configs:
  greeting:
    name: ${{STACK_NAME}}_greeting_${{GREETING_VERSION}}
    file: greeting.txt
secrets:
  db_password:
    external: true
    name: ${{STACK_NAME}}_db_password_${{SECRET_DB_PASSWORD_VERSION}}
"""


@pytest.fixture
async def coop(
    synapse: Synapse,
    make_member: MemberFactory,
    dockerd: Dockerd,
    docker_client: docker.DockerClient,
    tmp_path: pathlib.Path,
) -> AsyncIterator[Coop]:
    dockerd.import_image(IMAGE)
    abra = tmp_path / "abra"
    files = {
        "compose.yml": COMPOSE,
        "greeting.txt": "hello\n",
        "abra.sh": "export GREETING_VERSION=v3\n",
    }
    make_recipe(abra / "recipes", "sick", [("1.0.0+1.0", files)])
    make_app_env(
        abra, "default", DOMAIN, "sick", extra={"TIMEOUT": "20"}, secrets={"db_password": "16"}
    )
    coop = await make_coop(synapse, make_member, tmp_path)
    runner = coop.runner(
        {
            "abra_dir": str(abra),
            "servers": {"default": {"docker_host": dockerd.host}},
            "jobs": {"progress_interval": "0.5s"},
        }
    )
    await runner.start()
    try:
        yield coop
    finally:
        await runner.stop()
        swarm = Swarm(dockerd.host)
        await swarm.remove(STACK)
        await swarm.close()
        for secret in docker_client.secrets.list(filters={"name": STACK}):
            secret.remove()


async def test_a_failed_first_deploy_removes_what_it_created(
    coop: Coop, docker_client: docker.DockerClient
) -> None:
    await coop.ask(coop.bob, f"!secrets {DOMAIN} generate", "Created 1")
    await coop.bob.send(coop.room, f"!deploy {DOMAIN}")
    done = "the app is not deployed (what the deploy created was removed)"
    reply = await coop.bob.wait_for_reply(coop.room, coop.bot_id, done, 180)
    body = str(reply.source["content"].get("m.new_content", reply.source["content"])["body"])
    assert "Did not converge" in body, body
    assert (
        f"Removed what this first deploy created: services {STACK}_app; networks "
        f"{STACK}_internal; configs {STACK}_greeting_v3" in body
    ), body
    owned = {"label": f"com.docker.stack.namespace={STACK}"}
    assert docker_client.services.list(filters=owned) == []
    assert docker_client.networks.list(filters=owned) == []
    assert docker_client.configs.list(filters=owned) == []
    # The operator's secret was not the deploy's: it stays for the next try.
    assert [s.name for s in docker_client.secrets.list(filters={"name": STACK})] == [
        f"{STACK}_db_password_v1"
    ]
