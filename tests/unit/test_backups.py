"""bot/features/backups/ and commands/backup.py over fakes of Apps, Swarm and restic (no docker,
no restic binary): the pure helpers, what a backup covers, settling, the backup run and
its record, states, the drill, restores, and the commands through the dispatcher."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import bot.features.backups.run as backups_module
from bot.app import Bot, build_restic
from bot.config import BackupsConfig
from bot.core.access import SCHEDULER
from bot.core.store import Store
from bot.errors import UserError
from bot.features.backups import (
    AppBackupState,
    Backups,
    BackupTarget,
    _in_stack_volume,
    progress_line,
    restic_environment,
    restore_scope,
    snapshot_app,
    tree_totals,
)
from bot.fmt import human_bytes
from bot.ops.abra import AppEnv
from bot.ops.restic import Progress, ResticError, Snapshot
from bot.ops.swarm import Convergence, ServiceInfo
from commands.backup import AGE_ALERT_KEY
from tests.fakes import SUMMARY, FakeApps, FakeRestic, FakeSwarm, swap_services
from tests.unit.helpers import ADMIN, OPERATOR, VIEWER, BotFactory, chat_of, drain, message

STACK = "a_test"
VERSION_LABEL = "coop-cloud.a_test.version"
LABELLED = {"backupbot.backup": "true"}


def full_id(short: str) -> str:
    return short + "0" * (64 - len(short))


def env_of(domain: str = "a.test", server: str = "default") -> AppEnv:
    return AppEnv(domain, server, Path(f"/abra/servers/{server}/{domain}.env"), "demo", None, {})


def svc(
    short: str = "app",
    labels: dict[str, str] | None = None,
    *,
    stack: str = STACK,
    update_state: str | None = None,
    replicas: int | None = 1,
    version: str | None = "1.0.0+1.0",
) -> ServiceInfo:
    all_labels = {"com.docker.stack.namespace": stack, **(labels or {})}
    if version is not None:
        all_labels[f"coop-cloud.{stack}.version"] = version
    return ServiceInfo(
        id=f"id-{stack}-{short}",
        name=f"{stack}_{short}",
        short_name=short,
        image="local/busybox:1.0",
        replicas_desired=replicas,
        replicas_running=replicas or 1,
        update_state=update_state,
        update_message="",
        labels=all_labels,
        version=1,
        has_previous_spec=False,
        previous_image=None,
        recent_errors=[],
    )


def snap(
    short: str,
    app: str = "a.test",
    when: datetime | None = None,
    paths: list[str] | None = None,
    version: str | None = "1.0.0+1.0",
) -> Snapshot:
    tags = ["coopbot", f"app={app}", "stack=" + app.replace(".", "_")]
    if version:
        tags.append("version=" + version)
    return Snapshot(
        id=full_id(short),
        short_id=short,
        time=when or datetime(2024, 1, 1, 3, 30, tzinfo=UTC),
        paths=paths or [],
        tags=tags,
        hostname="host",
    )


# ================================================================ fakes


class Sink:
    def __init__(self) -> None:
        self.lines: list[str] = []

    async def update(self, markdown: str) -> None:
        self.lines.append(markdown)


@dataclass
class Site:
    config: BackupsConfig
    apps: FakeApps
    restic: FakeRestic
    store: Store
    backups: Backups
    root: Path
    data_dir: Path

    @property
    def swarm(self) -> FakeSwarm:
        return self.apps.swarms["default"]

    def add(
        self,
        domain: str = "a.test",
        labels: dict[str, str] | None = LABELLED,
        volumes: dict[str, dict[str, bytes]] | None = None,
        *,
        services: list[ServiceInfo] | None = None,
        make_dirs: bool = True,
    ) -> AppEnv:
        """An app, deployed with one service `app` carrying `labels`, and its volumes
        (name -> files) on disk under volumes_root."""
        env = env_of(domain)
        self.apps.envs.append(env)
        stack = env.stack_name
        self.swarm.stacks_of[stack] = services or [svc(labels=labels, stack=stack)]
        for volume, files in (volumes if volumes is not None else {"data": {}}).items():
            self.swarm.volumes_of.setdefault(stack, []).append(f"{stack}_{volume}")
            if make_dirs:
                write_tree(self.root / f"{stack}_{volume}" / "_data", files)
        return env


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def backups_config(tmp_path: Path, **more: Any) -> BackupsConfig:
    password = tmp_path / "restic-password"
    password.write_text("secret\n")
    return BackupsConfig.model_validate(
        {
            "repository": "/srv/restic",
            "password_file": str(password),
            "volumes_root": str(tmp_path / "volumes"),
            **more,
        }
    )


def make_site(
    tmp_path: Path, *, store: Store | None = None, initialised: bool = True, **config: Any
) -> Site:
    cfg = backups_config(tmp_path, **config)
    apps = FakeApps({"default": FakeSwarm()})
    restic = FakeRestic(initialised=initialised)
    store = store or Store(tmp_path / "backups.sqlite")
    data_dir = tmp_path / "data"
    backups = Backups(cfg, apps, store, restic, data_dir=data_dir)  # type: ignore[arg-type]
    return Site(cfg, apps, restic, store, backups, cfg.volumes_root, data_dir)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    made = make_site(tmp_path)
    yield made
    made.store.close()


class FakeTime:
    """Stands in for the `time` and `asyncio` modules of bot.features.backups: a monotonic clock
    that only moves when the code sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await _real_sleep(0)

    def __getattr__(self, name: str) -> Any:  # the rest of asyncio (Lock, to_thread)
        return getattr(asyncio, name)


_real_sleep = asyncio.sleep


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(backups_module, "time", fake)
    monkeypatch.setattr(backups_module, "asyncio", fake)
    return fake


# ================================================================ pure helpers


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (5 * 1024**2, "5.0 MiB"),
        (3 * 1024**3 + 1024**3 // 2, "3.5 GiB"),
        (1024**4, "1.0 TiB"),
        (2048 * 1024**4, "2048.0 TiB"),  # no unit above TiB
        (-2048, "-2.0 KiB"),
    ],
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


def test_progress_line_with_everything_and_with_nothing_known_yet() -> None:
    assert (
        progress_line(Progress(42.4, 512, 2048, 3, 10, 5.0, 125.0))
        == "42% · 512 B of 2.0 KiB · 3 of 10 files, about 2m left"
    )
    assert progress_line(Progress(0.0, 0, 0, 0, 0, 0.0, None)) == "0% · 0 B · 0 of ? files"


def test_snapshot_app_reads_the_app_tag() -> None:
    assert snapshot_app(snap("aaaa1111", "cloud.example")) == "cloud.example"
    bare = dataclasses.replace(snap("aaaa1111"), tags=["coopbot", "stack=a_test"])
    assert snapshot_app(bare) is None


@pytest.mark.parametrize(
    ("age", "stale"), [(None, True), (3601.0, True), (3600.0, False), (0.0, False)]
)
def test_app_backup_state_stale(age: float | None, stale: bool) -> None:
    assert AppBackupState("a.test", None, None, None, age).stale(3600.0) is stale


def test_target_tags_carry_the_version_when_known() -> None:
    target = BackupTarget(env_of(), [], [], "1.2.0+3", [], [])
    assert target.tags == ["coopbot", "app=a.test", "stack=a_test", "version=1.2.0+3"]
    assert dataclasses.replace(target, version=None).tags == [
        "coopbot",
        "app=a.test",
        "stack=a_test",
    ]


ROOT = Path("/var/lib/docker/volumes")


@pytest.mark.parametrize(
    ("path", "inside"),
    [
        (ROOT / "a_test_data/_data", True),
        (ROOT / "a_test_data/_data/uploads/x", True),
        (ROOT / "a_test_data", False),  # the volume folder, not its data
        (ROOT / "a_test_data/other", False),
        (ROOT / "b_test_data/_data", False),  # another stack
        (ROOT / "a_testdata/_data", False),  # no "<stack>_" prefix
        (ROOT / "a_test_data/_data/../../b_test_data/_data", False),
        (Path("/etc/passwd"), False),
        (Path("/var/lib/docker"), False),
    ],
)
def test_in_stack_volume(path: Path, inside: bool) -> None:
    assert _in_stack_volume(path, ROOT, STACK) is inside


