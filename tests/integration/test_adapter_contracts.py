"""The fakes of tests/fakes.py held to the real adapters: one set of assertions, run
against both (as mautrix runs one store test suite against every store).

The unit tests of backups and upgrades trust FakeSwarm and FakeRestic; if a fake
drifts from what the real swarm or restic answers, those tests pass while the bot
breaks. So each test here is parametrized over [fake, real]: the same state is set up
once by hand in the fake and once for real (the docker CLI on the private dockerd of
tests/harness; restic on a repository in tmp_path), and the same questions must get
the same answers. Recipes have no fake: the unit tests use git repos made by
tests/harness/recipes.py, so those are held to a repo made the way a recipe's
maintainers make one (annotated tags, notes added after tagging, a clone of it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.ops.recipes import RecipeError, RecipeRepo
from bot.ops.restic import BackupSummary, Progress, Restic, ResticError, Snapshot
from bot.ops.swarm import ServiceInfo, Swarm
from tests.fakes import FakeRestic, FakeSwarm
from tests.harness.dockerd import Dockerd
from tests.harness.recipes import commit_files, git, make_recipe

IMPLEMENTATIONS = ["fake", "real"]


# ============================================================================ signatures


def public_methods(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


@pytest.mark.parametrize(("fake", "real"), [(FakeSwarm, Swarm), (FakeRestic, Restic)])
def test_every_fake_method_is_a_real_one_with_the_same_parameters(fake: type, real: type) -> None:
    """A fake may leave out optional parameters the features never pass, but what it
    has must be called as the real one is: same names, kinds, order and defaults."""
    real_methods = public_methods(real)
    for name, method in public_methods(fake).items():
        assert name in real_methods, f"{fake.__name__}.{name} is not a method of {real.__name__}"
        assert inspect.iscoroutinefunction(method) == inspect.iscoroutinefunction(
            real_methods[name]
        ), f"{fake.__name__}.{name}: async on one side only"
        ours = list(inspect.signature(method).parameters.values())
        theirs = inspect.signature(real_methods[name]).parameters
        positional = [p.name for p in theirs.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
        for param in ours:
            assert param.name in theirs, f"{fake.__name__}.{name}({param.name}) is not real"
            twin = theirs[param.name]
            assert param.kind == twin.kind, f"{fake.__name__}.{name}({param.name}): kind"
            assert param.default == twin.default, f"{fake.__name__}.{name}({param.name}) default"
        ours_positional = [p.name for p in ours if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert ours_positional == positional[: len(ours_positional)], f"{name}: order"
        required = {
            n for n, p in theirs.items() if p.default is p.empty and p.kind != p.VAR_KEYWORD
        }
        missing = required - {p.name for p in ours}
        assert not missing, f"{fake.__name__}.{name} lacks {sorted(missing)}"


# ============================================================================ swarm

STACK = "contract_a"
IMAGE = "local/busybox:1.0"
VERSION_LABEL = f"coop-cloud.{STACK}.version"
SECRET = f"{STACK}_pw_v1"


def info(short: str, labels: dict[str, str]) -> ServiceInfo:
    return ServiceInfo(
        id=f"id-{short}",
        name=f"{STACK}_{short}",
        short_name=short,
        image=IMAGE,
        replicas_desired=1,
        replicas_running=1,
        update_state=None,
        update_message="",
        labels=labels,
        version=1,
        has_previous_spec=False,
        previous_image=None,
        recent_errors=[],
    )


def fake_swarm() -> FakeSwarm:
    """The fake set up as unit tests do, for the stack real_stack() deploys."""
    labels = {"com.docker.stack.namespace": STACK}
    return FakeSwarm(
        # seeded out of order: the answers must come sorted, as the real ones do
        stacks_of={
            STACK: [
                info("db", labels),
                info("app", {**labels, VERSION_LABEL: "1.0.0+1.0"}),
            ]
        },
        volumes_of={STACK: [f"{STACK}_data"]},
        mounts_of={STACK: {"app": [(f"{STACK}_data", "/data")], "db": []}},
        secret_names={SECRET},
        hooks={"echo hi": (0, "hi\n"), "exit 3": (3, "")},
    )


@pytest.fixture(scope="module")
def real_stack(dockerd: Dockerd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """STACK deployed with the docker CLI (not the adapter under test), running."""
    dockerd.import_image(IMAGE, ["/bin/sh"])
    folder = tmp_path_factory.mktemp("contract-stack")
    common = {
        "image": IMAGE,
        "command": ["sleep", "3600"],
        "stop_grace_period": "1s",
    }
    compose = {
        "version": "3.8",
        "services": {
            "app": {
                **common,
                "volumes": ["data:/data"],
                "deploy": {
                    "endpoint_mode": "dnsrr",
                    "labels": [f"{VERSION_LABEL}=1.0.0+1.0"],
                },
            },
            "db": {**common, "deploy": {"endpoint_mode": "dnsrr"}},
        },
        "volumes": {"data": {}},
    }
    (folder / "compose.yml").write_text(yaml.safe_dump(compose))
    dockerd.cli("secret", "create", SECRET, "-", input="hunter2")
    dockerd.cli("stack", "deploy", "-c", str(folder / "compose.yml"), STACK)
    deadline = time.monotonic() + 120
    while True:
        out = dockerd.cli("service", "ls", "--format", "{{.Name}} {{.Replicas}}").stdout
        if sorted(out.split("\n")) == ["", f"{STACK}_app 1/1", f"{STACK}_db 1/1"]:
            break
        assert time.monotonic() < deadline, f"the contract stack did not come up:\n{out}"
        time.sleep(0.5)
    try:
        yield STACK
    finally:
        dockerd.cli("stack", "rm", STACK, check=False)
        dockerd.cli("secret", "rm", SECRET, check=False)


@pytest.fixture(params=IMPLEMENTATIONS)
async def swarm(request: pytest.FixtureRequest) -> AsyncIterator[FakeSwarm | Swarm]:
    if request.param == "fake":
        yield fake_swarm()
        return
    dockerd: Dockerd = request.getfixturevalue("dockerd")
    request.getfixturevalue("real_stack")
    real = Swarm(dockerd.host, docker_config=str(dockerd.workdir / "cli-config"))
    try:
        yield real
    finally:
        await real.close()


async def test_stacks_and_services_are_listed_by_name(swarm: FakeSwarm | Swarm) -> None:
    stacks = await swarm.stacks()
    assert list(stacks) == sorted(stacks)
    services = stacks[STACK]
    assert [s.name for s in services] == [f"{STACK}_app", f"{STACK}_db"]
    assert [s.short_name for s in services] == ["app", "db"]
    assert [s.replicas_desired for s in services] == [1, 1]
    assert [s.replicas_running for s in services] == [1, 1]
    assert services[0].labels[VERSION_LABEL] == "1.0.0+1.0"
    assert services[0].image.startswith(IMAGE)
    assert [s.name for s in await swarm.services(STACK)] == [s.name for s in services]
    assert await swarm.services("contract_none") == []


async def test_listings_are_the_callers_to_change(swarm: FakeSwarm | Swarm) -> None:
    (await swarm.stacks())[STACK].clear()
    (await swarm.services(STACK)).clear()
    assert len(await swarm.services(STACK)) == 2
    assert len((await swarm.stacks())[STACK]) == 2


async def test_secrets_are_every_secret_by_full_name(swarm: FakeSwarm | Swarm) -> None:
    secrets = await swarm.secrets()
    assert isinstance(secrets, set)
    assert SECRET in secrets


async def test_volumes_and_mounts_use_the_full_volume_name(swarm: FakeSwarm | Swarm) -> None:
    assert await swarm.volumes(STACK) == [f"{STACK}_data"]
    assert await swarm.volumes("contract_none") == []
    mounts = await swarm.mounts(STACK)
    assert mounts == {"app": [(f"{STACK}_data", "/data")], "db": []}


async def test_exec_answers_exit_code_and_output(swarm: FakeSwarm | Swarm) -> None:
    assert await swarm.exec(STACK, "app", "echo hi") == (0, "hi\n")
    # a failing hook is its exit code, not an exception
    assert await swarm.exec(STACK, "app", "exit 3") == (3, "")


async def test_exec_keeps_only_the_tail_of_a_flood_of_output(
    dockerd: Dockerd, real_stack: None
) -> None:
    """A hook that prints 20 MB (a dump sent to stdout by mistake): the adapter streams
    it and keeps its last 64 kB, saying how much it left out (real daemon only: the
    bound is in how docker-py's stream is read)."""
    real = Swarm(dockerd.host, docker_config=str(dockerd.workdir / "cli-config"))
    try:
        flood = "head -c 20000000 /dev/zero | tr '\\0' a; echo; echo END; exit 4"
        code, output = await real.exec(STACK, "app", flood)
    finally:
        await real.close()
    assert code == 4
    first, _, rest = output.partition("\n")
    assert first.startswith("[the first ")
    dropped = int(first.removeprefix("[the first ").split()[0])
    assert dropped + len(rest.encode()) == 20_000_000 + 5
    assert len(rest.encode()) <= 64 * 1024
    assert rest.endswith("a\nEND\n")


# ============================================================================ restic

RESTIC = "/usr/bin/restic" if os.path.exists("/usr/bin/restic") else shutil.which("restic")


@dataclasses.dataclass
class ResticUnderTest:
    restic: FakeRestic | Restic
    # makes a snapshot with these tags, as the implementation gets one
    seed: Callable[[list[str]], Awaitable[None]]
    source: Path  # a folder with a file in it, to back up


def real_restic(tmp_path: Path) -> ResticUnderTest:
    if RESTIC is None:
        pytest.fail("restic is not installed: run scripts/install-system-deps")
    password = tmp_path / "password"
    password.write_text("contract tests\n")
    restic = Restic(str(tmp_path / "repo"), password, binary=RESTIC, cache_dir=tmp_path / "cache")
    source = tmp_path / "src"
    source.mkdir()
    (source / "file.txt").write_text("hello\n")

    async def seed(tags: list[str]) -> None:
        await restic.backup([source], tags)

    return ResticUnderTest(restic, seed, source)


def fake_restic(tmp_path: Path) -> ResticUnderTest:
    restic = FakeRestic(initialised=False)
    source = tmp_path / "src"
    source.mkdir()
    (source / "file.txt").write_text("hello\n")

    async def seed(tags: list[str]) -> None:
        snapshot_id = os.urandom(32).hex()
        restic.snaps.append(
            Snapshot(snapshot_id, snapshot_id[:8], datetime.now(UTC), [str(source)], tags, "host")
        )

    return ResticUnderTest(restic, seed, source)


@pytest.fixture(params=IMPLEMENTATIONS)
def restic(request: pytest.FixtureRequest, tmp_path: Path) -> ResticUnderTest:
    return fake_restic(tmp_path) if request.param == "fake" else real_restic(tmp_path)


async def test_no_repository_until_init(restic: ResticUnderTest) -> None:
    repo = restic.restic
    with pytest.raises(ResticError) as snapshots:
        await repo.snapshots()
    assert snapshots.value.kind == "no_repository"
    with pytest.raises(ResticError) as backup:
        await repo.backup([restic.source], ["coopbot"])
    assert backup.value.kind == "no_repository"
    await repo.init()
    assert await repo.snapshots() == []


async def test_snapshots_have_every_tag_asked_for(restic: ResticUnderTest) -> None:
    await restic.restic.init()
    await restic.seed(["coopbot", "app=a.test"])
    await restic.seed(["coopbot", "app=b.test"])
    everything = await restic.restic.snapshots()
    assert len(everything) == 2
    assert all(isinstance(s, Snapshot) and len(s.id) == 64 for s in everything)
    assert all(s.id.startswith(s.short_id) and s.time.tzinfo is not None for s in everything)
    assert len(await restic.restic.snapshots(["coopbot"])) == 2
    (a,) = await restic.restic.snapshots(["coopbot", "app=a.test"])
    assert sorted(a.tags) == ["app=a.test", "coopbot"]
    assert a.paths == [str(restic.source)]
    assert await restic.restic.snapshots(["app=c.test"]) == []


async def test_backup_reports_progress_and_a_summary(restic: ResticUnderTest) -> None:
    await restic.restic.init()
    seen: list[Progress] = []

    async def on_progress(progress: Progress) -> None:
        seen.append(progress)

    summary = await restic.restic.backup([restic.source], ["coopbot"], on_progress)
    assert isinstance(summary, BackupSummary)
    assert summary.snapshot_id
    assert summary.files_new + summary.files_changed + summary.files_unmodified >= 1
    assert all(isinstance(p, Progress) for p in seen)


async def test_forget_refuses_what_would_touch_everything(restic: ResticUnderTest) -> None:
    await restic.restic.init()
    with pytest.raises(ValueError, match="forget needs tags"):
        await restic.restic.forget([], 1, 0, 0)
    with pytest.raises(ResticError, match="at least one keep value"):
        await restic.restic.forget(["app=a.test"], 0, 0, 0)
    assert await restic.restic.forget(["app=a.test"], 1, 1, 1) == []


async def test_check_and_version(restic: ResticUnderTest) -> None:
    await restic.restic.init()
    assert "no errors were found" in await restic.restic.check()
    version = await restic.restic.version()
    assert len(version) == 3
    assert all(isinstance(part, int) for part in version)


# ============================================================================ recipes

RELEASES = [
    ("1.0.0+1.0", {"compose.yml": "v1\n", "release/1.0.0+1.0": "First release.\n"}),
    ("1.0.1+1.0", {"compose.yml": "v2\n"}),  # its notes come with the next release
    (
        "10.0.0+2.0",
        {
            "compose.yml": "v3\n",
            "release/10.0.0+2.0": "BREAKING: new layout.\n",
            "release/1.0.1+1.0": "Fixes a bug.\n",
        },
    ),
    # tagged last, yet older by recipe semver than 10.0.0
    ("2.0.0+1.5", {"compose.yml": "v4\n", "release/2.0.0+1.5": "Newer upstream.\n"}),
]


def harness_recipe(root: Path) -> Path:
    """As the unit tests make one: lightweight tags, in the recipes folder itself."""
    return make_recipe(root / "recipes", "demo", RELEASES)


def maintained_recipe(root: Path) -> Path:
    """As a recipe's maintainers make one upstream, with annotated tags; abra clones it."""
    upstream = root / "upstream" / "demo"
    upstream.mkdir(parents=True)
    git(upstream, "init", "--quiet", "--initial-branch=main")
    for tag, files in RELEASES:
        commit_files(upstream, files, f"chore: publish {tag} release")
        git(upstream, "tag", "--annotate", tag, "--message", f"Release {tag}")
    clone = root / "recipes" / "demo"
    clone.parent.mkdir(parents=True)
    subprocess.run(
        ["git", "clone", "--quiet", str(upstream), str(clone)], check=True, capture_output=True
    )
    return clone


@pytest.fixture(params=["harness", "maintained"])
def recipe(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecipeRepo]:
    make = harness_recipe if request.param == "harness" else maintained_recipe
    repo = RecipeRepo(make(tmp_path))
    try:
        yield repo
    finally:
        repo.close()


def test_versions_in_recipe_semver_order(recipe: RecipeRepo) -> None:
    assert [v.text for v in recipe.versions()] == [
        "1.0.0+1.0",
        "1.0.1+1.0",
        "2.0.0+1.5",
        "10.0.0+2.0",
    ]
    newest = recipe.newest()
    assert newest is not None
    assert newest.text == "10.0.0+2.0"
    assert recipe.version("2.0.0+1.5").text == "2.0.0+1.5"
    with pytest.raises(RecipeError, match=r"unknown version 3\.0\.0 of recipe demo"):
        recipe.version("3.0.0")


def test_release_notes_at_each_tag_or_added_later(recipe: RecipeRepo) -> None:
    assert recipe.release_notes("1.0.0+1.0", "10.0.0+2.0") == [
        ("1.0.1+1.0", "Fixes a bug.\n"),
        ("2.0.0+1.5", "Newer upstream.\n"),
        ("10.0.0+2.0", "BREAKING: new layout.\n"),
    ]
    assert recipe.release_notes(None, "1.0.0+1.0") == [("1.0.0+1.0", "First release.\n")]


def test_head_and_local_changes(recipe: RecipeRepo) -> None:
    assert len(recipe.head()) == 40
    assert not recipe.is_dirty()
    (recipe.path / "compose.yml").write_text("edited\n")
    assert recipe.is_dirty()


async def test_the_recipe_adapter_is_safe_off_the_loop(recipe: RecipeRepo) -> None:
    # the features call it through asyncio.to_thread; two at once must agree
    first, second = await asyncio.gather(
        asyncio.to_thread(recipe.versions), asyncio.to_thread(recipe.versions)
    )
    assert first == second
