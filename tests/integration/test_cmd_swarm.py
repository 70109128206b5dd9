"""!cmd on the real test swarm, from a real room: a function of the recipe's abra.sh run
inside the app's running container, as `abra app cmd` runs it.

The recipe is made here: its abra.sh defines functions (POSIX `name()` and bash
`function name` forms). No corpus recipe's abra.sh defines a function (checked in
test_corpus_deploy: bonfire's answer lists none), so this recipe is the one that runs.
bob (operator) asks; carol (viewer) may not.
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

DOMAIN = "cmd.coop.test"
STACK = "cmd_coop_test"
IMAGE = "local/busybox:1.0"

COMPOSE = f"""version: "3.8"
services:
  app:
    image: {IMAGE}
    command: sleep 3600
    stop_grace_period: 1s
    secrets: [db_password]
    deploy:
      endpoint_mode: dnsrr
      labels:
        - "coop-cloud.${{STACK_NAME}}.timeout=60"
  worker:
    image: {IMAGE}
    command: sleep 3600
    stop_grace_period: 1s
    deploy:
      endpoint_mode: dnsrr
secrets:
  db_password:
    external: true
    name: ${{STACK_NAME}}_db_password_${{SECRET_DB_PASSWORD_VERSION}}
"""

ABRA_SH = """export SOME_CONFIG_VERSION=v1

# greet: says who it is, and how many arguments it got
greet() {
  echo "hello $1 from $TARGET of $STACK_NAME ($APP_NAME)"
  echo "arguments: $#"
}

function show_secret {
  echo "DB_PASSWORD=$(cat /run/secrets/db_password)"
}

check () {
  if test -e /tmp/pwned; then echo PWNED; else echo clean; fi
}

fail() { echo "it went wrong" >&2; return 3; }
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
    make_recipe(
        abra / "recipes",
        "cmdrecipe",
        [("1.0.0+1.0", {"compose.yml": COMPOSE, "abra.sh": ABRA_SH})],
    )
    make_app_env(abra, "default", DOMAIN, "cmdrecipe", secrets={"db_password": "20"})
    coop = await make_coop(synapse, make_member, tmp_path)
    runner = coop.runner(
        {
            "abra_dir": str(abra),
            "servers": {"default": {"docker_host": dockerd.host}},
            "approvals": {"required": 1},
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


async def answer(coop: Coop, command: str, *parts: str, timeout: float = 60) -> str:  # noqa: ASYNC109
    """bob sends `command`; the first bot message (or edit) containing every part."""
    await coop.bob.send(coop.room, command)
    reply = await coop.bob.wait_for_reply(coop.room, coop.bot_id, parts[0], timeout)
    body = str(reply.source["content"].get("m.new_content", reply.source["content"])["body"])
    for part in parts[1:]:
        assert part in body, body
    return body


async def test_cmd_runs_only_abra_sh_functions_with_quoted_arguments_and_masked_output(
    coop: Coop, docker_client: docker.DockerClient
) -> None:
    await coop.ask(coop.bob, f"!secrets {DOMAIN} generate", "Created 1")
    secret = docker_client.secrets.list(filters={"name": f"{STACK}_db_password_v1"})
    assert len(secret) == 1
    await answer(coop, f"!deploy {DOMAIN}", f"{DOMAIN} runs 1.0.0+1.0", timeout=150)

    # Arguments are one list: a `;` or `$(...)` in one is text, never a second command.
    body = await answer(
        coop,
        f"!cmd {DOMAIN} greet 'world; touch /tmp/pwned' '$(touch /tmp/pwned)' \"a b\"",
        "exited with 0",
    )
    assert f"hello world; touch /tmp/pwned from app of {STACK} ({DOMAIN})" in body, body
    assert "arguments: 3" in body, body
    body = await answer(coop, f"!cmd {DOMAIN} app check", "exited with 0", "clean")
    assert "PWNED" not in body, body

    # Another service, named first; the bash `function name` form.
    body = await answer(coop, f"!cmd {DOMAIN} worker greet you", "exited with 0")
    assert f"hello you from worker of {STACK}" in body, body

    # Output is masked like !logs: the secret's value never reaches the room.
    body = await answer(coop, f"!cmd {DOMAIN} show_secret", "exited with 0", "DB_PASSWORD=****")
    value = (
        docker_client.containers.list(
            filters={"label": f"com.docker.swarm.service.name={STACK}_app"}
        )[0]
        .exec_run(["cat", "/run/secrets/db_password"])
        .output.decode()
        .strip()
    )
    assert len(value) == 20
    assert value not in body, body

    # A failing function: its exit code and its stderr.
    await answer(coop, f"!cmd {DOMAIN} fail", "exited with 3", "it went wrong", "❌")

    # Only functions abra.sh defines: no general shell.
    body = await answer(coop, f"!cmd {DOMAIN} rm -rf /", "defines no function")
    assert "`greet`, `show_secret`, `check`, `fail`" in body, body
    await answer(coop, f"!cmd {DOMAIN} nosuch greet", "defines no function `nosuch`")

    # A viewer may not run commands in containers.
    await coop.carol.send(coop.room, f"!cmd {DOMAIN} check")
    refusal = await coop.carol.wait_for_reply(coop.room, coop.bot_id, "operator", 30)
    assert "exited" not in str(refusal.source["content"]["body"])

    # Audited: function, service, argument count and exit code (the request's text is
    # in the job's own audit line, as for every command).
    audit = await coop.ask(coop.alice, f"!audit {DOMAIN}", "cmd")
    assert "**cmd** [cmd.coop.test] greet in app (3 argument(s)): exit 0" in audit, audit
    assert "**cmd** [cmd.coop.test] fail in app (0 argument(s)): exit 3" in audit, audit
    assert "**cmd.refused** [cmd.coop.test]" in audit, audit