def scoped(*paths: str) -> Snapshot:
    return snap("aaaa1111", paths=[str(ROOT / p) for p in paths])


def test_restore_scope_is_the_snapshot_or_the_named_part_of_it() -> None:
    s = scoped("a_test_data/_data", "a_test_db/_data/dump")
    assert restore_scope(s, ROOT, STACK, None) == [
        ROOT / "a_test_data/_data",
        ROOT / "a_test_db/_data/dump",
    ]
    assert restore_scope(s, ROOT, STACK, "data") == [ROOT / "a_test_data/_data"]
    assert restore_scope(s, ROOT, STACK, "/data/uploads/") == [ROOT / "a_test_data/_data/uploads"]
    assert restore_scope(s, ROOT, STACK, "db/dump/2024") == [ROOT / "a_test_db/_data/dump/2024"]


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("", "--path '': give <volume>[/<sub-path>], e.g. `data/uploads`"),
        ("/", "--path '/': give <volume>[/<sub-path>], e.g. `data/uploads`"),
        ("data/../db", "--path 'data/../db': give <volume>[/<sub-path>], e.g. `data/uploads`"),
        (
            "cache",
            "--path 'cache' is not in snapshot aaaa1111 (it has: a_test_data, a_test_db/dump)",
        ),
        # The snapshot holds only db/dump: restoring all of db would delete the rest.
        ("db", "--path 'db' is not in snapshot aaaa1111 (it has: a_test_data, a_test_db/dump)"),
    ],
)
def test_restore_scope_refusals(path: str, error: str) -> None:
    s = scoped("a_test_data/_data", "a_test_db/_data/dump")
    with pytest.raises(UserError) as caught:
        restore_scope(s, ROOT, STACK, path)
    assert str(caught.value) == error


@pytest.mark.parametrize(
    "outside", ["/etc", str(ROOT / "b_test_data/_data"), str(ROOT / "a_test_data")]
)
def test_restore_scope_refuses_a_snapshot_with_paths_outside_the_stack(outside: str) -> None:
    s = snap("aaaa1111", paths=[str(ROOT / "a_test_data/_data"), outside])
    with pytest.raises(UserError) as caught:
        restore_scope(s, ROOT, STACK, None)
    assert str(caught.value) == (
        f"snapshot aaaa1111 holds {outside}, which is not in a volume of a_test under "
        f"{ROOT}: refusing to restore it"
    )


def test_tree_totals_counts_regular_files_and_not_symlinks(tmp_path: Path) -> None:
    write_tree(tmp_path, {"a": b"12345", "sub/b": b"xy", "sub/deeper/c": b""})
    (tmp_path / "empty").mkdir()
    os.symlink(tmp_path / "a", tmp_path / "sub/link")
    os.symlink("/nowhere", tmp_path / "dangling")
    os.symlink(tmp_path / "sub", tmp_path / "dirlink")
    assert tree_totals(tmp_path) == (3, 7)
    assert tree_totals(tmp_path / "empty") == (0, 0)


def testrestic_environment(tmp_path: Path) -> None:
    assert restic_environment(None) == {}
    path = tmp_path / "restic.env"
    path.write_text(
        "# S3 keys\n"
        "\n"
        "AWS_ACCESS_KEY_ID=AKIA123\n"
        "export AWS_SECRET_ACCESS_KEY='s3cr=et'\n"
        '  RESTIC_PROGRESS_FPS = "0.5"  \n'
        "EMPTY=\n"
    )
    assert restic_environment(path) == {
        "AWS_ACCESS_KEY_ID": "AKIA123",
        "AWS_SECRET_ACCESS_KEY": "s3cr=et",
        "RESTIC_PROGRESS_FPS": "0.5",
        "EMPTY": "",
    }


@pytest.mark.parametrize("bad", ["JUST_A_NAME", "A B=x", "=value"])
def test_read_env_file_names_the_bad_line(tmp_path: Path, bad: str) -> None:
    # The one .env reader (bot/ops/dotenv.py, godotenv's rules: `1ABC=x` is a name
    # there) names the file and line.
    path = tmp_path / "restic.env"
    path.write_text(f"# ok\nA=1\n{bad}\n")
    with pytest.raises(UserError) as caught:
        restic_environment(path)
    assert str(caught.value).startswith(f"{path}:3: ")


def test_backups_reads_the_env_file_into_restics_environment(tmp_path: Path) -> None:
    (tmp_path / "restic.env").write_text("AWS_SECRET_ACCESS_KEY=topsecret\n")
    config = backups_config(tmp_path, env_file=str(tmp_path / "restic.env"))
    store = Store(tmp_path / "s.sqlite")
    backups = Backups(
        config,
        FakeApps({}),  # type: ignore[arg-type]
        store,
        build_restic(config, tmp_path / "d"),
        data_dir=tmp_path / "d",
    )
    assert backups.restic.extra_env == {"AWS_SECRET_ACCESS_KEY": "topsecret"}
    assert backups.restic.cache_dir == tmp_path / "d" / "restic-cache"
    assert backups.restic._mask("key topsecret") == "key ***"
    store.close()


# ================================================================ what a backup covers


async def test_target_skips_and_limits_volumes_by_label(site: Site) -> None:
    env = site.add(
        labels={
            **LABELLED,
            "backupbot.backup.volumes.cache": "false",
            "backupbot.backup.volumes.data.path": "uploads,db.sqlite",
        },
        volumes={"data": {"uploads/a": b"1", "db.sqlite": b"2"}, "cache": {}, "config": {}},
    )
    target = await site.backups.target(env)
    assert target.paths == [
        site.root / "a_test_config/_data",
        site.root / "a_test_data/_data/uploads",
        site.root / "a_test_data/_data/db.sqlite",
    ]
    assert target.version == "1.0.0+1.0"
    assert [s.service for s in target.specs] == ["app"]
    assert target.warnings == []
    assert target.tags[-1] == "version=1.0.0+1.0"


async def test_target_maps_the_deprecated_path_label_through_the_mounts(site: Site) -> None:
    env = site.add(
        labels={**LABELLED, "backupbot.backup.path": "/var/www/html/uploads,/var/lib/db"},
        volumes={"html": {"uploads/x": b"x"}, "db": {"a": b"a"}},
    )
    site.swarm.mounts_of[STACK] = {
        "app": [("a_test_html", "/var/www/html"), ("a_test_db", "/var/lib/db")],
        "other": [("a_test_other", "/var/www/html/uploads")],  # another service's mount
    }
    target = await site.backups.target(env)
    assert target.paths == [site.root / "a_test_html/_data/uploads", site.root / "a_test_db/_data"]
    assert target.warnings == [
        "app: backupbot.backup.path is deprecated: use backupbot.backup.volumes.<vol>.path"
    ]


async def test_the_deprecated_path_uses_the_innermost_mount(site: Site) -> None:
    """A volume mounted inside another one's mount point hides that part of the outer
    volume: the path is in the inner volume."""
    env = site.add(
        labels={**LABELLED, "backupbot.backup.path": "/var/www/html/uploads/2024"},
        volumes={"html": {}, "uploads": {"2024/a": b"a"}},
    )
    site.swarm.mounts_of[STACK] = {
        "app": [("a_test_html", "/var/www/html"), ("a_test_uploads", "/var/www/html/uploads")]
    }
    target = await site.backups.target(env)
    assert target.paths == [site.root / "a_test_uploads/_data/2024"]


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/etc", "a.test: backupbot.backup.path /etc is not on a volume of service app"),
        (
            "/var/www/../../etc",
            "a.test: backupbot.backup.path /var/www/../../etc is not on a volume of service app",
        ),
        ("var/www", "a.test: backupbot.backup.path var/www is not on a volume of service app"),
    ],
)
async def test_a_deprecated_path_off_the_volumes_is_refused(
    site: Site, path: str, error: str
) -> None:
    env = site.add(labels={**LABELLED, "backupbot.backup.path": path}, volumes={"www": {}})
    site.swarm.mounts_of[STACK] = {"app": [("a_test_www", "/var/www")]}
    with pytest.raises(UserError) as caught:
        await site.backups.target(env)
    assert str(caught.value) == error


