"""coopbot's image and recipe, for real: built from the Dockerfile, deployed as a stack.

The image is built offline on the private test dockerd (tests/harness/image.py makes the
Dockerfile's base from Debian's packages). The recipe in recipe/ is deployed with
`docker stack deploy` as abra would (its .env values and abra.sh exports in the
environment), with compose.host.yml so the containerised bot reaches the test Synapse
on 127.0.0.1; it must answer `!ping` in a real room and pass `coopbot check` inside.
Figures (build time, image size, deploy to first answer) go to .cache/image-figures.json.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import re
import time
from typing import Any

import docker
import nio
import pytest
import yaml

from bot import __version__
from bot.ops.swarm import Swarm
from tests.harness.coop import BOT_PASSWORD, make_coop
from tests.harness.dockerd import Dockerd, free_port
from tests.harness.image import CACHE, REPO, build
from tests.harness.member import MemberFactory
from tests.harness.synapse import Synapse

RECIPE = REPO / "recipe"
STACK = "coopbot_test"
FIGURES = CACHE / "image-figures.json"


def _figures(**new: float) -> None:
    CACHE.mkdir(exist_ok=True)
    old = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    FIGURES.write_text(json.dumps({**old, **{k: round(v, 1) for k, v in new.items()}}))


def _image_tag() -> str:
    """The tag the recipe's compose.yml names (`${COOPBOT_IMAGE:-coopbot}:<version>`)."""
    match = re.search(
        r"image: \$\{COOPBOT_IMAGE:-coopbot\}:(\S+)", (RECIPE / "compose.yml").read_text()
    )
    assert match
    return f"coopbot:{match.group(1)}"


@pytest.fixture(scope="module")
def image(dockerd: Dockerd) -> str:
    tag = _image_tag()
    figures = build(dockerd, tag)
    _figures(**figures)
    return tag


def test_image_carries_the_tools_and_a_healthcheck(image: str, dockerd: Dockerd) -> None:
    script = (
        "docker --version && docker stack --help >/dev/null && echo stack-ok"
        " && git --version && restic version && ssh -V 2>&1"
        " && git config --system --get-all safe.directory && coopbot --version && id -u"
    )
    res = dockerd.cli(
        "run", "--rm", "--network=none", "--entrypoint=sh", image, "-c", script, timeout=120
    )
    out = res.stdout
    assert "stack-ok" in out
    assert "restic" in out
    assert "git version" in out
    assert "OpenSSH" in out
    assert "\n*\n" in out  # safe.directory
    assert f"coopbot {__version__}" in out
    assert out.strip().endswith("10001")  # not root unless told (the recipe runs it as root)
    inspect = json.loads(dockerd.cli("image", "inspect", image).stdout)[0]
    health = inspect["Config"]["Healthcheck"]["Test"]
    assert health[:2] == ["CMD", "python"]
    assert "/healthz" in " ".join(inspect["Config"]["Env"])


def _abra_exports() -> dict[str, str]:
    return dict(re.findall(r"^export (\w+)=(\S+)", (RECIPE / "abra.sh").read_text(), re.M))


def _diagnose(dockerd: Dockerd) -> str:
    """What swarm and the bot said, for a deploy that never answered."""
    ps = dockerd.cli("service", "ps", "--no-trunc", f"{STACK}_app", check=False)
    logs = dockerd.cli("service", "logs", "--raw", "--tail=60", f"{STACK}_app", check=False)
    return f"the bot never answered:\n{ps.stdout}{ps.stderr}\n{logs.stdout}{logs.stderr}"


async def _container(client: docker.DockerClient, timeout: float = 120) -> Any:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(
            client.containers.list,
            filters={"label": f"com.docker.swarm.service.name={STACK}_app", "status": "running"},
        )
        if found:
            return found[0]
        await asyncio.sleep(1)
    raise TimeoutError("the bot's container never ran")


