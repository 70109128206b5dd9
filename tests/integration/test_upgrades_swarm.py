"""Upgrades on a real swarm, a real local registry and real recipe repos, from a real room.

The demo recipe has a patch, a minor and a major step (1.0.0 → 1.0.1 → 1.1.0 → 2.0.0),
each with release notes; its 1.0.0 image comes from the local registry, so it is
pinned by digest and a rebuilt tag shows as drift. The ghost recipe's 1.1.0 names an
image whose manifest is in the registry (the pre-flight passes) but whose layer was
deleted from it: swarm cannot pull it, the update fails and is rolled back.
bob (operator) asks; alice (admin) approves; approvals.required is 1, and 2 for
major upgrades (carol, a viewer, may vote on those). Scheduled checks are run
through `run_scheduled`, as the scheduler does.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import re
import subprocess
import tarfile
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import docker
import pytest

from bot.ops.restic import Restic
from bot.ops.swarm import Swarm
from tests.harness.bot import BotRunner
from tests.harness.coop import Coop, bot_messages, make_coop
from tests.harness.dockerd import DOCKER, Dockerd, free_port
from tests.harness.member import Member, MemberFactory
from tests.harness.recipes import commit_files, git, make_app_env, make_recipe
from tests.harness.registry import Registry
from tests.harness.synapse import Synapse

DEMO, OTHER, GHOST, HOOKED = (
    "demo.coop.test",
    "other.coop.test",
    "ghost.coop.test",
    "hooked.coop.test",
)
BACKUP_LABELS = ['"backupbot.backup=true"']
FAILING_HOOK = [*BACKUP_LABELS, '"backupbot.backup.pre-hook=exit 1"']


def stack(domain: str) -> str:
    return domain.replace(".", "_")


def compose(image: str, release: str, labels: list[str] | None = None) -> str:
    extra = "".join(f"        - {label}\n" for label in labels or [])
    return f"""version: "3.8"
services:
  app:
    image: {image}
    command: sleep 3600
    stop_grace_period: 1s
    environment: [RELEASE={release}]
    volumes: [data:/data]
    deploy:
      endpoint_mode: dnsrr
      restart_policy: {{condition: on-failure, delay: 1s}}
      labels:
        - "coop-cloud.${{STACK_NAME}}.timeout=60"
{extra}volumes:
  data:
"""


def demo_releases(registry: str) -> list[tuple[str, dict[str, str]]]:
    image = f"{registry}/upg/busybox:1.0"
    return [
        ("1.0.0+1.0", {"compose.yml": compose(image, "1.0.0"),
                       "release/1.0.0+1.0": "First release.\n"}),
        ("1.0.1+1.0", {"compose.yml": compose(image, "1.0.1"),
                       "release/1.0.1+1.0": "Patch: fixes the greeting.\n"}),
        ("1.1.0+1.1", {"compose.yml": compose("local/busybox:1.1", "1.1.0"),
                       "release/1.1.0+1.1": "Minor: a newer busybox.\n"}),
        ("2.0.0+2.0", {"compose.yml": compose("local/busybox:1.1", "2.0.0"),
                       "release/2.0.0+2.0": "BREAKING: the data moves to /srv.\n"
                                            "Read this before upgrading.\n"}),
    ]  # fmt: skip


def ghost_releases(registry: str, labels: list[str]) -> list[tuple[str, dict[str, str]]]:
    return [
        ("1.0.0+1.0", {"compose.yml": compose("local/busybox:1.0", "1.0.0", labels),
                       "release/1.0.0+1.0": "First release.\n"}),
        ("1.1.0+1.0", {"compose.yml": compose(f"{registry}/upg/ghost:1.0", "1.1.0", labels),
                       "release/1.1.0+1.0": "Needs an image nobody can pull.\n"}),
    ]  # fmt: skip


def import_tar(dockerd: Dockerd, ref: str, files: dict[str, bytes]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    subprocess.run(
        [DOCKER, "-H", dockerd.host, "import", "-", ref],
        input=buf.getvalue(),
        env=dockerd.cli_env,
        capture_output=True,
        check=True,
    )


def delete_layers(registry: Registry, name: str, tag: str) -> None:
    """Remove the image's layer blobs from the registry; its manifest stays."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    request = urllib.request.Request(f"{registry.url}/v2/{name}/manifests/{tag}", headers=accept)
    with opener.open(request) as response:
        manifest = json.load(response)
    for layer in manifest["layers"]:
        url = f"{registry.url}/v2/{name}/blobs/{layer['digest']}"
        with opener.open(urllib.request.Request(url, method="DELETE")) as response:
            assert response.status == 202