async def test_target_refuses_a_limited_path_that_leaves_the_volume(site: Site) -> None:
    env = site.add(labels={**LABELLED, "backupbot.backup.volumes.data.path": "../../etc"})
    with pytest.raises(UserError) as caught:
        await site.backups.target(env)
    assert str(caught.value) == (
        "a.test: backupbot.backup.volumes.data.path: '../../etc' must be a path inside the "
        "volume (no '/…' or '..')"
    )


async def test_target_says_where_it_looked_when_volumes_root_is_wrong(site: Site) -> None:
    env = site.add(volumes={"data": {}, "db": {}}, make_dirs=False)
    with pytest.raises(UserError) as caught:
        await site.backups.target(env)
    assert str(caught.value) == (
        f"a.test: cannot see {site.root}/a_test_data/_data, {site.root}/a_test_db/_data; is "
        f"backups.volumes_root ({site.root}) where the docker volumes are?"
    )


@pytest.mark.parametrize(
    ("labels", "error"),
    [
        (
            {"backupbot.backup": "false"},
            "a.test has no `backupbot.backup=true` label on any service: its recipe does not "
            "say what to back up.",
        ),
        ({}, "a.test has no `backupbot.backup=true` label on any service"),
        (
            {**LABELLED, "backupbot.backup.volumes.data": "false"},
            "a.test: every volume is skipped by its labels.",
        ),
    ],
)
async def test_target_refusals(site: Site, labels: dict[str, str], error: str) -> None:
    env = site.add(labels=labels)
    with pytest.raises(UserError) as caught:
        await site.backups.target(env)
    assert str(caught.value).startswith(error)


async def test_target_of_an_app_that_is_not_deployed(site: Site) -> None:
    env = env_of("gone.test")
    with pytest.raises(UserError) as caught:
        await site.backups.target(env)
    assert str(caught.value) == "gone.test is not deployed: there is nothing to back up."


async def test_labelled_apps_and_unreachable_servers(site: Site) -> None:
    labelled = site.add("a.test")
    site.add("plain.test", labels={})
    site.apps.envs.append(env_of("down.test", "far"))
    site.apps.envs.append(env_of("gone.test"))  # no stack
    site.apps.swarms["far"] = FakeSwarm(unreachable=True)
    found, problems = await site.backups.labelled_apps()
    assert found == [labelled]
    assert problems == ["far: server unreachable: ssh://nowhere"]
    assert await site.backups.has_labels(labelled)
    assert not await site.backups.has_labels(env_of("plain.test"))


# ================================================================ settling


async def test_wait_settled_returns_at_once_when_nothing_moves(site: Site, clock: FakeTime) -> None:
    env = site.add(services=[svc(update_state="completed"), svc("db", update_state=None)])
    sink = Sink()
    await site.backups.wait_settled(env, sink)
    assert clock.slept == [] and sink.lines == []


async def test_wait_settled_waits_while_updating_and_says_so_once(
    site: Site, clock: FakeTime
) -> None:
    env = site.add()
    moving = [svc(update_state="updating"), svc("db", update_state="completed")]
    site.swarm.answers = [moving, moving, [svc(update_state="rollback_started")]]
    sink = Sink()
    await site.backups.wait_settled(env, sink)
    assert clock.slept == [2, 2, 2]
    assert sink.lines == ["⏳ a.test is mid-update (app (updating)): waiting for it"]
    assert site.swarm.answers == []


@pytest.mark.parametrize("state", ["paused", "rollback_paused"])
async def test_wait_settled_fails_at_once_on_a_paused_update(
    site: Site, clock: FakeTime, state: str
) -> None:
    env = site.add(services=[svc(update_state=state), svc("db", update_state="updating")])
    with pytest.raises(UserError) as caught:
        await site.backups.wait_settled(env, Sink())
    assert str(caught.value) == (
        f"a.test is not backed up: the update of app is {state}. "
        "Finish or roll back that deploy first."
    )
    assert clock.slept == []


async def test_wait_settled_gives_up_after_settle_timeout(tmp_path: Path, clock: FakeTime) -> None:
    site = make_site(tmp_path, settle_timeout="10s")
    env = site.add(services=[svc(update_state="updating"), svc("db", update_state="updating")])
    sink = Sink()
    with pytest.raises(UserError) as caught:
        await site.backups.wait_settled(env, sink)
    assert str(caught.value) == (
        "a.test is not backed up: it is mid-update (app (updating), db (updating)) and did "
        "not settle within 10s; a backup taken now could mix old and new data."
    )
    assert clock.slept == [2, 2, 2, 2, 2]  # 10 s of waiting, then it gives up
    assert len(sink.lines) == 1


# ================================================================ backup


async def test_backup_runs_hooks_around_restic_and_records_the_run(site: Site) -> None:
    env = site.add(
        labels={
            **LABELLED,
            "backupbot.backup.pre-hook": "pg_dump -f /tmp/dump",
            "backupbot.backup.post-hook": "rm /tmp/dump",
        },
        volumes={"data": {"f": b"x"}},
    )
    sink = Sink()
    outcome = await site.backups.backup(env, sink, OPERATOR)
    assert site.swarm.execs == [("app", "pg_dump -f /tmp/dump"), ("app", "rm /tmp/dump")]
    assert site.restic.backed_up == [
        (
            [site.root / "a_test_data/_data"],
            ["coopbot", "app=a.test", "stack=a_test", "version=1.0.0+1.0"],
        )
    ]
    assert sink.lines == [
        "💾 Backing up **a.test**: pre-hook in app",
        "💾 Backing up **a.test**: starting restic",
        "💾 Backing up **a.test**: 50% · 512 B of 1.0 KiB · 1 of 2 files, about 30s left",
    ]
    assert outcome.snapshot_id == "abcd1234"
    assert outcome.warnings == []
    assert outcome.report == (
        "✅ **a.test**: snapshot `abcd1234` (1.0.0+1.0) in 5s: 1 new, 2 changed, 3 unchanged "
        "files; 1.0 KiB added of 2.0 MiB."
    )
    (row,) = site.store.backups("a.test")
    assert {k: row[k] for k in ("actor", "result", "snapshot_id", "version", "detail")} == {
        "actor": OPERATOR,
        "result": "ok",
        "snapshot_id": "abcd1234",
        "version": "1.0.0+1.0",
        "detail": None,
    }
    assert (row["files_new"], row["files_changed"], row["files_unmodified"]) == (1, 2, 3)
    assert (row["data_added"], row["total_bytes"]) == (1024, 2 * 1024 * 1024)
    assert row["finished_at"] >= row["started_at"]


async def test_a_failed_pre_hook_fails_the_backup_and_the_post_hook_still_runs(
    site: Site,
) -> None:
    env = site.add(
        labels={
            **LABELLED,
            "backupbot.backup.pre-hook": "maintenance on",
            "backupbot.backup.post-hook": "maintenance off",
        }
    )
    site.swarm.hooks["maintenance on"] = (1, "half on\nmaintenance failed\n")
    with pytest.raises(UserError) as caught:
        await site.backups.backup(env, Sink(), OPERATOR)
    error = "pre-hook in app failed (exit 1):\n```\nhalf on\nmaintenance failed\n```"
    assert str(caught.value) == error
    assert site.swarm.execs == [("app", "maintenance on"), ("app", "maintenance off")]
    assert site.restic.backed_up == []
    (row,) = site.store.backups("a.test")
    assert (row["result"], row["actor"], row["detail"], row["snapshot_id"]) == (
        "failed",
        OPERATOR,
        error,
        None,
    )
    (entry, *_) = site.store.audit_log("a.test")
    assert (entry.action, entry.detail) == ("backup.failed", error)


