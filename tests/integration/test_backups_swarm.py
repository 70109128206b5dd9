"""Backups with the real restic binary, of real swarm volumes, asked for in a real room.

One stack (three volumes: data, config, cache) runs for the module; each test sets
the backupbot labels it needs with `docker service update --label-add` (service
labels do not restart tasks) and writes the volumes' files directly under the test
dockerd's data-root, which is what the bot's `backups.volumes_root` points at.
bob (operator) asks, alice (admin) approves; approvals.required is 1.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.ops.restic import Restic
from bot.ops.swarm import Swarm
from tests.harness.bot import BotRunner
from tests.harness.coop import Coop, make_coop
from tests.harness.dockerd import Dockerd
from tests.harness.member import Member, MemberFactory
from tests.harness.recipes import make_app_env
from tests.harness.synapse import Synapse

DOMAIN = "files.coop.test"
STACK = "files_coop_test"
BUSY_DOMAIN = "busy.coop.test"
BUSY_STACK = "busy_coop_test"
PASSWORD = "correct horse battery staple"


def compose(replicas: int = 1, update_delay: str = "0s") -> str:
    return f"""version: "3.8"
services:
  app:
    image: local/busybox:1.0
    command: sleep 3600
    stop_grace_period: 1s
    volumes: [data:/data, config:/config, cache:/cache]
    deploy:
      endpoint_mode: dnsrr
      replicas: {replicas}
      update_config: {{parallelism: 1, delay: {update_delay}}}
      labels:
        - "coop-cloud.${{STACK_NAME}}.version=1.0.0+1.0"
volumes:
  data:
  config:
  cache:
"""


def deploy(dockerd: Dockerd, tmp: pathlib.Path, stack: str, text: str) -> None:
    path = tmp / f"{stack}.yml"
    path.write_text(text)
    dockerd.cli("stack", "deploy", "-c", str(path), stack, env={"STACK_NAME": stack})


@pytest.fixture(scope="module")
def stack(dockerd: Dockerd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    dockerd.import_image("local/busybox:1.0")
    deploy(dockerd, tmp_path_factory.mktemp("stack"), STACK, compose())
    yield STACK
    dockerd.cli("stack", "rm", STACK)


def sha(path: pathlib.Path) -> dict[str, str]:
    """Every file under path (relative name → sha256); symlinks and folders too."""
    result = {}
    for folder, dirs, files in os.walk(path):
        for name in sorted(dirs + files):
            full = pathlib.Path(folder, name)
            key = str(full.relative_to(path))
            if full.is_symlink():
                result[key] = "link:" + os.readlink(full)
            elif full.is_dir():
                result[key] = f"dir:{full.stat().st_mode:o}"
            else:
                result[key] = hashlib.sha256(full.read_bytes()).hexdigest()
    return result


@dataclass
class Site:
    coop: Coop
    runner: BotRunner
    dockerd: Dockerd
    volumes: pathlib.Path
    repo: Restic
    tmp: pathlib.Path

    @property
    def room(self) -> str:
        return self.coop.room

    def volume(self, name: str, stack: str = STACK) -> pathlib.Path:
        return self.volumes / f"{stack}_{name}" / "_data"

    async def snapshots(self) -> list[Any]:
        """The repository's snapshots; none before the bot created it (on first backup)."""
        if not (pathlib.Path(self.repo.repository) / "config").exists():
            return []
        return await self.repo.snapshots()

    async def labels(self, add: dict[str, str], remove: tuple[str, ...] = ()) -> None:
        """Change the service's labels and wait until swarm has finished the update."""
        args = ["service", "update", "--detach", "--quiet"]
        for key, value in add.items():
            args += ["--label-add", f"{key}={value}"]
        for key in remove:
            args += ["--label-rm", key]
        self.dockerd.cli(*args, f"{STACK}_app")
        swarm = Swarm(self.dockerd.host)
        for _ in range(300):
            (service,) = await swarm.services(STACK)
            if service.update_state not in ("updating", "rollback_started"):
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{STACK} still updating: {service.update_state}")

    async def run(self, member: Member, command: str, done: str, timeout: float = 120) -> str:  # noqa: ASYNC109
        await member.send(self.room, command)
        return await self.said(done, timeout)

    async def said(self, text: str, timeout: float = 120) -> str:  # noqa: ASYNC109
        reply = await self.coop.bob.wait_for_reply(self.room, self.coop.bot_id, text, timeout)
        content = reply.source["content"]
        return str(content.get("m.new_content", content)["body"])

    async def voted(self, command: str, done: str, timeout: float = 150) -> str:  # noqa: ASYNC109
        body = await self.coop.ask(self.coop.bob, command, "Proposal `")
        proposal = re.search(r"Proposal `(\w+)`", body)
        assert proposal, body
        await self.coop.ask(self.coop.alice, f"!approve {proposal.group(1)}", "Counted")
        return await self.said(done, timeout)


