"""What the bot's surroundings do to it mid-job: the homeserver restarts, restic is
killed, the registry is down at pre-flight. The bot runs in the test's loop here
(tests/harness/bot.py BotRunner): it is not the one being killed."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.config import parse_config
from bot.ops.restic import Restic
from tests.faults.site import IMAGE, compose, deploy_by_hand, new_app, site_config, stack_of
from tests.harness.bot import BotRunner
from tests.harness.coop import Coop, make_coop
from tests.harness.dockerd import Dockerd
from tests.harness.member import MemberFactory
from tests.harness.recipes import make_recipe
from tests.harness.registry import Registry
from tests.harness.synapse import Synapse


class Room:
    def __init__(self, coop: Coop, runner: BotRunner) -> None:
        self.coop, self.runner = coop, runner

    async def said(self, text: str, timeout: float = 120) -> str:  # noqa: ASYNC109
        reply = await self.coop.bob.wait_for_reply(self.coop.room, self.coop.bot_id, text, timeout)
        content = reply.source["content"]
        return str(content.get("m.new_content", content)["body"])


@pytest.fixture
async def room(
    synapse: Synapse,
    make_member: MemberFactory,
    dockerd: Dockerd,
    abra: pathlib.Path,
    tmp_path: pathlib.Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Room]:
    coop = await make_coop(synapse, make_member, tmp_path)
    raw: dict[str, Any] = site_config(coop, abra, dockerd, tmp_path)
    raw.update(getattr(request, "param", {}))
    runner = BotRunner(parse_config(raw, tmp_path))
    await runner.start()
    await coop.ask(coop.bob, "!ping", "pong")
    try:
        yield Room(coop, runner)
    finally:
        await runner.stop()


async def test_a_homeserver_restart_during_a_job_loses_no_result(
    synapse: Synapse, make_member: MemberFactory, tmp_path: pathlib.Path
) -> None:
    coop = await make_coop(synapse, make_member, tmp_path)  # no swarm needed here
    runner = coop.runner({"jobs": {"progress_interval": "0.5s", "notify_after": "1h"}})
    await runner.start()
    try:
        await coop.ask(coop.bob, "!ping", "pong")
        await _restart_during_a_job(Room(coop, runner), synapse)
    finally:
        await runner.stop()


async def _restart_during_a_job(room: Room, synapse: Synapse) -> None:
    coop = room.coop
    await coop.bob.send(coop.room, "!slow 8")
    await room.said("working 1/8")
    port = synapse.port
    await asyncio.to_thread(synapse.stop)
    await asyncio.sleep(4)  # the job's progress edits fail meanwhile
    await asyncio.to_thread(synapse.start, port)
    # Nothing of it is lost: the final text lands, and the job ends as done.
    assert "slow 8 done" in await room.said("slow 8 done", timeout=120)
    await room.said("your slow job is done", timeout=60)
    bot = room.runner.bot
    assert bot is not None
    (job,) = [j for j in bot.store.jobs() if j.command == "slow"]
    assert job.state == "done", job


async def test_restic_killed_mid_backup_reports_its_lock_and_leaves_it(
    room: Room, dockerd: Dockerd, abra: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    domain = new_app(abra, "restic")
    deploy_by_hand(dockerd, tmp_path, domain, "1.0.0+1.0")
    volume = dockerd.data_root / "volumes" / f"{stack_of(domain)}_data" / "_data"
    for _ in range(600):
        if volume.is_dir():
            break
        await asyncio.sleep(0.1)
    (volume / "big.bin").write_bytes(os.urandom(64 * 1024 * 1024))  # seconds of restic work
    repo = Restic(str(tmp_path / "repo"), tmp_path / "restic-password", cache_dir=tmp_path / "rc")
    await repo.init()
    pidfile = tmp_path / "restic.pid"
    wrapper = tmp_path / "restic-pid"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'for a in "$@"; do [ "$a" = backup ] && echo $$ > {pidfile}; done\n'
        'exec restic "$@"\n'
    )
    wrapper.chmod(0o755)
    bot = room.runner.bot
    assert bot is not None
    assert bot.services.backups is not None
    bot.services.backups.restic.binary = str(wrapper)

    await room.coop.bob.send(room.coop.room, f"!backup {domain}")
    locks = tmp_path / "repo" / "locks"
    for _ in range(1200):  # restic runs and holds its lock: kill it there
        if pidfile.exists() and any(locks.iterdir()):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("restic never took its lock")
    os.kill(int(pidfile.read_text()), signal.SIGKILL)

    told = await room.said("restic lock `", timeout=120)
    (lock,) = await repo.locks()
    assert f"restic lock `{lock['id'][:8]}`" in told, told
    assert "which is gone: a stale lock" in told, told
    assert "`restic unlock` removes it" in told, told
    assert await repo.snapshots() == []  # no snapshot, and the lock stays: not removed
    assert len(await repo.locks()) == 1


async def test_the_registry_down_at_pre_flight_creates_nothing(
    room: Room, dockerd: Dockerd, abra: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    registry = Registry(tmp_path / "registry")
    registry.start()
    try:
        ref = f"{registry.host_port}/fault/busybox:1.0"
        dockerd.cli("tag", IMAGE, ref)
        dockerd.cli("push", ref)
        dockerd.cli("rmi", ref)  # only the registry has it now
    finally:
        registry.stop()  # and the registry is down
    recipe = f"reg{os.getpid()}"
    release = compose("1.0.0+1.0").replace(IMAGE, ref)
    make_recipe(abra / "recipes", recipe, [("1.0.0+1.0", {"compose.yml": release})])
    domain = new_app(abra, "registry")
    env = abra / "servers" / "default" / f"{domain}.env"
    env.write_text(env.read_text().replace("TYPE=demo", f"TYPE={recipe}"))

    await room.coop.bob.send(room.coop.room, f"!deploy {domain} 1.0.0+1.0")
    told = await room.said("Pre-flight failed", timeout=120)
    assert f"Pre-flight failed for {domain}; nothing was created" in told, told
    assert f"image {ref} of service app is not available" in told, told
    assert "connection refused" in told.lower(), told
    stack = domain.replace(".", "_")
    listed = dockerd.cli("service", "ls", "--filter", f"label=com.docker.stack.namespace={stack}")
    assert stack not in listed.stdout


async def test_dockerd_restarted_during_a_deploy_ends_converged_or_failed_and_says_which(
    room: Room, dockerd: Dockerd, abra: pathlib.Path
) -> None:
    domain = new_app(abra, "dockerd")
    await room.coop.bob.send(room.coop.room, f"!deploy {domain} 1.0.0+1.0")
    await room.said("Waiting for convergence", timeout=120)
    await asyncio.to_thread(dockerd.restart, 2.0)  # while the bot watches the stack
    told = await room.said(f"{domain} ", timeout=240)
    while "runs 1.0.0+1.0." not in told and "failed; the app is" not in told:
        told = await room.said(domain, timeout=240)
    listed = dockerd.cli("service", "ls", "--format", "{{.Name}} {{.Replicas}}").stdout
    if "runs 1.0.0+1.0." in told:  # it says converged: it is
        assert f"{stack_of(domain)}_app 1/1" in listed, (told, listed)
    else:  # it says failed, and in which state the app is: true as well
        assert "not deployed" in told or "half-created" in told, told
        if "not deployed" in told:
            assert stack_of(domain) not in listed, listed