async def test_a_failed_post_hook_is_a_warning(site: Site) -> None:
    env = site.add(labels={**LABELLED, "backupbot.backup.post-hook": "maintenance off"})
    site.swarm.hooks["maintenance off"] = (2, "")
    outcome = await site.backups.backup(env, Sink(), OPERATOR)
    assert outcome.warnings == ["post-hook in app failed (exit 2)"]
    assert outcome.report.splitlines() == [
        "⚠️ **a.test**: snapshot `abcd1234` (1.0.0+1.0) in 5s: 1 new, 2 changed, 3 unchanged "
        "files; 1.0 KiB added of 2.0 MiB.",
        "  - ⚠️ post-hook in app failed (exit 2)",
    ]
    (row,) = site.store.backups("a.test")
    assert (row["result"], row["detail"]) == ("warning", "post-hook in app failed (exit 2)")


async def test_unreadable_files_and_label_warnings_make_a_warning_result(site: Site) -> None:
    env = site.add(labels={**LABELLED, "backupbot.bogus": "1"})
    site.restic.summary = dataclasses.replace(
        SUMMARY, warnings=[f"/data/f{n}: permission denied" for n in range(24)]
    )
    outcome = await site.backups.backup(env, Sink(), OPERATOR)
    assert outcome.warnings[0] == "app: unknown label backupbot.bogus ignored"
    assert len(outcome.warnings) == 25
    lines = outcome.report.splitlines()
    assert lines[0].startswith("⚠️ **a.test**")
    assert lines[1:3] == [
        "  - ⚠️ app: unknown label backupbot.bogus ignored",
        "  - ⚠️ /data/f0: permission denied",
    ]
    assert len(lines) == 1 + 20 + 1
    assert lines[-1] == "  - … and 5 more"
    (row,) = site.store.backups("a.test")
    # Unreadable files make an incomplete snapshot: recorded as "partial", which is not
    # a good backup (issue 11; it was "warning" before).
    assert row["result"] == "partial"
    assert row["detail"].splitlines()[-1] == "/data/f23: permission denied"


async def test_a_restic_failure_is_recorded_and_the_post_hook_runs(site: Site) -> None:
    env = site.add(labels={**LABELLED, "backupbot.backup.post-hook": "off"})
    site.restic.backup_error = ResticError("restic backup failed: disk full", exit_code=1)
    with pytest.raises(ResticError):
        await site.backups.backup(env, Sink(), OPERATOR)
    assert site.swarm.execs == [("app", "off")]
    (row,) = site.store.backups("a.test")
    assert (row["result"], row["detail"]) == ("failed", "restic backup failed: disk full")


async def test_a_stack_stuck_mid_update_is_not_backed_up(site: Site, clock: FakeTime) -> None:
    env = site.add(
        labels={**LABELLED, "backupbot.backup.pre-hook": "on"},
        services=[
            svc(labels={**LABELLED, "backupbot.backup.pre-hook": "on"}, update_state="paused")
        ],
    )
    with pytest.raises(UserError, match="the update of app is paused"):
        await site.backups.backup(env, Sink(), SCHEDULER)
    assert site.swarm.execs == [] and site.restic.backed_up == []
    (row,) = site.store.backups("a.test")
    assert (row["result"], row["actor"]) == ("failed", SCHEDULER)


async def test_the_repository_is_created_on_first_use_once(tmp_path: Path) -> None:
    site = make_site(tmp_path, initialised=False)
    a = site.add("a.test")
    b = site.add("b.test")
    first, second = await asyncio.gather(
        site.backups.backup(a, Sink(), OPERATOR), site.backups.backup(b, Sink(), OPERATOR)
    )
    assert (first.app, second.app) == ("a.test", "b.test")
    assert site.restic.calls.count("init") == 1
    assert site.restic.calls.count("version") == 1
    # Both first backups found no repository; it was created once, then both ran.
    assert site.restic.calls.count("backup") == 4
    assert site.restic.calls.index("init") > site.restic.calls.index("backup")
    await site.backups.backup(a, Sink(), OPERATOR)
    assert site.restic.calls.count("init") == 1
    assert site.restic.calls.count("version") == 1
    site.store.close()


async def test_an_existing_repository_is_not_initialised(site: Site) -> None:
    await site.backups.backup(site.add(), Sink(), OPERATOR)
    assert "init" not in site.restic.calls


async def test_other_repository_errors_fail_the_backup_and_are_retried_next_time(
    site: Site,
) -> None:
    env = site.add()
    site.restic.backup_error = ResticError("wrong password", kind="wrong_password")
    with pytest.raises(ResticError, match="wrong password"):
        await site.backups.backup(env, Sink(), OPERATOR)
    assert "init" not in site.restic.calls
    assert site.store.backups("a.test")[0]["result"] == "failed"
    site.restic.backup_error = None
    await site.backups.backup(env, Sink(), OPERATOR)
    assert site.store.backups("a.test")[0]["result"] == "ok"


# ================================================================ states, retention, check


async def test_states_age_size_and_last_failure(site: Site) -> None:
    now = datetime(2024, 1, 10, 12, 0, tzinfo=UTC)
    site.add("a.test")
    site.add("b.test")
    site.add("c.test")
    site.add("plain.test", labels={})
    site.restic.snaps = [
        snap("a0000000", "a.test", now - timedelta(days=3)),
        snap("a1111111", "a.test", now - timedelta(hours=2)),
        snap("c1111111", "c.test", now - timedelta(hours=5)),
        snap("0dd00000", "old.test", now - timedelta(days=40)),  # no longer labelled
        dataclasses.replace(snap("ffff0000"), tags=["coopbot"]),  # no app tag: ignored
    ]
    store = site.store
    store.add_backup("a.test", OPERATOR, "ok", snapshot_id="a1111111", total_bytes=4096)
    store.add_backup("b.test", OPERATOR, "failed", detail="pre-hook in app failed (exit 1)")
    # c's last good run is older than its newest snapshot: its size is not that of c1111111.
    store.add_backup("c.test", OPERATOR, "warning", snapshot_id="c0000000", total_bytes=99)
    store.add_backup("old.test", OPERATOR, "ok", snapshot_id=full_id("0dd00000"), total_bytes=7)
    store.add_backup("old.test", SCHEDULER, "failed")
    states, problems = await site.backups.states(now.timestamp())
    assert problems == []
    by_app = {s.app: s for s in states}
    assert [s.app for s in states] == ["a.test", "b.test", "c.test", "old.test"]
    a, b, c, old = (by_app[n] for n in ("a.test", "b.test", "c.test", "old.test"))
    assert (a.newest and a.newest.short_id, a.age, a.size, a.last_failed) == (
        "a1111111",
        7200.0,
        4096,
        None,
    )
    assert (b.newest, b.age, b.size, b.last_failed) == (
        None,
        None,
        None,
        "pre-hook in app failed (exit 1)",
    )
    assert (c.age, c.size, c.last_failed) == (5 * 3600.0, None, None)
    assert (old.age, old.size, old.last_failed) == (40 * 86400.0, 7, "failed")
    assert [s.stale(36 * 3600) for s in states] == [False, True, False, True]


async def test_retention_forgets_per_app_then_prunes(tmp_path: Path) -> None:
    site = make_site(tmp_path, retention={"daily": 3, "weekly": 0, "monthly": 2})
    site.restic.snaps = [snap("a1111111", "a.test"), snap("b1111111", "b.test")]
    site.restic.snaps.append(snap("a2222222", "a.test"))
    site.restic.forget_removes = {"app=a.test": ["x", "y"], "app=b.test": ["z"]}
    sink = Sink()
    report = await site.backups.retention(sink)
    assert site.restic.forgotten == [
        ["app=a.test", "3/0/2", "group_by=''"],
        ["app=b.test", "3/0/2", "group_by=''"],
    ]
    assert site.restic.calls[-1] == "prune"
    assert sink.lines == [
        "🧹 Retention: forgetting old snapshots of a.test",
        "🧹 Retention: forgetting old snapshots of b.test",
        "🧹 Retention: pruning unused data",
    ]
    assert report == (
        "🧹 Retention (daily 3, weekly 0, monthly 2): 3 snapshot(s) of 2 app(s) forgotten, "
        "repository pruned."
    )
    site.store.close()


async def test_check_reads_the_configured_subset(tmp_path: Path) -> None:
    site = make_site(tmp_path, check_read_data_subset="1/10")
    assert await site.backups.check() == (
        "✅ `restic check` passed (structure, and 1/10 of the data read back)."
    )
    assert site.restic.calls[-1] == "check 1/10"
    site.store.close()


