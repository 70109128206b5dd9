"""Backups where the volume lives (bot/features/backups/remote.py) over fakes: which
node holds an app's data, what the one-off task on that node is given, and what is
refused before anything runs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import BackupsConfig
from bot.core.store import Store
from bot.errors import UserError
from bot.features.backups import Backups
from bot.ops.swarm import NodeInfo, Placement, SwarmError
from bot.ops.swarm.oneoff import OneOffResult
from tests.fakes import FakeApps, FakeRestic, FakeSwarm
from tests.unit.test_backups import Sink, env_of, svc

STACK = "a_test"
HOOKS = {
    "backupbot.backup": "true",
    "backupbot.backup.pre-hook": "echo pre",
    "backupbot.backup.post-hook": "echo post",
}


def node(hostname: str, role: str = "worker") -> NodeInfo:
    return NodeInfo(f"id-{hostname}", hostname, role, "active", "ready", "20.10", {}, "", False)


NODES = [node("manager", "manager"), node("w1"), node("w2")]


def summary_line() -> str:
    return json.dumps(
        {
            "message_type": "summary",
            "snapshot_id": "feedbeef",
            "files_new": 3,
            "files_changed": 0,
            "files_unmodified": 0,
            "data_added": 10,
            "total_bytes_processed": 30,
            "total_duration": 0.5,
        }
    )


class Remote:
    def __init__(self, tmp: Path, *, hooks: bool = False, image: str | None = "img") -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        password = tmp / "pw"
        password.write_text("correct-horse-42\n")
        self.config = BackupsConfig.model_validate(
            {
                "repository": str(tmp / "repo"),
                "password_file": str(password),
                "volumes_root": str(tmp / "volumes"),
                "remote_image": image,
            }
        )
        self.swarm = FakeSwarm(node_list=list(NODES), node_id="id-manager")
        self.swarm.stacks_of[STACK] = [svc(labels=HOOKS if hooks else {"backupbot.backup": "true"})]
        self.worker = FakeSwarm(node_list=list(NODES), node_id="id-w1")
        self.apps = FakeApps({"default": self.swarm}, envs=[env_of()])
        self.store = Store(tmp / "s.sqlite")
        self.backups = Backups(
            self.config,
            self.apps,  # type: ignore[arg-type]
            self.store,
            FakeRestic(),  # type: ignore[arg-type]
            data_dir=tmp / "data",
            node_swarms={"default": {"w1": self.worker}} if hooks else {},  # type: ignore[dict-item]
        )

    def place(self, *placements: Placement) -> None:
        self.swarm.placement_list = list(placements)


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Remote]:
    made = Remote(tmp_path)
    yield made
    made.store.close()


def data_on(*nodes: str, service: str = "app", constraints: tuple[str, ...] = ()) -> Placement:
    return Placement(service, STACK, constraints, (f"{STACK}_data",), nodes=nodes)


async def test_where_the_data_is(remote: Remote) -> None:
    env = env_of()
    remote.swarm.node_list = NODES[:1]
    assert await remote.backups.locate(env) is None  # one node: volumes_root, as before
    remote.swarm.node_list = list(NODES)
    remote.place(data_on("id-manager"))
    where = await remote.backups.locate(env)
    assert where is not None
    assert (where.hostname, where.remote) == ("manager", False)
    remote.place(data_on("id-w1"), Placement("web", STACK, (), ()))
    where = await remote.backups.locate(env)
    assert where is not None
    assert (where.node_id, where.hostname, where.volumes, where.remote) == (
        "id-w1",
        "w1",
        ("data",),
        True,
    )
    # No running task (scaled to 0, its node drained): a constraint that allows one node.
    remote.place(data_on(constraints=("node.hostname == w2",)))
    where = await remote.backups.locate(env)
    assert where is not None
    assert where.hostname == "w2"
    # Two services' volumes on two nodes: one snapshot cannot read both.
    remote.place(data_on("id-w1"), Placement("db", STACK, (), (f"{STACK}_db",), nodes=("id-w2",)))
    with pytest.raises(UserError, match=r"a_test_data on w1, a_test_db on w2.*Pin its services"):
        await remote.backups.locate(env)


async def test_a_backup_on_another_node_is_a_one_off_task_there(remote: Remote) -> None:
    remote.place(data_on("id-w1"))
    status = json.dumps({"message_type": "status", "percent_done": 0.5, "total_files": 3})
    remote.swarm.oneoff_results = [OneOffResult(0, [status, summary_line()], [])]
    sink = Sink()
    outcome = await remote.backups.backup(env_of(), sink, "@bob:test")
    assert outcome.snapshot_id == "feedbeef"
    (call,) = remote.swarm.oneoffs
    root = remote.config.volumes_root
    assert call["node_id"] == "id-w1"
    assert call["image"] == "img"
    (volume, repo) = call["mounts"]
    assert (volume.source, volume.target, volume.read_only, volume.bind) == (
        f"{STACK}_data",
        str(root / f"{STACK}_data" / "_data"),
        True,
        False,
    )
    assert (repo.source, repo.read_only, repo.bind) == (remote.config.repository, False, True)
    # The password and repository go in as secrets, never on the command line.
    assert call["secrets"] == {
        "repository": remote.config.repository,
        "password": "correct-horse-42",
    }
    command = " ".join(call["command"])
    assert "correct-horse-42" not in command
    assert "--host=w1" in command
    assert "--tag=node=w1" in command
    assert "--tag=app=a.test" in command
    assert command.endswith(f"-- {root / f'{STACK}_data' / '_data'}")
    assert any("50%" in line for line in sink.lines)  # progress from the task's log
    assert remote.store.last_backups()["a.test"]["good"] is not None


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (OneOffResult(1, [], ["Fatal: unable to open repository"]), "exited 1: `Fatal"),
        # the task's last words come inert and without the repository's password
        (
            OneOffResult(1, [], ["Fatal: rest:https://u:hunter2@h/r: [x](https://evil)"]),
            r"exited 1: `Fatal: rest:https://u:\*\*\*@h/r: \[x\]\(https://evil\)`",
        ),
        (SwarmError("the node id-w1 is down: the task was lost"), "on w1.*is down"),
        (OneOffResult(0, [], []), "exited 0: no output"),  # no summary: no snapshot
    ],
)
async def test_a_failed_or_lost_task_is_a_failed_backup(
    remote: Remote, answer: OneOffResult | Exception, why: str
) -> None:
    remote.place(data_on("id-w1"))
    remote.swarm.oneoff_results = [answer]
    with pytest.raises(UserError, match=why):
        await remote.backups.backup(env_of(), Sink(), "@bob:test")
    last = remote.store.last_backups()["a.test"]
    assert last["good"] is None
    assert last["last"] is not None
    assert last["last"]["result"] == "failed"


async def test_refused_before_anything_runs(tmp_path: Path) -> None:
    no_image = Remote(tmp_path / "a", image=None)
    no_image.place(data_on("id-w1"))
    with pytest.raises(UserError, match=r"backups\.remote_image"):
        await no_image.backups.backup(env_of(), Sink(), "@bob:test")
    assert no_image.swarm.oneoffs == []
    # Hooks on a node without its own endpoint: a backup without its pre-hook would
    # look good.
    hooks = Remote(tmp_path / "b", hooks=True)
    hooks.backups.node_swarms = {}
    hooks.place(data_on("id-w1"))
    with pytest.raises(UserError, match=r"servers\.default\.nodes names no docker endpoint"):
        await hooks.backups.backup(env_of(), Sink(), "@bob:test")
    assert hooks.swarm.oneoffs == []
    assert hooks.swarm.execs == []


async def test_hooks_run_through_the_nodes_own_endpoint(tmp_path: Path) -> None:
    site = Remote(tmp_path, hooks=True)
    site.place(data_on("id-w1"))
    site.swarm.oneoff_results = [OneOffResult(0, [summary_line()], [])]
    await site.backups.backup(env_of(), Sink(), "@bob:test")
    assert site.worker.execs == [("app", "echo pre"), ("app", "echo post")]
    assert site.swarm.execs == []


async def test_apps_grouped_by_the_node_of_their_data(remote: Remote) -> None:
    envs = [env_of("a.test"), env_of("b.test"), env_of("c.test")]
    for e in envs:
        remote.swarm.stacks_of[e.stack_name] = [svc(stack=e.stack_name)]
    remote.place(
        Placement("app", "a_test", (), ("a_test_data",), nodes=("id-w1",)),
        Placement("app", "b_test", (), ("b_test_data",), nodes=("id-w2",)),
        Placement("app", "c_test", (), ("c_test_data",), nodes=("id-w1",)),
    )
    groups = await remote.backups.by_node(envs)
    assert [[e.domain for e in g] for g in groups] == [["a.test", "c.test"], ["b.test"]]
    remote.swarm.node_list = NODES[:1]
    assert len(await remote.backups.by_node(envs)) == 1  # one node: one after another


@pytest.mark.parametrize(
    ("state", "said"),
    [
        (
            "down",
            "pre-hook in app could not run on node w1: its docker endpoint does not answer; "
            "the manager says w1 is down. Once it is back (`!nodes` shows its state), "
            "`!backup a.test` runs it again.",
        ),
        (
            "ready",
            "pre-hook in app could not run on node w1: its docker endpoint does not answer, "
            "though the manager sees w1 ready: check servers.default.nodes.w1 "
            "(`coopbot check` tests it), then `!backup a.test`.",
        ),
    ],
)
async def test_a_pre_hook_on_a_dead_node_endpoint_names_the_node(
    tmp_path: Path, state: str, said: str
) -> None:
    site = Remote(tmp_path, hooks=True)
    site.place(data_on("id-w1"))
    site.swarm.node_list = [dataclasses.replace(n, state=state) if n.hostname == "w1" else n
                            for n in NODES]  # fmt: skip
    site.worker.unreachable = "unix:///run/w1/docker.sock"
    with pytest.raises(UserError) as caught:
        await site.backups.backup(env_of(), Sink(), "@bob:test")
    assert said in str(caught.value)
    assert "docker.sock" not in str(caught.value)  # the node, not the socket
    assert site.swarm.oneoffs == []  # no restic without its pre-hook
    site.store.close()


async def test_the_repository_is_looked_at_once_per_process(remote: Remote) -> None:
    remote.place(data_on("id-w1"))
    for _ in range(3):
        remote.swarm.oneoff_results.append(OneOffResult(0, [summary_line()], []))
    restic = remote.backups.restic
    for _ in range(3):
        await remote.backups.backup(env_of(), Sink(), "@bob:test")
    assert len(remote.swarm.oneoffs) == 3
    assert restic.calls.count("snapshots") == 1  # type: ignore[attr-defined]