@pytest.fixture(scope="module")
def images(dockerd: Dockerd, registry: Registry) -> str:
    """The test images; returns the registry's host:port."""
    reg = registry.host_port
    dockerd.import_image("local/busybox:1.0")
    dockerd.import_image("local/busybox:1.1")
    dockerd.cli("tag", "local/busybox:1.0", f"{reg}/upg/busybox:1.0")
    dockerd.cli("push", f"{reg}/upg/busybox:1.0")
    # A layer of its own (not shared with busybox, which dockerd would reuse).
    import_tar(dockerd, f"{reg}/upg/ghost:1.0", {"ghost.bin": os.urandom(256)})
    dockerd.cli("push", f"{reg}/upg/ghost:1.0")
    dockerd.cli("rmi", f"{reg}/upg/ghost:1.0")
    delete_layers(registry, "upg/ghost", "1.0")
    return reg


def rebuild(dockerd: Dockerd, ref: str) -> None:
    """The same tag, other bits: a new image pushed under `ref`."""
    dockerd.import_image(ref, cmd=("/bin/sh", "-c", f"echo rebuilt {uuid.uuid4().hex}"))
    dockerd.cli("push", ref)


@dataclass
class Site:
    coop: Coop
    runner: BotRunner
    abra: pathlib.Path
    docker: docker.DockerClient
    tmp: pathlib.Path

    @property
    def room(self) -> str:
        return self.coop.room

    async def said(self, member: Member, text: str, timeout: float = 150) -> str:  # noqa: ASYNC109
        reply = await member.wait_for_reply(self.room, self.coop.bot_id, text, timeout)
        content = reply.source["content"]
        return str(content.get("m.new_content", content)["body"])

    async def deploy(self, *domains: str) -> None:
        """First deploys of 1.0.0+1.0: they run at once, side by side."""
        for domain in domains:
            await self.coop.bob.send(self.room, f"!deploy {domain} 1.0.0+1.0")
        for _ in domains:
            await self.said(self.coop.bob, "runs 1.0.0+1.0")

    async def propose(self, command: str, expect: str = "") -> tuple[str, str]:
        """bob asks; returns the proposal's id and text."""
        body = await self.coop.ask(self.coop.bob, command, "Proposal `")
        assert expect in body, body
        found = re.search(r"Proposal `(\w+)`", body)
        assert found, body
        return found.group(1), body

    async def approve(self, member: Member, proposal: str) -> None:
        await self.coop.ask(member, f"!approve {proposal}", "Counted")

    async def scheduled(self) -> None:
        """The scheduler's upgrade check, run to its end."""
        bot = self.runner.bot
        assert bot is not None
        await bot.dispatcher.run_scheduled("upgrades")
        await bot.dispatcher.drain()

    def version(self, domain: str) -> str:
        (service,) = self.docker.services.list(filters={"name": f"{stack(domain)}_app"})
        return str(service.attrs["Spec"]["Labels"][f"coop-cloud.{stack(domain)}.version"])

    def image(self, domain: str) -> str:
        (service,) = self.docker.services.list(filters={"name": f"{stack(domain)}_app"})
        return str(service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"])


@pytest.fixture
async def make_site(
    synapse: Synapse,
    make_member: MemberFactory,
    dockerd: Dockerd,
    docker_client: docker.DockerClient,
    images: str,
    tmp_path: pathlib.Path,
) -> AsyncIterator[Callable[..., Awaitable[Site]]]:
    """make_site(setup, **sections): `setup(abra)` makes the recipes and .env files."""
    runners: list[BotRunner] = []
    stacks: list[str] = []

    async def make(setup: Callable[[pathlib.Path], list[str]], **sections: Any) -> Site:
        abra = tmp_path / "abra"
        stacks.extend(stack(d) for d in setup(abra))
        coop = await make_coop(synapse, make_member, tmp_path)
        config = {
            "abra_dir": str(abra),
            "servers": {"default": {"docker_host": dockerd.host}},
            "approvals": {
                "required": 1,
                "policies": {"major_upgrade": {"required": 2, "voters": "viewer"}},
            },
            "jobs": {"progress_interval": "0.5s"},
            # Scheduled checks are run by the tests, at the moments they choose.
            "upgrades": {"check_schedule": None},
            **sections,
        }
        runner = coop.runner(config)
        runners.append(runner)
        await runner.start()
        return Site(coop, runner, abra, docker_client, tmp_path)

    yield make
    for runner in runners:
        await runner.stop()
    swarm = Swarm(dockerd.host)
    for name in stacks:  # the next test may deploy the same stack
        await swarm.remove(name)
    await swarm.close()


def backups_section(dockerd: Dockerd, tmp: pathlib.Path) -> dict[str, Any]:
    """A restic repository in tmp (created on first use), the test dockerd's volumes."""
    password = tmp / "restic-password"
    password.write_text("upgrade tests\n")
    return {
        "repository": str(tmp / "restic-repo"),
        "password_file": str(password),
        "volumes_root": str(dockerd.data_root / "volumes"),
        "settle_timeout": "30s",
        "schedule": None,
        "check_schedule": None,
        "drill_schedule": None,
    }


async def test_check_steps_notes_news_drift_and_an_unreachable_remote(
    make_site: Callable[..., Awaitable[Site]], images: str, dockerd: Dockerd
) -> None:
    upstream = pathlib.Path()

    def setup(abra: pathlib.Path) -> list[str]:
        nonlocal upstream
        # demo is a clone, as abra makes them: its origin is a repo on this machine.
        upstream = make_recipe(abra.parent / "upstream", "demo", demo_releases(images))
        (abra / "recipes").mkdir(parents=True)
        git(abra / "recipes", "clone", "--quiet", str(upstream), "demo")
        other = make_recipe(abra / "recipes", "other", demo_releases(images)[:1])
        git(other, "remote", "add", "origin", f"http://127.0.0.1:{free_port()}/other.git")
        make_app_env(abra, "default", DEMO, "demo")
        make_app_env(abra, "default", OTHER, "other")
        return [DEMO, OTHER]

    site = await make_site(setup)
    coop = site.coop
    await site.deploy(DEMO, OTHER)
    assert f"{images}/upg/busybox:1.0@sha256:" in site.image(DEMO)  # pinned

    # Asked by a member: the table, the steps' notes, the offline recipe.
    text = await coop.ask(coop.carol, "!upgrades", "Upgrade check")
    assert "2 deployed app(s), 1 can be upgraded, 0 with image drift" in text, text
    row = next(line for line in text.splitlines() if line.startswith(f"| {DEMO} |"))
    assert "1.0.0+1.0 → **2.0.0+2.0**" in row, row
    assert "major** (breaking)" in row, row
    assert "2.0.0+2.0: BREAKING: the data moves to /srv. · 1.1.0+1.1: Minor" in row, row
    assert f"| {OTHER} |" not in text  # runs its newest release
    offline = next(line for line in text.splitlines() if "recipe other:" in line)
    assert "git fetch failed" in offline, offline
    assert "127.0.0.1" in offline, offline

    # The scheduled check posts what is new, once.
    await coop.carol.drain()
    await site.scheduled()
    posted = await site.said(coop.carol, "Upgrade check")
    assert f"🆕 {DEMO}" in posted, posted
    assert "🆕 ⚠ recipe other" in posted, posted
    await site.scheduled()  # nothing new: nothing posted
    await coop.ask(coop.carol, "!ping", "pong")
    assert bot_messages(coop, await coop.carol.drain()) == []

    # A release upstream: the fetch brings it, and it is news.
    commit_files(upstream, {"release/2.0.1+2.0": "Patch on top of 2.0.\n"}, "release 2.0.1")
    git(upstream, "tag", "2.0.1+2.0")
    await site.scheduled()
    posted = await site.said(coop.carol, "Upgrade check")
    assert "1.0.0+1.0 → **2.0.1+2.0**" in posted, posted
    assert f"🆕 {DEMO}" in posted, posted
    assert "🆕 ⚠ recipe other" not in posted  # not new
    assert "⚠ recipe other" in posted

    # The same tag rebuilt in the registry: drift.
    rebuild(dockerd, f"{images}/upg/busybox:1.0")
    await site.scheduled()
    posted = await site.said(coop.carol, "Upgrade check")
    assert "2 with image drift" in posted, posted  # both apps run that image
    pinned = site.image(DEMO).split("@")[1]
    for domain in (DEMO, OTHER):
        drift = next(line for line in posted.splitlines() if f"drift in {domain}" in line)
        assert f"🆕 🔁 Image drift in {domain} (app): `{images}/upg/busybox:1.0`" in drift
        assert f"runs {pinned[:19]}, the tag now points to sha256:" in drift, drift
        assert f"`!deploy {domain}` pins the new one" in drift
    await site.scheduled()
    await coop.ask(coop.carol, "!ping", "pong")
    assert bot_messages(coop, await coop.carol.drain()) == []


async def test_voted_patch_then_a_major_upgrade_needs_the_larger_quorum(
    make_site: Callable[..., Awaitable[Site]], images: str
) -> None:
    def setup(abra: pathlib.Path) -> list[str]:
        make_recipe(abra / "recipes", "demo", demo_releases(images))
        make_app_env(abra, "default", DEMO, "demo")
        return [DEMO]

    site = await make_site(setup)
    coop = site.coop
    await site.deploy(DEMO)

    proposal, body = await site.propose(f"!upgrade {DEMO} 1.0.1+1.0", "a patch step")
    assert "Needs **1** approval from" in body
    assert "Patch: fixes the greeting." in body
    assert "No backup first: no `backups:` section" in body
    await site.approve(coop.alice, proposal)
    report = await site.said(coop.bob, "runs 1.0.1+1.0")
    assert f"⬆ **Upgrade {DEMO}**: 1.0.0+1.0 → 1.0.1+1.0, patch" in report, report
    assert "Converged" in report
    assert site.version(DEMO) == "1.0.1+1.0"

    # The newest is two steps away, one of them major: the major_upgrade policy.
    proposal, body = await site.propose(f"!upgrade {DEMO}", "a major step")
    assert "Steps: 1.0.1+1.0 → 1.1.0+1.1 (minor) → 2.0.0+2.0 (major)" in body, body
    assert "Needs **2** approvals" in body
    for note in ("Minor: a newer busybox.", "BREAKING: the data moves to /srv.",
                 "Read this before upgrading."):  # fmt: skip
        assert note in body
    assert "Patch: fixes" not in body  # already deployed
    await site.approve(coop.alice, proposal)
    await coop.ask(coop.bob, "!proposals", proposal)  # still open after one approval
    assert site.version(DEMO) == "1.0.1+1.0"
    await site.approve(coop.carol, proposal)
    report = await site.said(coop.bob, "runs 2.0.0+2.0")
    assert "⚠ **major** (breaking)" in report
    assert site.version(DEMO) == "2.0.0+2.0"
    bot = site.runner.bot
    assert bot is not None
    (row,) = [r for r in bot.store.proposals("done") if r.id == proposal]
    assert row.policy == "major_upgrade"
    # Nothing newer: a clear answer, no proposal.
    await coop.ask(coop.bob, f"!upgrade {DEMO}", "already runs 2.0.0+2.0, the newest release")
    await coop.ask(coop.bob, f"!upgrade {DEMO} 1.1.0+1.1", f"`!rollback {DEMO} 1.1.0+1.1`")


async def test_failed_upgrade_is_rolled_back_and_names_the_snapshot(
    make_site: Callable[..., Awaitable[Site]], images: str, dockerd: Dockerd, tmp_path: pathlib.Path
) -> None:
    def setup(abra: pathlib.Path) -> list[str]:
        make_recipe(abra / "recipes", "ghost", ghost_releases(images, BACKUP_LABELS))
        make_app_env(abra, "default", GHOST, "ghost")
        return [GHOST]

    sections = backups_section(dockerd, tmp_path)
    site = await make_site(setup, backups=sections)
    coop = site.coop
    await site.deploy(GHOST)
    volume = dockerd.data_root / "volumes" / f"{stack(GHOST)}_data" / "_data"
    (volume / "precious.txt").write_text("data before the upgrade\n")

    proposal, body = await site.propose(f"!upgrade {GHOST}", "a minor step")
    assert "Back up the app's data first; if that fails, stop there." in body
    await site.approve(coop.alice, proposal)
    report = await site.said(coop.bob, "!restore", timeout=240)
    assert "Did not converge" in report
    assert "running the previous version again" in report
    snapshot = re.search(r"Backed up first: snapshot `(\w+)`", report)
    assert snapshot, report
    assert f"`!restore {GHOST} {snapshot.group(1)}` (it needs a vote)" in report, report
    assert "taken before this upgrade" in report
    assert site.version(GHOST) == "1.0.0+1.0"
    restic = Restic(sections["repository"], pathlib.Path(sections["password_file"]))
    (snap,) = await restic.snapshots()
    assert snap.id.startswith(snapshot.group(1))
    assert f"app={GHOST}" in snap.tags


async def test_a_failing_backup_first_aborts_the_upgrade(
    make_site: Callable[..., Awaitable[Site]], images: str, dockerd: Dockerd, tmp_path: pathlib.Path
) -> None:
    def setup(abra: pathlib.Path) -> list[str]:
        make_recipe(abra / "recipes", "hooked", ghost_releases(images, FAILING_HOOK))
        make_app_env(abra, "default", HOOKED, "hooked")
        return [HOOKED]

    site = await make_site(setup, backups=backups_section(dockerd, tmp_path))
    coop = site.coop
    await site.deploy(HOOKED)
    spec = site.docker.services.get(f"{stack(HOOKED)}_app").attrs["Version"]["Index"]

    proposal, _ = await site.propose(f"!upgrade {HOOKED}", "Back up the app's data first")
    await site.approve(coop.alice, proposal)
    report = await site.said(coop.bob, "The backup failed")
    assert "so the upgrade did not start" in report, report
    assert "nothing changed" in report, report
    assert "pre-hook" in report, report
    assert "exit" in report, report
    assert site.version(HOOKED) == "1.0.0+1.0"
    assert site.docker.services.get(f"{stack(HOOKED)}_app").attrs["Version"]["Index"] == spec
    bot = site.runner.bot
    assert bot is not None
    assert [row["version"] for row in bot.store.deploys(HOOKED, limit=10)] == ["1.0.0+1.0"]