# ================================================================ drill


THREE_DAYS_AGO = datetime.now(UTC) - timedelta(days=3)


async def test_drill_compares_the_restored_tree_with_the_listing(site: Site) -> None:
    a_root = str(site.root / "a_test_data/_data")
    b_root = str(site.root / "b_test_data/_data")
    site.restic.snaps = [
        snap("a0000000", "a.test", THREE_DAYS_AGO - timedelta(days=1)),  # not the newest
        snap("a1111111", "a.test", THREE_DAYS_AGO),
        snap("b1111111", "b.test", THREE_DAYS_AGO),
    ]
    site.restic.listings = {
        full_id("a1111111"): [
            (a_root, "dir", 0),
            (a_root + "/f", "file", 5),
            (a_root + "/sub/g", "file", 6),
            (a_root + "/link", "symlink", 0),
        ],
        full_id("b1111111"): [(b_root + "/f", "file", 5)],
    }
    site.restic.files = {
        full_id("a1111111"): {a_root + "/f": b"12345", a_root + "/sub/g": b"123456"},
        full_id("b1111111"): {b_root + "/f": b"123"},  # restored short
    }
    sink = Sink()
    ok, report = await site.backups.drill(sink)
    assert not ok
    head, a_line, b_line = report.splitlines()
    assert head == "❌ Restore drill found problems:"
    assert re.fullmatch(
        r"- ✅ a\.test \(a1111111, 3d old\): 2 files, 11 B restored and matching, in \d+s",
        a_line,
    )
    assert b_line == (
        "- ❌ b.test (b1111111, 3d old): restored 1 files / 3 B, the snapshot lists 1 / 5 B"
    )
    assert sink.lines == ["🧪 Restore drill 1/2: a.test", "🧪 Restore drill 2/2: b.test"]
    assert [r[0] for r in site.restic.restored] == [full_id("a1111111"), full_id("b1111111")]
    assert all(
        r[1].parent == site.data_dir and r[1].name.startswith("drill-")
        for r in site.restic.restored
    )
    assert list(site.data_dir.glob("drill-*")) == []  # temporary folders removed


async def test_drill_passes_when_everything_matches(site: Site) -> None:
    a_root = str(site.root / "a_test_data/_data")
    site.restic.snaps = [snap("a1111111", "a.test", THREE_DAYS_AGO)]
    site.restic.listings = {full_id("a1111111"): [(a_root + "/f", "file", 2)]}
    site.restic.files = {full_id("a1111111"): {a_root + "/f": b"ab"}}
    ok, report = await site.backups.drill(Sink())
    assert ok
    assert report.startswith("✅ Restore drill passed:\n- ✅ a.test (a1111111, 3d old): 1 files")


async def test_drill_reports_a_failed_restore_and_goes_on(site: Site) -> None:
    site.restic.snaps = [snap("a1111111", "a.test", THREE_DAYS_AGO)]
    site.restic.listings = {full_id("a1111111"): []}
    site.restic.restore_error = ResticError("restic restore failed: pack not found")
    ok, report = await site.backups.drill(Sink())
    assert not ok
    assert report == (
        "❌ Restore drill found problems:\n"
        "- ❌ a.test (a1111111): restic restore failed: pack not found"
    )
    assert list(site.data_dir.glob("drill-*")) == []


async def test_drill_without_snapshots(site: Site) -> None:
    assert await site.backups.drill(Sink()) == (
        False,
        "❌ Restore drill: the repository has no coopbot snapshots yet.",
    )


# ================================================================ restore


def restorable(site: Site) -> AppEnv:
    env = site.add(volumes={"data": {"f": b"old", "extra": b"gone after"}, "db": {"d": b"1"}})
    data, db = str(site.root / "a_test_data/_data"), str(site.root / "a_test_db/_data")
    site.restic.snaps = [
        snap("a0000000", "a.test", paths=[data]),
        snap("a1111111", "a.test", paths=[data, db], version=None),
        snap("b1111111", "b.test", paths=[str(site.root / "b_test_data/_data")]),
    ]
    site.restic.files = {
        full_id("a1111111"): {data + "/f": b"new", data + "/sub/n": b"n", db + "/d": b"2"}
    }
    return env


async def test_find_snapshot(site: Site) -> None:
    env = restorable(site)
    assert (await site.backups.find_snapshot(env, None)).short_id == "a1111111"  # newest
    assert (await site.backups.find_snapshot(env, "a000")).short_id == "a0000000"
    assert (await site.backups.find_snapshot(env, full_id("a1111111"))).short_id == "a1111111"
    assert await site.backups.newest_snapshot(env) == full_id("a1111111")


@pytest.mark.parametrize("wanted", ["b1111111", "a00", "a2"])
async def test_find_snapshot_refuses_other_apps_and_short_prefixes(site: Site, wanted: str) -> None:
    env = restorable(site)
    with pytest.raises(UserError) as caught:
        await site.backups.find_snapshot(env, wanted)
    assert str(caught.value) == (
        f"No snapshot `{wanted}` of a.test; `!snapshots a.test` lists them."
    )


async def test_find_snapshot_of_an_app_without_snapshots(site: Site) -> None:
    with pytest.raises(UserError) as caught:
        await site.backups.find_snapshot(site.add(), None)
    assert str(caught.value) == "a.test has no snapshots in /srv/restic."


async def test_restore_plan(site: Site) -> None:
    env = restorable(site)
    site.swarm.stacks_of[STACK].append(svc("db"))
    found, scope, text = await site.backups.restore_plan(env, "a111", None)
    assert found.short_id == "a1111111"
    assert scope == [site.root / "a_test_data/_data", site.root / "a_test_db/_data"]
    assert text.splitlines() == [
        "Restore **a.test** from snapshot `a1111111` (2024-01-01 03:30 UTC, unversioned). "
        "This **replaces**:",
        "- `a_test_data`: now 2 files, 13 B",
        "- `a_test_db`: now 1 files, 1 B",
        "The app's services (app, db) are scaled to 0 meanwhile and back afterwards; the "
        "current data is kept aside until the app runs again.",
    ]
    _, scope, text = await site.backups.restore_plan(env, "a0000000", "data/sub")
    assert scope == [site.root / "a_test_data/_data/sub"]
    assert "(2024-01-01 03:30 UTC, 1.0.0+1.0)" in text
    assert "- `a_test_data/sub`: now 0 files, 0 B" in text.splitlines()


async def test_restore_swaps_the_data_and_cleans_up(site: Site) -> None:
    env = restorable(site)
    site.apps.envs[0] = env = dataclasses.replace(env, timeout=60)
    sink = Sink()
    report = await site.backups.restore(env, None, None, sink, OPERATOR)
    assert tree(site.root / "a_test_data/_data") == {"f": b"new", "sub/n": b"n"}
    assert tree(site.root / "a_test_db/_data") == {"d": b"2"}
    assert sorted(p.name for p in (site.root / "a_test_data").iterdir()) == ["_data"]
    assert sorted(p.name for p in (site.root / "a_test_db").iterdir()) == ["_data"]
    assert site.swarm.scaled == [{"app": 0}, {"app": 1}]
    assert report.splitlines() == [
        "♻️ **Restore a.test** from `a1111111`",
        "",
        "✅ scaled to 0 (was app=1)",
        "✅ restored a_test_data",
        "✅ restored a_test_db",
        "✅ running again (app=1)",
        "",
        "✅ a.test restored from `a1111111`.",
    ]
    assert [inc for _, _, inc in site.restic.restored] == [
        [str(site.root / "a_test_data/_data")],
        [str(site.root / "a_test_db/_data")],
    ]
    assert sink.lines[-1].endswith("⏳ scaling back to app=1")
    (entry, *_) = site.store.audit_log("a.test")
    assert (entry.action, entry.detail) == ("restore", "a1111111 → 2 path(s)")