async def test_recipe_deploys_and_the_bot_answers_in_its_room(
    image: str,
    dockerd: Dockerd,
    docker_client: docker.DockerClient,
    synapse: Synapse,
    make_member: MemberFactory,
    tmp_path: pathlib.Path,
) -> None:
    coop = await make_coop(synapse, make_member, tmp_path)
    (tmp_path / "abra/servers/test").mkdir(parents=True)
    for name, value in (("matrix_password", BOT_PASSWORD), ("restic_password", "restic-pw")):
        docker_client.secrets.create(name=f"{STACK}_{name}_v1", data=value.encode())
    web_port = free_port()
    env = {
        # as abra exports them: the .env, abra.sh, STACK_NAME
        "STACK_NAME": STACK,
        **_abra_exports(),
        "SECRET_MATRIX_PASSWORD_VERSION": "v1",
        "SECRET_RESTIC_PASSWORD_VERSION": "v1",
        "MATRIX_HOMESERVER": synapse.url,
        "MATRIX_USER": coop.bot_id,
        "MATRIX_ROOMS": json.dumps([coop.room]),
        "MATRIX_ENCRYPTION": "false",
        "ADMINS": json.dumps([coop.alice.user_id]),
        "SERVER": "test",
        "ABRA_DIR": str(tmp_path / "abra"),
        "DOCKER_SOCKET": str(dockerd.socket),
        "DOCKER_VOLUMES": str(dockerd.data_root / "volumes"),
        "WEB_PORT": str(web_port),
    }
    compose = ["-c", str(RECIPE / "compose.yml"), "-c", str(RECIPE / "compose.host.yml")]
    try:
        t0 = time.monotonic()
        dockerd.cli("stack", "deploy", *compose, STACK, env=env, timeout=120)

        # The bot ignores what was said before it joined: wait for its join first.
        def joined(room: str, event: nio.Event) -> bool:
            return (
                room == coop.room
                and isinstance(event, nio.RoomMemberEvent)
                and event.state_key == coop.bot_id
                and event.membership == "join"
            )

        try:
            await coop.alice.wait_for(joined, timeout=150)
        except TimeoutError as e:
            raise AssertionError(_diagnose(dockerd)) from e
        pong = await coop.ask(coop.alice, "!ping", f"pong (coopbot {__version__})", 30)
        _figures(deploy_to_first_pong_s=time.monotonic() - t0)
        assert "pong" in pong
        container = await _container(docker_client)
        checked = await asyncio.to_thread(container.exec_run, ["coopbot", "check"])
        output = checked.output.decode(errors="replace")
        assert checked.exit_code == 0, output
        assert "docker" in output
        # The image's HEALTHCHECK command, asked now rather than after its 60 s start period.
        health = json.loads(dockerd.cli("image", "inspect", image).stdout)[0]["Config"]
        probe = await asyncio.to_thread(container.exec_run, health["Healthcheck"]["Test"][1:])
        assert probe.exit_code == 0, probe.output
        labels = docker_client.services.get(f"{STACK}_app").attrs["Spec"]["Labels"]
        assert labels[f"coop-cloud.{STACK}.version"].endswith(f"+{__version__}")
        assert labels["backupbot.backup"] == "true"
        # A restarted bot (same data volume) answers again, also what was said while it
        # was down (its catch-up).
        dockerd.cli("service", "update", "--force", "--detach", f"{STACK}_app", timeout=120)
        pong = await coop.ask(coop.alice, "!ping", "pong", timeout=120)
    finally:
        await Swarm(dockerd.host).remove(STACK)
        for secret in docker_client.secrets.list(filters={"name": STACK}):
            secret.remove()


def test_recipe_follows_the_co_op_cloud_conventions() -> None:
    """What abra and the real recipes expect, checked on the files (no daemon needed)."""
    compose = yaml.safe_load((RECIPE / "compose.yml").read_text())
    (service,) = compose["services"].values()
    labels = dict(label.split("=", 1) for label in service["deploy"]["labels"])
    version = labels["coop-cloud.${STACK_NAME}.version"]
    assert (RECIPE / "release" / version).is_file()  # release notes for the version
    assert version.endswith(f"+{__version__}")  # <recipe semver>+<upstream version>
    assert labels["coop-cloud.${STACK_NAME}.timeout"].startswith("${TIMEOUT")
    assert labels["backupbot.backup"].startswith("${ENABLE_BACKUPS")
    assert "node.role == manager" in service["deploy"]["placement"]["constraints"]
    assert any(v.startswith("data:") for v in service["volumes"])
    exports = _abra_exports()
    for config in compose["configs"].values():
        version_var = re.search(r"\$\{(\w+_VERSION)\}$", config["name"])
        assert version_var, config["name"]
        assert version_var.group(1) in exports  # abra.sh exports every config version
    assert compose["configs"]["config_yaml"]["template_driver"] == "golang"
    sample = (RECIPE / ".env.sample").read_text()
    assert sample.startswith("TYPE=coopbot\n")
    for overlay in ("compose.yml", "compose.recovery.yml"):
        secrets = yaml.safe_load((RECIPE / overlay).read_text())["secrets"]
        for name, secret in secrets.items():
            var = f"SECRET_{name.upper()}_VERSION"
            assert secret["name"] == f"${{STACK_NAME}}_{name}_${{{var}}}"
            hint = re.search(rf"^#?{var}=v1 # (length=\d+|generate=false)$", sample, re.M)
            assert hint, var  # generated with a length, or inserted by hand
    readme = (RECIPE / "README.md").read_text()
    assert "<!-- metadata -->" in readme
    assert "<!-- endmetadata -->" in readme
