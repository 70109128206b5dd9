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
from urllib.parse import quote

import docker
import nio
import pytest
import yaml

from bot import __version__
from bot.ops.swarm import Swarm
from tests.harness.coop import BOT_PASSWORD, Coop, make_coop
from tests.harness.dockerd import Dockerd, free_port
from tests.harness.image import CACHE, REPO, build
from tests.harness.member import Member, MemberFactory
from tests.harness.recipes import commit_files, git, make_recipe
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


DOMAIN = "coopbot.test"  # its stack is STACK
UPGRADE = "1.0.1+0.1.0"  # the recipe release the bot upgrades itself to


# Run inside the bot's container: what bot/app.py asks at start when no self_app is set.
OWN_STACK = (
    "import asyncio\n"
    "from bot.features.self_app import own_container_refs\n"
    "from bot.ops.swarm import Swarm\n"
    "from bot.ops.swarm.own import stack_of_container\n"
    "swarm = Swarm('unix:///var/run/docker.sock')\n"
    "print(asyncio.run(stack_of_container(swarm, own_container_refs()[0])))\n"
)


def _recipe_repo(abra: pathlib.Path) -> pathlib.Path:
    """abra/recipes/coopbot: this repo's recipe/ as its first release, as a co-op would
    clone it, and a second release that changes the service (so the update restarts it)."""
    files = {
        str(path.relative_to(RECIPE)): path.read_text()
        for path in sorted(RECIPE.rglob("*"))
        if path.is_file()
    }
    (first,) = (p.name for p in (RECIPE / "release").iterdir())
    repo = make_recipe(abra / "recipes", "coopbot", [(first, files)])
    compose = files["compose.yml"].replace(f".version={first}", f".version={UPGRADE}")
    compose = compose.replace("LOG_LEVEL=${LOG_LEVEL:-INFO}", "LOG_LEVEL=${LOG_LEVEL:-DEBUG}")
    assert compose != files["compose.yml"]
    commit_files(
        repo,
        {"compose.yml": compose, f"release/{UPGRADE}": "Logs at DEBUG by default.\n"},
        f"release {UPGRADE}",
    )
    git(repo, "tag", UPGRADE)
    return repo


def _write_app_env(abra: pathlib.Path, values: dict[str, str]) -> None:
    """abra/servers/test/coopbot.test.env, as `abra app new coopbot` and an admin make it
    (values in single quotes: the JSON lists hold double quotes)."""
    folder = abra / "servers" / "test"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["TYPE=coopbot", f"DOMAIN={DOMAIN}", 'COMPOSE_FILE="compose.yml:compose.host.yml"']
    lines += [f"{key}='{value}'" for key, value in values.items()]
    (folder / f"{DOMAIN}.env").write_text("\n".join(lines) + "\n")


async def _devices(admin: Member, user_id: str) -> dict[str, str]:
    """The user's devices as the homeserver has them (admin API): id -> display name."""
    found = await admin.api("GET", f"/_synapse/admin/v2/users/{quote(user_id)}/devices")
    return {device["device_id"]: device.get("display_name") or "" for device in found["devices"]}


async def _replies_to(member: Member, room: str, sender: str, event_id: str) -> list[str]:
    """Bodies of `sender`'s messages in `room` that reply to `event_id` (from the server)."""
    page = await member.api(
        "GET", f"/_matrix/client/v3/rooms/{quote(room)}/messages?dir=b&limit=500"
    )
    return [
        str(event["content"].get("body", ""))
        for event in page["chunk"]
        if event["sender"] == sender
        and (event["content"].get("m.relates_to") or {}).get("m.in_reply_to", {}).get("event_id")
        == event_id
    ]


BACK = ("✅ I'm back", "⚠ I'm back")  # how the restarted bot's report starts


async def _in_thread(coop: Coop, root: str, starts: tuple[str, ...], timeout: float) -> nio.Event:  # noqa: ASYNC109
    def said(room: str, event: nio.Event) -> bool:
        content = event.source.get("content", {})
        relates = content.get("m.relates_to") or {}
        return (
            room == coop.room
            and event.sender == coop.bot_id
            and relates.get("rel_type") == "m.thread"
            and relates.get("event_id") == root
            and str(content.get("body", "")).startswith(starts)
        )

    return await coop.bob.wait_for(said, timeout)