async def test_a_restore_that_does_not_come_back_says_where_the_old_data_is(site: Site) -> None:
    env = restorable(site)
    site.swarm.converged = Convergence(False, False, ["app: task exited (1)"], [])
    with pytest.raises(UserError) as caught:
        await site.backups.restore(env, "a111", "data", Sink(), OPERATOR)
    text = str(caught.value)
    (aside,) = (site.root / "a_test_data").glob("coopbot-previous-*")
    assert tree(aside / "_data") == {"f": b"old", "extra": b"gone after"}
    assert tree(site.root / "a_test_data/_data") == {"f": b"new", "sub/n": b"n"}
    assert tree(site.root / "a_test_db/_data") == {"d": b"1"}  # not in --path: untouched
    assert text.splitlines()[-3:] == [
        "❌ the app did not come back up",
        "**State of a.test:** restored, but not running: app: task exited (1).",
        f"- the data it replaced is kept at `{aside / '_data'}`",
    ]
    (entry, *_) = site.store.audit_log("a.test")
    assert entry.action == "restore.failed"


async def test_a_restore_pre_hook_failure_leaves_the_app_untouched(site: Site) -> None:
    env = restorable(site)
    labels = {**LABELLED, "backupbot.restore.pre-hook": "stop-writes"}
    site.swarm.stacks_of[STACK] = [svc(labels=labels)]
    site.swarm.hooks["stop-writes"] = (3, "")
    with pytest.raises(UserError) as caught:
        await site.backups.restore(env, None, None, Sink(), OPERATOR)
    assert str(caught.value).endswith(
        "❌ restore pre-hook in app failed (exit 3)\n**State of a.test:** running, untouched."
    )
    assert site.swarm.scaled == [] and site.restic.restored == []
    assert tree(site.root / "a_test_data/_data") == {"extra": b"gone after", "f": b"old"}


# ================================================================ the commands


async def ask(bot: Bot, body: str, sender: str = OPERATOR) -> list[str]:
    """What the bot answered to this message (progress messages as they read now)."""
    msg = message(body, sender)
    await bot.dispatcher.handle(msg)
    await drain(bot)
    chat = chat_of(bot)
    return [chat.shown(s.event_id) for s in chat.sent if s.reply_to == msg.event_id]


async def scheduled(bot: Bot, command: str) -> list[tuple[str, tuple[str, ...]]]:
    """Run `command` as the scheduler; (text as shown now, mentions) of what it posted."""
    chat = chat_of(bot)
    before = len(chat.sent)
    await bot.dispatcher.run_scheduled(command)
    await drain(bot)
    return [(chat.shown(s.event_id), s.mentions) for s in chat.sent[before:]]


ME = "@coopbot:test"
MEMBERS = {
    ADMIN: (True, 100),
    "@admin2:test": (True, 100),
    OPERATOR: (True, 50),
    VIEWER: (True, 0),
    ME: (True, 100),  # the bot pings nobody for itself
    "@left:test": (False, 100),
}
ADMINS = ("@admin2:test", ADMIN)  # sorted
PINGED = " ".join(ADMINS)


def wire(bot: Bot, tmp_path: Path, **config: Any) -> Site:
    """Real Backups (and the bot's store) over fake apps, swarm and restic."""
    site = make_site(tmp_path, store=bot.store, **config)
    swap_services(bot.services, apps=site.apps, backups=site.backups)
    return site


async def test_backup_commands_without_a_backups_section(make_bot: BotFactory) -> None:
    bot = make_bot()
    why = (
        "Backups are not configured: add a `backups:` section (repository, password_file) "
        "to the bot's config."
    )
    assert await ask(bot, "!backup a.test") == [f"❌ {why}"]
    assert await ask(bot, "!backups", VIEWER) == [why]
    assert await ask(bot, "!snapshots a.test", VIEWER) == [why]
    (text,) = await ask(bot, "!restore a.test")
    assert text == why


async def test_backup_one_app(make_bot: BotFactory, tmp_path: Path) -> None:
    bot = make_bot()
    site = wire(bot, tmp_path)
    site.add()
    (text,) = await ask(bot, "!backup a.test")
    assert text == (
        "✅ **a.test**: snapshot `abcd1234` (1.0.0+1.0) in 5s: 1 new, 2 changed, 3 unchanged "
        "files; 1.0 KiB added of 2.0 MiB."
    )
    assert bot.store.backups("a.test")[0]["actor"] == OPERATOR
    (denied,) = await ask(bot, "!backup a.test", VIEWER)
    assert denied.startswith("🔒 `!backup` needs the operator role")
    (bad,) = await ask(bot, "!backup ../etc")
    assert "Usage: `!backup <target>`" in bad


async def test_a_failed_scheduled_check_pings_the_admins(
    make_bot: BotFactory, tmp_path: Path
) -> None:
    bot = make_bot(members=MEMBERS)
    site = wire(bot, tmp_path)
    site.restic.check_error = ResticError("restic check failed: pack 1234 is damaged")
    posted = await scheduled(bot, "backup check")
    assert posted == [
        ("❌ `restic check` failed: restic check failed: pack 1234 is damaged", ()),
        (
            f"🚨 {PINGED}: scheduled backup work failed, see above.",
            ADMINS,
        ),
    ]
    # A member who asked sees the failure, and nobody is pinged.
    chat = chat_of(bot)
    before = len(chat.sent)
    (text,) = await ask(bot, "!backup check")
    assert text == "❌ `restic check` failed: restic check failed: pack 1234 is damaged"
    assert len(chat.sent) == before + 1
    # A passing scheduled check pings nobody.
    site.restic.check_error = None
    assert await scheduled(bot, "backup check") == [
        ("✅ `restic check` passed (structure, and 5% of the data read back).", ())
    ]


async def test_a_failed_scheduled_drill_pings_the_admins(
    make_bot: BotFactory, tmp_path: Path
) -> None:
    bot = make_bot(members=MEMBERS)
    wire(bot, tmp_path)
    posted = await scheduled(bot, "backup drill")
    assert posted == [
        ("❌ Restore drill: the repository has no coopbot snapshots yet.", ()),
        (
            f"🚨 {PINGED}: scheduled backup work failed, see above.",
            ADMINS,
        ),
    ]


async def test_scheduled_backup_all_prunes_after_a_complete_run(
    make_bot: BotFactory, tmp_path: Path
) -> None:
    bot = make_bot(members=MEMBERS)
    site = wire(bot, tmp_path)
    site.add("a.test")
    site.add("b.test")
    site.add("plain.test", labels={})
    ((text, mentions),) = await scheduled(bot, "backup all")
    assert mentions == ()
    assert text.startswith("💾 Backups: 2 of 2 app(s) backed up.\n\n✅ **a.test**")
    assert text.endswith("repository pruned.")
    assert site.restic.calls[-1] == "prune"
    # A member's `!backup all` does not prune.
    prunes = site.restic.calls.count("prune")
    (text,) = await ask(bot, "!backup all")
    assert text.startswith("💾 Backups: 2 of 2 app(s) backed up.")
    assert site.restic.calls.count("prune") == prunes
    # One app failing: no retention, and the admins are told.
    site.swarm.stacks_of["b_test"] = [svc(labels=LABELLED, stack="b_test", update_state="paused")]
    (report, ping) = await scheduled(bot, "backup all")
    assert report[0].startswith("💾 Backups: 1 of 2 app(s) backed up; **1 failed**.\n\n")
    assert "❌ **b.test**: b.test is not backed up: the update of app is paused." in report[0]
    assert site.restic.calls.count("prune") == prunes
    assert ping == (
        f"🚨 {PINGED}: scheduled backup work failed, see above.",
        ADMINS,
    )


async def test_backup_all_with_nothing_labelled(make_bot: BotFactory, tmp_path: Path) -> None:
    bot = make_bot()
    site = wire(bot, tmp_path)
    site.add("plain.test", labels={})
    assert await ask(bot, "!backup all") == [
        "No deployed app has a `backupbot.backup=true` label: nothing to back up."
    ]