def write_files(site: Site) -> None:
    data = site.volume("data")
    (data / "a.txt").write_text("alpha\n")
    (data / "sub").mkdir(exist_ok=True)
    (data / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    (data / "link").unlink(missing_ok=True)
    (data / "link").symlink_to("a.txt")
    (data / "hooks.log").unlink(missing_ok=True)
    config = site.volume("config")
    (config / "keep").mkdir(exist_ok=True)
    (config / "keep" / "settings.ini").write_text("[x]\ny=1\n")
    (config / "drop").mkdir(exist_ok=True)
    (config / "drop" / "tmp.txt").write_text("not wanted\n")
    (site.volume("cache") / "c.txt").write_text("cache\n")


def backup_labels(**extra: str) -> dict[str, str]:
    return {
        "backupbot.backup": "true",
        "backupbot.backup.pre-hook": "echo pre >> /data/hooks.log",
        "backupbot.backup.post-hook": "echo post >> /data/hooks.log",
        "backupbot.backup.volumes.cache": "false",
        "backupbot.backup.volumes.config.path": "keep",
        **extra,
    }


@pytest.fixture
async def site(
    synapse: Synapse,
    make_member: MemberFactory,
    dockerd: Dockerd,
    stack: str,
    tmp_path: pathlib.Path,
) -> AsyncIterator[Site]:
    await Swarm(dockerd.host).wait_converged(stack, timeout=60, monitor=0)
    abra = tmp_path / "abra"
    make_app_env(abra, "default", DOMAIN, "files")
    make_app_env(abra, "default", BUSY_DOMAIN, "files")
    password = tmp_path / "restic-password"
    password.write_text(PASSWORD + "\n")
    repo = tmp_path / "repo"
    coop = await make_coop(synapse, make_member, tmp_path)
    sections: dict[str, Any] = {
        "abra_dir": str(abra),
        "servers": {"default": {"docker_host": dockerd.host}},
        "approvals": {"required": 1},
        "jobs": {"progress_interval": "0.5s"},
        "access": {"admins": [coop.alice.user_id]},
        "upgrades": {"check_schedule": None},  # recipes here are not git repos
        "backups": {
            "repository": str(repo),
            "password_file": str(password),
            "volumes_root": str(dockerd.data_root / "volumes"),
            "settle_timeout": "3s",
            "max_age": "1h",
        },
    }
    s = Site(
        coop,
        coop.runner(sections),
        dockerd,
        dockerd.data_root / "volumes",
        Restic(str(repo), password, cache_dir=tmp_path / "cache"),
        tmp_path,
    )
    await s.labels(backup_labels(), remove=("backupbot.backup.path",))
    write_files(s)
    await s.runner.start()
    try:
        yield s
    finally:
        await s.runner.stop()


async def test_backup_and_restore_round_trip_byte_for_byte(site: Site) -> None:
    coop = site.coop
    report = await site.run(coop.bob, f"!backup {DOMAIN}", "snapshot `")
    assert "✅" in report, report
    assert "1.0.0+1.0" in report, report
    assert re.search(r"\d+ new, 0 changed, 0 unchanged files", report), report
    # The pre-hook ran before restic read the volume, the post-hook after.
    assert (site.volume("data") / "hooks.log").read_text() == "pre\npost\n"
    (snap,) = await site.repo.snapshots()
    assert f"app={DOMAIN}" in snap.tags
    assert "version=1.0.0+1.0" in snap.tags
    assert sorted(snap.paths) == sorted(
        [str(site.volume("data")), str(site.volume("config") / "keep")]
    )  # cache skipped, config limited to keep/
    listed = {p for p, _, _ in await site.repo.ls(snap.id)}
    assert str(site.volume("data") / "hooks.log") in listed
    assert not any("drop" in p or "c.txt" in p for p in listed)
    before_data, before_config = sha(site.volume("data")), sha(site.volume("config") / "keep")
    # restic read hooks.log between the hooks: the snapshot has the pre-hook's line only.
    before_data["hooks.log"] = hashlib.sha256(b"pre\n").hexdigest()

    snapshots = await coop.ask(coop.carol, f"!snapshots {DOMAIN}", snap.short_id)
    assert "1.0.0+1.0" in snapshots
    table = await coop.ask(coop.carol, "!backups", DOMAIN)
    assert snap.short_id in table
    assert "✅" in table

    # Damage: change, delete and add files; then restore by vote.
    (site.volume("data") / "a.txt").write_text("changed\n")
    (site.volume("data") / "sub" / "b.bin").unlink()
    (site.volume("data") / "new.txt").write_text("should go\n")
    (site.volume("config") / "keep" / "settings.ini").write_text("broken\n")
    body = await coop.ask(coop.bob, f"!restore {DOMAIN}", "Proposal `")
    assert "replaces" in body
    assert f"{STACK}_data" in body
    assert snap.short_id in body
    proposal = re.search(r"Proposal `(\w+)`", body)
    assert proposal
    await coop.ask(coop.alice, f"!approve {proposal.group(1)}", "Counted")
    report = await site.said(f"restored from `{snap.short_id}`", timeout=180)
    assert "scaled to 0 (was app=1)" in report, report
    assert "running again" in report, report
    assert sha(site.volume("data")) == before_data
    assert sha(site.volume("config") / "keep") == before_config
    assert (site.volume("config") / "drop" / "tmp.txt").exists()  # outside the snapshot
    leftovers = [p.name for p in (site.volumes / f"{STACK}_data").iterdir()]
    assert leftovers == ["_data"], leftovers  # no staging or aside copies remain
    services = await Swarm(site.dockerd.host).services(STACK)
    assert [s.replicas_running for s in services] == [1]

    # One folder only, with --path.
    (site.volume("data") / "sub" / "b.bin").write_bytes(b"other")
    (site.volume("data") / "a.txt").write_text("kept as is\n")
    await site.voted(
        f"!restore {DOMAIN} {snap.short_id} --path data/sub", f"restored from `{snap.short_id}`"
    )
    assert sha(site.volume("data") / "sub") == {
        k[4:]: v for k, v in before_data.items() if k.startswith("sub/")
    }
    assert (site.volume("data") / "a.txt").read_text() == "kept as is\n"


async def test_hooks_failing(site: Site) -> None:
    coop = site.coop
    await site.labels(backup_labels(**{"backupbot.backup.pre-hook": "echo no >&2; exit 3"}))
    report = await site.run(coop.bob, f"!backup {DOMAIN}", "pre-hook in app failed (exit 3)")
    assert "no" in report
    # The post-hook still ran, and no snapshot was made.
    assert (site.volume("data") / "hooks.log").read_text() == "post\n"
    assert await site.snapshots() == []
    table = await coop.ask(coop.carol, "!backups", DOMAIN)
    assert "last run failed" in table or "never backed up" in table

    # A failing post-hook: the snapshot is made, and the run warns.
    await site.labels(backup_labels(**{"backupbot.backup.post-hook": "exit 4"}))
    report = await site.run(coop.bob, f"!backup {DOMAIN}", "post-hook in app failed (exit 4)")
    assert "⚠️" in report
    assert "snapshot `" in report
    assert len(await site.snapshots()) == 1


async def test_deprecated_path_label(site: Site) -> None:
    await site.labels(
        {"backupbot.backup.path": "/data/sub,/config/keep"},
        remove=("backupbot.backup.volumes.config.path",),
    )
    report = await site.run(site.coop.bob, f"!backup {DOMAIN}", "snapshot `")
    assert "deprecated" in report
    (snap,) = await site.repo.snapshots()
    assert sorted(snap.paths) == sorted(
        [str(site.volume("data") / "sub"), str(site.volume("config") / "keep")]
    )


async def test_locked_repository_and_wrong_password(site: Site) -> None:
    coop = site.coop
    await site.run(coop.bob, f"!backup {DOMAIN}", "snapshot `")  # creates the repository
    # `restic key passwd` waiting for a new password holds an exclusive lock.
    holder = await asyncio.create_subprocess_exec(
        site.repo.binary,
        "key",
        "passwd",
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=site.repo._env(),
    )
    try:
        for _ in range(100):
            if await site.repo.locks():
                break
            await asyncio.sleep(0.1)
        report = await site.run(coop.bob, f"!backup {DOMAIN}", "repository is locked by")
        assert f"pid {holder.pid}" in report
        assert "not unlocked automatically" in report
    finally:
        holder.kill()
        await holder.wait()
    # restic reads the password file on each run: a changed one is used at once.
    site.repo.password_file.write_text("not the password\n")
    report = await site.run(coop.bob, f"!backup {DOMAIN}", "wrong password or no key")
    assert "not the password" not in report
    assert PASSWORD not in report


async def test_unreadable_file_is_a_warning(site: Site) -> None:
    secret = site.volume("data") / "secret.txt"
    secret.write_text("nobody reads this\n")
    secret.chmod(0)
    # As root restic reads anything: the bot's restic drops the DAC capabilities.
    wrapper = site.tmp / "restic-nodac"
    caps = "-dac_override,-dac_read_search"
    wrapper.write_text(
        f'#!/bin/sh\nexec setpriv --bounding-set={caps} --inh-caps={caps} -- restic "$@"\n'
    )
    wrapper.chmod(0o755)
    await site.runner.stop()
    assert site.runner.config.backups is not None
    site.runner.config = site.runner.config.model_copy(
        update={"backups": site.runner.config.backups.model_copy(update={"restic": str(wrapper)})}
    )
    await site.runner.start()
    try:
        report = await site.run(site.coop.bob, f"!backup {DOMAIN}", "snapshot `")
    finally:
        secret.unlink()
    assert "⚠️" in report, report
    assert f"{secret}: open: Permission denied" in report, report


async def test_stack_mid_update_is_not_backed_up(site: Site, tmp_path: pathlib.Path) -> None:
    dockerd = site.dockerd
    deploy(dockerd, tmp_path, BUSY_STACK, compose(replicas=2, update_delay="120s"))
    try:
        await Swarm(dockerd.host).wait_converged(BUSY_STACK, timeout=60, monitor=0)
        dockerd.cli(
            "service", "update", "--detach", "--quiet",
            "--label-add", "backupbot.backup=true", "--force", f"{BUSY_STACK}_app",
        )  # fmt: skip
        report = await site.run(site.coop.bob, f"!backup {BUSY_DOMAIN}", "is not backed up")
        assert "mid-update (app (updating))" in report
        assert "did not settle" in report
        assert await site.snapshots() == []
    finally:
        dockerd.cli("stack", "rm", BUSY_STACK)


async def test_scheduled_backup_drill_and_age_alert(site: Site) -> None:
    coop, bot = site.coop, site.runner.bot
    assert bot is not None
    scheduler = bot.scheduler
    (task,) = [t for t in scheduler.schedule.tasks if t.name == "backup"]
    # The scheduler's loop starts once the bot can report in its room; so does this test.
    for _ in range(300):
        if await bot.can_report():
            break
        await asyncio.sleep(0.1)
    # The last nightly run was two days ago: the bot was down at the last 03:30. The
    # clock is given to tick(), as the scheduler's loop does with the bot's clock.
    now = datetime.now(UTC)
    bot.store.put(f"schedule.{task.name}.last", (now - timedelta(days=2)).isoformat())
    fired = await scheduler.tick(now)
    assert "backup" in [t.name for t in fired]
    await site.said("The backup of every app was due at", timeout=30)
    summary = await site.said("Backups: 1 of 1 app(s) backed up", timeout=120)
    assert "Retention (daily 7" in summary
    assert DOMAIN in summary
    # Done: at the same time, nothing is due again.
    assert "backup" not in [t.name for t in await scheduler.tick(now)]

    report = await site.run(coop.bob, "!backup drill", "Restore drill passed")
    assert f"✅ {DOMAIN}" in report
    assert "matching" in report

    # max_age: the newest snapshot is older than allowed → the admins are pinged once.
    await site.runner.stop()
    assert site.runner.config.backups is not None
    site.runner.config = site.runner.config.model_copy(
        update={"backups": site.runner.config.backups.model_copy(update={"max_age": 1.0})}
    )
    await site.runner.start()
    bot = site.runner.bot
    assert bot is not None
    await bot.dispatcher.run_scheduled("backups")
    alert = await coop.alice.wait_for_reply(site.room, coop.bot_id, "need attention", 60)
    assert coop.alice.user_id in alert.source["content"]["m.mentions"]["user_ids"]
    await bot.dispatcher.run_scheduled("backups")  # the same trouble: no repeat
    table = await coop.ask(coop.carol, "!backups", "older than")
    assert DOMAIN in table
    later = [e for _, e in await coop.alice.drain() if "need attention" in str(e.source)]
    assert later == []

    schedule = await coop.ask(coop.carol, "!schedule", "the backup of every app")
    assert "`30 3 * * *`" in schedule
    assert "!backup all" in schedule


# Backups that hold data (bot/features/backups/health.py): an emptied volume makes the
# next backup suspect, and retention keeps the snapshot before it until it is accepted;
# `!restore` meanwhile takes that good snapshot, not the newest (empty) one.
async def test_an_emptied_volume_is_suspect_and_holds_retention(site: Site) -> None:
    coop = site.coop
    first = await site.run(coop.bob, f"!backup {DOMAIN}", "snapshot `")
    assert first.startswith("✅"), first
    (good,) = await site.repo.snapshots()

    # The data volume loses everything (the pre-hook then writes its one line again).
    data = site.volume("data")
    for path in data.iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    second = await site.run(coop.bob, f"!backup {DOMAIN}", "snapshot `")
    assert second.startswith("⚠️"), second
    assert "**Suspect**" in second, second
    assert "its size dropped by" in second, second
    assert "before," in second, second
    assert "now" in second, second
    assert len(await site.repo.snapshots()) == 2

    # Retention (daily 7: one snapshot a day) would drop the good one of today: not now.
    kept = await site.run(coop.bob, "!backup prune", "Retention (")
    assert f"⏸ Kept every snapshot of {DOMAIN}" in kept, kept
    assert good.id in [s.id for s in await site.repo.snapshots()]
    table = await coop.ask(coop.carol, "!backups", DOMAIN)
    assert "⏸ retention paused" in table, table
    assert "holds no files" in table or "dropped by" in table, table
    assert "KiB" in table.splitlines()[2].split("|")[5], table  # the repository size

    # `!restore` without an id takes the newest GOOD snapshot, not the empty one, and
    # says which it skipped and how to pick it; restored, the data is back.
    (suspect,) = [s for s in await site.repo.snapshots() if s.id != good.id]
    body = await coop.ask(coop.bob, f"!restore {DOMAIN}", "Proposal `")
    assert f"from snapshot `{good.short_id}`" in body, body
    assert f"Newer snapshots were skipped, as not good: `{suspect.short_id}`" in body, body
    assert f"`!restore {DOMAIN} {suspect.short_id}`" in body, body
    proposal = re.search(r"Proposal `(\w+)`", body)
    assert proposal, body
    await coop.ask(coop.alice, f"!approve {proposal.group(1)}", "Counted")
    await site.said(f"restored from `{good.short_id}`", timeout=180)
    assert (data / "a.txt").read_text() == "alpha\n"
    assert (data / "sub" / "b.bin").stat().st_size == 300_000

    # A viewer may not accept; an operator does, and retention resumes.
    refused = await coop.ask(coop.carol, f"!backup accept {DOMAIN}", "operator")
    assert "Retention resumed" not in refused
    accepted = await site.run(coop.bob, f"!backup accept {DOMAIN}", "Retention resumed")
    assert DOMAIN in accepted
    pruned = await site.run(coop.bob, "!backup prune", "Retention (")
    assert "⏸" not in pruned, pruned
    remaining = [s.id for s in await site.repo.snapshots()]
    assert good.id not in remaining
    assert len(remaining) == 1