async def test_recipe_deploys_and_the_bot_answers_in_its_room(
    image: str,
    dockerd: Dockerd,
    docker_client: docker.DockerClient,
    synapse: Synapse,
    make_member: MemberFactory,
    tmp_path: pathlib.Path,
) -> None:
    coop = await make_coop(synapse, make_member, tmp_path)
    server_admin = await make_member(admin=True)
    abra = tmp_path / "abra"
    _recipe_repo(abra)
    for name, value in (("matrix_password", BOT_PASSWORD), ("restic_password", "restic-pw")):
        docker_client.secrets.create(name=f"{STACK}_{name}_v1", data=value.encode())
    values = {
        # the app's .env (the same values the bot deploys itself with later)
        "SECRET_MATRIX_PASSWORD_VERSION": "v1",
        "SECRET_RESTIC_PASSWORD_VERSION": "v1",
        "MATRIX_HOMESERVER": synapse.url,
        "MATRIX_USER": coop.bot_id,
        "MATRIX_ROOMS": json.dumps([coop.room]),
        "MATRIX_ENCRYPTION": "false",
        "ADMINS": json.dumps([coop.alice.user_id]),
        "OPERATORS": json.dumps([coop.bob.user_id]),
        "APPROVALS_REQUIRED": "1",
        "SERVER": "test",
        "ABRA_DIR": str(abra),
        "DOCKER_SOCKET": str(dockerd.socket),
        "DOCKER_VOLUMES": str(dockerd.data_root / "volumes"),
        "WEB_PORT": str(free_port()),
    }
    _write_app_env(abra, values)
    # as abra exports them: the .env, abra.sh, STACK_NAME
    env = {"STACK_NAME": STACK, "DOMAIN": DOMAIN, **_abra_exports(), **values}
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
        first_ping = await coop.alice.send(coop.room, "!ping")
        pong = await coop.alice.wait_for_reply(coop.room, coop.bot_id, "pong", 30)
        _figures(deploy_to_first_pong_s=time.monotonic() - t0)
        assert f"pong (coopbot {__version__})" in pong.body
        devices = await _devices(server_admin, coop.bot_id)
        # The bot's own device, beside the unnamed one of its registration (admin API).
        assert sorted(devices.values()) == ["", "coopbot"], devices
        container = await _container(docker_client)
        checked = await asyncio.to_thread(container.exec_run, ["coopbot", "check"])
        output = checked.output.decode(errors="replace")
        assert checked.exit_code == 0, output
        assert "docker" in output
        assert await _devices(server_admin, coop.bot_id) == devices  # check's is gone
        # Without self_app in its config, the bot finds its app from its own container:
        # the stack label of the container its mounts name (on the host network, as
        # here, its hostname is the host's and names no container).
        found = await asyncio.to_thread(container.exec_run, ["python", "-c", OWN_STACK], demux=True)
        out, err = found.output
        assert (out or b"").decode().strip() == STACK, (out, err)
        # The image's HEALTHCHECK command, asked now rather than after its 60 s start period.
        health = json.loads(dockerd.cli("image", "inspect", image).stdout)[0]["Config"]
        probe = await asyncio.to_thread(container.exec_run, health["Healthcheck"]["Test"][1:])
        assert probe.exit_code == 0, probe.output
        labels = docker_client.services.get(f"{STACK}_app").attrs["Spec"]["Labels"]
        assert labels[f"coop-cloud.{STACK}.version"].endswith(f"+{__version__}")
        assert labels["backupbot.backup"] == "true"

        # It never undeploys itself (the recipe's config names it: self_app).
        refused = await coop.ask(coop.bob, f"!undeploy {DOMAIN}", "will not undeploy myself")
        assert "Proposal" not in refused

        # It backs up its own data volume: the pre-hook's consistent SQLite copies and
        # the store itself are in the snapshot, in the recipe's restic repository.
        await coop.bob.send(coop.room, f"!backup {DOMAIN}")
        report = await coop.bob.wait_for_reply(coop.room, coop.bot_id, "snapshot `", 180)
        assert DOMAIN in report.body, report.body
        listing = await asyncio.to_thread(
            container.exec_run,
            ["restic", "ls", "latest", "--json"],
            environment={
                "RESTIC_REPOSITORY": "/backups/restic",
                "RESTIC_PASSWORD_FILE": "/run/secrets/restic_password",
            },
        )
        paths = listing.output.decode(errors="replace")
        assert listing.exit_code == 0, paths
        assert "/coopbot.sqlite" in paths, paths
        assert "/.backup/coopbot.sqlite" in paths, paths  # the pre-hook's copy

        # A restarted bot (same data volume) keeps its device and its sync position: it
        # answers again, also what was said while it was down (its catch-up), and never
        # answers an old command twice.
        dockerd.cli("service", "update", "--force", "--detach", f"{STACK}_app", timeout=120)
        await coop.ask(coop.alice, "!ping", "pong", timeout=120)
        assert await _devices(server_admin, coop.bot_id) == devices
        assert len(await _replies_to(coop.alice, coop.room, coop.bot_id, first_ping)) == 1

        # It upgrades itself: announced in the job's thread before the restart, and
        # reported there by the restarted bot (not as an interrupted job).
        await coop.bob.send(coop.room, f"!deploy {DOMAIN} {UPGRADE}")
        proposal = await coop.bob.wait_for_reply(coop.room, coop.bot_id, "Proposal `", 60)
        found = re.search(r"Proposal `(\w+)`", proposal.body)
        assert found, proposal.body
        await coop.ask(coop.alice, f"!approve {found.group(1)}", "Counted")
        # A voted job reports in the proposal's thread.
        thread = proposal.event_id
        await _in_thread(coop, thread, (f"♻ Upgrading myself to **{UPGRADE}**",), 120)
        t1 = time.monotonic()
        back = await _in_thread(coop, thread, BACK, 300)
        _figures(self_upgrade_to_report_s=time.monotonic() - t1)
        body = back.source["content"]["body"]
        assert f"I'm back: {DOMAIN} runs **{UPGRADE}**, converged" in body, body
        labels = docker_client.services.get(f"{STACK}_app").attrs["Spec"]["Labels"]
        assert labels[f"coop-cloud.{STACK}.version"] == UPGRADE
        assert f"TYPE=coopbot:{UPGRADE}\n" in (abra / f"servers/test/{DOMAIN}.env").read_text()
        assert await _devices(server_admin, coop.bot_id) == devices
        said = await _replies_to(coop.alice, coop.room, coop.bot_id, thread)
        assert not [b for b in said if "interrupted" in b], said
        # The restarted bot ran nothing again (the !deploy and !approve are old to it).
        assert len([b for b in said if b.startswith("♻ Upgrading myself")]) == 1, said
        assert len([b for b in said if b.startswith(BACK)]) == 1, said
        assert len(await _replies_to(coop.alice, coop.room, coop.bot_id, first_ping)) == 1
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