async def test_scheduled_age_check_speaks_only_when_the_stale_set_changes(
    make_bot: BotFactory, tmp_path: Path
) -> None:
    bot = make_bot(members=MEMBERS)
    site = wire(bot, tmp_path)
    site.add("a.test")
    fresh = datetime.now(UTC) - timedelta(hours=1)
    posted = await scheduled(bot, "backups")
    assert len(posted) == 1
    text, mentions = posted[0]
    assert mentions == ADMINS
    assert text.splitlines()[:5] == [
        f"🚨 {PINGED} backups need attention: a.test.",
        "",
        "| app | newest snapshot | age | size | repository | |",
        "|---|---|---|---|---|---|",
        "| a.test | none | | | ? | ⚠️ never backed up |",
    ]
    assert bot.store.get_json(AGE_ALERT_KEY) == ["a.test"]
    assert await scheduled(bot, "backups") == []  # the same apps: said already
    site.restic.snaps = [snap("a1111111", "a.test", fresh)]
    assert await scheduled(bot, "backups") == []  # all fine: nothing to say
    assert bot.store.get_json(AGE_ALERT_KEY) == []
    site.add("b.test")
    bot.store.add_backup("a.test", SCHEDULER, "failed", detail="pre-hook failed\nsecond line")
    ((text, _),) = await scheduled(bot, "backups")
    assert text.startswith(f"🚨 {PINGED} backups need attention: a.test, b.test.")
    assert "⚠️ last run failed: pre-hook failed |" in text
    assert await scheduled(bot, "backups") == []
    # A member asking always gets the table, and it does not reset the alert.
    (table,) = await ask(bot, "!backups", VIEWER)
    assert table.startswith("| app | newest snapshot | age | size | repository | |")
    assert "🚨" not in table
    assert bot.store.get_json(AGE_ALERT_KEY) == ["a.test", "b.test"]
    assert await scheduled(bot, "backups") == []


async def test_backups_table_for_members(make_bot: BotFactory, tmp_path: Path) -> None:
    bot = make_bot()
    site = wire(bot, tmp_path, max_age="1d")
    site.add("a.test")
    site.add("b.test")
    when = datetime(2024, 1, 1, 3, 30, tzinfo=UTC)
    site.restic.snaps = [
        snap("a1111111", "a.test", datetime.now(UTC) - timedelta(hours=2)),
        snap("b1111111", "b.test", when),
    ]
    run = bot.store.add_backup(
        "a.test", OPERATOR, "ok", snapshot_id="a1111111", total_bytes=3 * 1024
    )
    bot.store.set_backup_repo_bytes(run, 2048)
    (text,) = await ask(bot, "!backups", VIEWER)
    lines = text.splitlines()
    assert re.fullmatch(
        r"\| a\.test \| `a1111111` \d{4}-\d\d-\d\d \d\d:\d\d UTC \| 2h \| 3\.0 KiB "
        r"\| 2\.0 KiB \| ✅ \|",
        lines[2],
    )
    assert lines[3].startswith("| b.test | `b1111111` 2024-01-01 03:30 UTC | ")
    assert lines[3].endswith(" | ? | ? | ⚠️ older than 1d |")


async def test_backups_table_when_there_is_nothing(make_bot: BotFactory, tmp_path: Path) -> None:
    bot = make_bot()
    wire(bot, tmp_path)
    assert await ask(bot, "!backups", VIEWER) == [
        "No app is labelled for backups and the repository has no snapshots."
    ]


async def test_snapshots_command(make_bot: BotFactory, tmp_path: Path) -> None:
    bot = make_bot()
    site = wire(bot, tmp_path)
    env = restorable(site)
    (text,) = await ask(bot, f"!snapshots {env.domain}", VIEWER)
    assert text.splitlines() == [
        "Snapshots of a.test (2):",
        "| id | time | version | paths |",
        "|---|---|---|---|",
        "| `a1111111` | 2024-01-01 03:30 UTC |  | 2 |",
        "| `a0000000` | 2024-01-01 03:30 UTC | 1.0.0+1.0 | 1 |",
    ]
    site.add("c.test")
    assert await ask(bot, "!snapshots c.test", VIEWER) == [
        "c.test has no snapshots yet; `!backup c.test` makes one."
    ]


@pytest.mark.parametrize("bad", ["xyz!", "abc", "ABCDEF12", "g" * 8, "a" * 65])
async def test_restore_with_a_malformed_snapshot_id_gets_the_usage(
    make_bot: BotFactory, tmp_path: Path, bad: str
) -> None:
    bot = make_bot()
    site = wire(bot, tmp_path)
    restorable(site)
    (text,) = await ask(bot, f"!restore a.test {bad}")
    assert text == (
        "<snapshot>: a snapshot id is 4 to 64 hex digits (see `!snapshots <app>`)\n"
        "Usage: `!restore <app> [snapshot] [--path PATH]`"
    )
    assert bot.store.proposals() == []


async def test_restore_of_a_snapshot_that_is_not_the_apps(
    make_bot: BotFactory, tmp_path: Path
) -> None:
    bot = make_bot()
    site = wire(bot, tmp_path)
    restorable(site)
    (text,) = await ask(bot, "!restore a.test b1111111")
    assert text == "No snapshot `b1111111` of a.test; `!snapshots a.test` lists them."
    assert bot.store.proposals() == []


async def test_restore_is_proposed_with_the_plan(make_bot: BotFactory, tmp_path: Path) -> None:
    bot = make_bot(approvals={"required": 2})
    site = wire(bot, tmp_path)
    restorable(site)
    (text,) = await ask(bot, "!restore a.test a111 --path db")
    assert "Proposal" in text
    assert "Restore **a.test** from snapshot `a1111111`" in text
    assert "- `a_test_db`: now 1 files, 1 B" in text
    (row,) = bot.store.proposals()
    assert row.policy == "restore"
    assert site.swarm.scaled == []  # nothing happens before the vote


async def test_schedule_lists_the_tasks(make_bot: BotFactory, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("secret\n")
    now = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)  # a Monday
    bot = make_bot(
        backups={"repository": "/srv/restic", "password_file": "pw"},
        timezone="UTC",
        clock=now.timestamp,
    )
    (text,) = await ask(bot, "!schedule", VIEWER)
    assert text.splitlines() == [
        "Times in UTC.",
        "| task | cron | runs | next | last |",
        "|---|---|---|---|---|",
        "| the backup of every app | `30 3 * * *` | `!backup all` | Tue 2024-01-02 03:30 | — |",
        "| the repository check | `0 5 * * 0` | `!backup check` | Sun 2024-01-07 05:00 | — |",
        "| the restore drill | `0 6 1 * *` | `!backup drill` | Thu 2024-02-01 06:00 | — |",
        "| the backup age check | `17 * * * *` | `!backups` | Mon 2024-01-01 12:17 | — |",
        "| the upgrade check | `0 9 * * *` | `!upgrades` | Tue 2024-01-02 09:00 | — |",
    ]
    # A first tick only notes the tasks: no last run is shown for them.
    scheduler = bot.scheduler
    await scheduler.tick(now)
    (text,) = await ask(bot, "!schedule", VIEWER)
    assert "| `!backups` | Mon 2024-01-01 12:17 | — |" in text
    # Once the age check has run (12:17), its last run shows and the next follows it.
    await scheduler.tick(datetime(2024, 1, 1, 12, 17, tzinfo=UTC))
    (text,) = await ask(bot, "!schedule", VIEWER)
    assert "| `!backups` | Mon 2024-01-01 13:17 | Mon 2024-01-01 12:17 |" in text


async def test_schedule_in_another_timezone(make_bot: BotFactory) -> None:
    now = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)
    bot = make_bot(timezone="Europe/Berlin", clock=now.timestamp)
    (text,) = await ask(bot, "!schedule", VIEWER)
    assert text.splitlines()[0] == "Times in Europe/Berlin."
    assert text.splitlines()[-1] == (
        "| the upgrade check | `0 9 * * *` | `!upgrades` | Tue 2024-07-02 09:00 | — |"
    )


async def test_nothing_scheduled(make_bot: BotFactory) -> None:
    bot = make_bot(upgrades={"check_schedule": None})
    assert await ask(bot, "!schedule", VIEWER) == ["Nothing is scheduled."]


# ================================================================ votes mean what was voted


async def _propose_restore(bot: Bot, body: str) -> str:
    (text,) = await ask(bot, body)
    found = re.search(r"Proposal `(\w+)`", text)
    assert found, text
    return found.group(1)


async def test_a_restore_plan_pins_the_full_snapshot_id_and_the_paths(
    make_bot: BotFactory, tmp_path: Path
) -> None:
    bot = make_bot(approvals={"required": 1})
    site = wire(bot, tmp_path)
    restorable(site)
    await _propose_restore(bot, "!restore a.test --path data")
    (row,) = bot.store.proposals()
    data = str(site.root / "a_test_data/_data")
    assert row.plan.pins == {"snapshot": full_id("a1111111"), "paths": [data]}
    assert row.plan.fingerprint == f"{full_id('a1111111')}|1.0.0+1.0|{data}"


async def test_a_restore_runs_the_voted_snapshot_not_a_newer_one(
    make_bot: BotFactory, tmp_path: Path
) -> None:
    bot = make_bot(approvals={"required": 1})
    site = wire(bot, tmp_path)
    restorable(site)
    proposal = await _propose_restore(bot, "!restore a.test")  # the newest: a1111111
    # A backup of the (broken) data lands while members vote: it is not what was voted.
    newer = snap("a2222222", "a.test", paths=[str(site.root / "a_test_data/_data")])
    site.restic.snaps.append(dataclasses.replace(newer, time=datetime(2024, 1, 2, tzinfo=UTC)))
    await bot.dispatcher.handle(message(f"!approve {proposal}", ADMIN))
    await drain(bot)
    assert {sid for sid, _, _ in site.restic.restored} == {full_id("a1111111")}
    assert tree(site.root / "a_test_data/_data") == {"f": b"new", "sub/n": b"n"}


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("data/nothere", "--path 'data/nothere' is not in snapshot a1111111: it holds no"),
        ("data/\x00x", "control characters (a NUL byte, a newline) are refused"),
        ("data/../../etc", "give <volume>[/<sub-path>]"),
    ],
)
async def test_bad_restore_paths_are_refused_before_the_vote(
    make_bot: BotFactory, tmp_path: Path, path: str, why: str
) -> None:
    bot = make_bot(approvals={"required": 1})
    site = wire(bot, tmp_path)
    restorable(site)
    data = str(site.root / "a_test_data/_data")
    site.restic.listings = {full_id("a1111111"): [(data + "/f", "file", 3)]}
    msg = message("!restore a.test", OPERATOR)
    msg = dataclasses.replace(msg, body=f"!restore a.test --path '{path}'")
    await bot.dispatcher.handle(msg)
    await drain(bot)
    chat = chat_of(bot)
    (text,) = [chat.shown(s.event_id) for s in chat.sent if s.reply_to == msg.event_id]
    assert why in text
    assert bot.store.proposals() == [] and site.swarm.scaled == []


async def test_a_failed_restore_scales_back_and_says_what_was_replaced(site: Site) -> None:
    env = restorable(site)
    real = site.restic.restore

    async def second_fails(snapshot_id: str, target: Path, include: Any = ()) -> None:
        if site.restic.restored:
            site.restic.restored.append((snapshot_id, target, list(include)))
            raise ResticError("restic restore failed: connection reset")
        await real(snapshot_id, target, include)

    site.restic.restore = second_fails  # type: ignore[method-assign]
    with pytest.raises(UserError) as caught:
        await site.backups.restore(env, None, None, Sink(), OPERATOR)
    text = str(caught.value)
    assert site.swarm.scaled == [{"app": 0}, {"app": 1}]  # back to what it was
    assert "Replaced: `a_test_data`; not replaced: `a_test_db`." in text
    assert "❌ restic restore failed: connection reset" in text
    assert "scaled back to app=1" in text
    (aside,) = (site.root / "a_test_data").glob("coopbot-previous-*")
    assert f"- the data it replaced is kept at `{aside / '_data'}`" in text
    assert tree(site.root / "a_test_db/_data") == {"d": b"1"}  # untouched
    assert not list((site.root / "a_test_db").glob("coopbot-restore-*"))  # staging gone


async def test_a_cancelled_restore_scales_back_and_tells_where_the_data_is(site: Site) -> None:
    env = restorable(site)
    entered = asyncio.Event()

    async def hangs(snapshot_id: str, target: Path, include: Any = ()) -> None:
        entered.set()
        await asyncio.sleep(3600)

    site.restic.restore = hangs  # type: ignore[method-assign]
    told: list[str] = []

    async def tell(text: str) -> None:
        told.append(text)

    task = asyncio.create_task(site.backups.restore(env, None, None, Sink(), OPERATOR, tell=tell))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert site.swarm.scaled == [{"app": 0}, {"app": 1}]
    (text,) = told
    assert "Replaced: nothing; not replaced: `a_test_data`, `a_test_db`." in text
    assert "the restore was cancelled (or its time ran out)" in text
    assert tree(site.root / "a_test_data/_data") == {"f": b"old", "extra": b"gone after"}


async def test_a_restore_whose_plan_changed_while_stopping_does_nothing_and_scales_back(
    site: Site,
) -> None:
    from bot.errors import StalePlan

    env = restorable(site)

    async def changed() -> None:
        raise StalePlan("Not run: things changed since the vote on `abcde`")

    with pytest.raises(StalePlan) as caught:
        await site.backups.restore(env, None, None, Sink(), OPERATOR, still_as_planned=changed)
    assert site.swarm.scaled == [{"app": 0}, {"app": 1}]
    assert site.restic.restored == []
    assert "Replaced: nothing" in str(caught.value)


async def test_retention_keeps_an_app_with_a_restore_vote_or_an_incomplete_backup(
    make_bot: BotFactory, tmp_path: Path
) -> None:
    bot = make_bot(approvals={"required": 2})
    site = wire(bot, tmp_path)
    restorable(site)
    site.restic.snaps.append(snap("c1111111", "c.test"))
    await _propose_restore(bot, "!restore a.test")
    bot.store.add_backup("b.test", OPERATOR, "ok", snapshot_id="b1111111")
    bot.store.add_backup("b.test", OPERATOR, "partial", snapshot_id="b2222222")
    report = await site.backups.retention(Sink())
    assert [f[0] for f in site.restic.forgotten] == ["app=c.test"]
    assert "⏸ Kept every snapshot of a.test (a restore of it is being voted on), b.test" in report
    bot.store.add_backup("b.test", OPERATOR, "ok", snapshot_id="b3333333")  # clean again
    await site.backups.retention(Sink())
    assert [f[0] for f in site.restic.forgotten][1:] == ["app=b.test", "app=c.test"]


async def test_an_incomplete_backup_is_not_the_newest_good_one(site: Site) -> None:
    env = site.add("a.test")
    site.restic.summary = dataclasses.replace(SUMMARY, warnings=["/data/f: permission denied"])
    outcome = await site.backups.backup(env, Sink(), OPERATOR)
    assert "**Incomplete**" in outcome.report.splitlines()[0]
    site.restic.snaps = [
        snap("a0000000", "a.test", datetime(2024, 1, 1, tzinfo=UTC)),
        snap(SUMMARY.snapshot_id, "a.test", datetime(2024, 1, 2, tzinfo=UTC)),
    ]
    states, _ = await site.backups.states(datetime(2024, 1, 3, tzinfo=UTC).timestamp())
    (state,) = states
    assert state.newest is not None and state.newest.short_id == "a0000000"
    assert state.incomplete == "/data/f: permission denied"
    assert await site.backups.newest_snapshot(env) == full_id("a0000000")
    assert site.backups.retention_paused("a.test") is not None


async def test_backup_all_takes_each_apps_lock_in_turn(
    make_bot: BotFactory, tmp_path: Path
) -> None:
    bot = make_bot()
    site = wire(bot, tmp_path)
    site.add("a.test")
    site.add("b.test")
    locks = bot.jobs.locks
    await locks.acquire("b.test")  # b is being restored
    msg = message("!backup all", OPERATOR)
    await bot.dispatcher.handle(msg)
    for _ in range(50):
        await asyncio.sleep(0)
    assert [tags[1] for _, tags in site.restic.backed_up] == ["app=a.test"]
    locks.release("b.test")
    await drain(bot)
    assert [tags[1] for _, tags in site.restic.backed_up] == ["app=a.test", "app=b.test"]
