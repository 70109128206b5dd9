"""Nodes and placement: the pure rules (constraints, stranded volumes) and the nodes
feature over a fake swarm (what !nodes, !status and !node drain say)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.errors import UserError
from bot.features.nodes import Nodes
from bot.ops.abra import AppEnv
from bot.ops.swarm import NodeInfo, Placement, compose_placements, eligible, find_node, stranded
from bot.ops.swarm.placement import matches, node_info, service_placement
from tests.fakes import FakeApps, FakeSwarm


def node(hostname: str, role: str = "worker", **labels: str) -> NodeInfo:
    return NodeInfo(
        id=f"id-{hostname}",
        hostname=hostname,
        role=role,
        availability="active",
        state="ready",
        engine_version="20.10.24",
        labels=dict(labels),
        address=f"10.0.0.{len(hostname)}",
        leader=role == "manager",
    )


NODES = [node("manager", "manager"), node("worker-1", disk="ssd"), node("worker-2")]


def test_node_json_is_read() -> None:
    raw: dict[str, Any] = {
        "ID": "abc123",
        "Version": {"Index": 42},
        "Spec": {"Role": "worker", "Availability": "drain", "Labels": {"disk": "ssd"}},
        "Description": {
            "Hostname": "w1",
            "Platform": {"OS": "linux", "Architecture": "x86_64"},
            "Engine": {"EngineVersion": "20.10.24", "Labels": {"zone": "a"}},
        },
        "Status": {"State": "ready", "Addr": "10.1.1.1"},
    }
    info = node_info(raw)
    assert (info.hostname, info.role, info.availability, info.state) == (
        "w1",
        "worker",
        "drain",
        "ready",
    )
    assert (info.engine_version, info.address, info.version, info.leader) == (
        "20.10.24",
        "10.1.1.1",
        42,
        False,
    )
    assert info.labels == {"disk": "ssd"}
    assert info.engine_labels == {"zone": "a"}
    assert matches("node.platform.os == linux", info)
    assert matches("engine.labels.zone==a", info)
    assert not matches("node.labels.disk != ssd", info)


@pytest.mark.parametrize(
    ("constraints", "allowed"),
    [
        ((), ["manager", "worker-1", "worker-2"]),
        (("node.role == worker",), ["worker-1", "worker-2"]),
        (("node.role==worker", "node.hostname != worker-2"), ["worker-1"]),
        (("node.hostname == worker-2",), ["worker-2"]),
        (("node.id == id-manager",), ["manager"]),
        (("node.labels.disk == ssd",), ["worker-1"]),
        (("node.labels.disk != ssd",), ["manager", "worker-2"]),  # no label: != holds
        (("node.labels.gpu == yes",), []),
        (("NODE.ROLE == manager",), ["manager"]),  # keys are case-insensitive
    ],
)
def test_constraints_as_the_scheduler_reads_them(
    constraints: tuple[str, ...], allowed: list[str]
) -> None:
    assert [n.hostname for n in eligible(constraints, NODES)] == allowed


def test_find_node_by_hostname_id_or_unique_prefix() -> None:
    assert find_node(NODES, "worker-1") is NODES[1]
    assert find_node(NODES, "id-worker-2") is NODES[2]
    assert find_node(NODES, "id-w") is None  # two nodes start so
    assert find_node(NODES, "id-") is None  # too short a prefix
    assert find_node(NODES, "id-ma") is NODES[0]
    assert find_node(NODES, "nope") is None


def test_stranded_names_the_volume_the_nodes_and_the_pin() -> None:
    placements = [
        Placement("db", "s", (), ("s_data",), nodes=("id-worker-2",)),
        Placement("pinned", "s", ("node.hostname == worker-1",), ("s_x",)),
        Placement("labelled", "s", ("node.labels.disk == ssd",), ("s_y",)),
        Placement("workers", "s", ("node.role == worker",), ("s_z",)),
        Placement("novol", "s", (), ()),
        Placement("everywhere", "s", (), ("s_g",), global_mode=True),
    ]
    found = stranded(placements, NODES)
    assert [s.service for s in found] == ["db", "workers"]
    db, workers = found
    assert db.pin == "node.hostname == worker-2"
    assert db.on == "worker-2"
    assert db.eligible == ("manager", "worker-1", "worker-2")
    assert "`node.hostname == worker-2`" in db.describe()
    assert "s_data" in db.describe()
    assert workers.pin == "node.hostname == worker-1"
    assert workers.on == ""
    assert stranded(placements, NODES[:1]) == []  # one node: nothing can move


def test_compose_volumes_local_named_external_and_binds() -> None:
    config: dict[str, Any] = {
        "services": {
            "app": {
                "volumes": [
                    {"type": "volume", "source": "data", "target": "/data"},
                    {"type": "bind", "source": "/etc", "target": "/etc"},
                    "named:/n",
                    "./rel:/r",
                    {"type": "volume", "source": "nfs", "target": "/nfs"},
                    {"type": "volume", "source": "ext", "target": "/e"},
                ],
                "deploy": {"placement": {"constraints": ["node.role == worker"]}},
            },
            "web": {"deploy": {"mode": "global"}, "volumes": ["data:/d"]},
        },
        "volumes": {
            "data": None,
            "named": {"name": "custom"},
            "nfs": {"driver": "local-persist"},
            "ext": {"external": True},
        },
    }
    app, web = compose_placements(config, "st")
    assert app.local_volumes == ("custom", "ext", "st_data")
    assert app.constraints == ("node.role == worker",)
    assert web.global_mode
    assert web.local_volumes == ("st_data",)


def test_service_json_placement() -> None:
    raw: dict[str, Any] = {
        "ID": "svc",
        "Spec": {
            "Name": "st_app",
            "Labels": {"com.docker.stack.namespace": "st"},
            "Mode": {"Replicated": {"Replicas": 1}},
            "TaskTemplate": {
                "ContainerSpec": {
                    "Mounts": [
                        {"Type": "volume", "Source": "st_data", "Target": "/d"},
                        {
                            "Type": "volume",
                            "Source": "st_nfs",
                            "Target": "/n",
                            "VolumeOptions": {"DriverConfig": {"Name": "nfs"}},
                        },
                        {"Type": "bind", "Source": "/etc", "Target": "/etc"},
                    ]
                },
                "Placement": {"Constraints": ["node.hostname == w1"]},
            },
        },
    }
    p = service_placement(raw, ["n2", "n1", "n2"])
    assert (p.service, p.stack, p.local_volumes, p.nodes) == (
        "app",
        "st",
        ("st_data",),
        ("n1", "n2"),
    )
    assert p.constraints == ("node.hostname == w1",)
    assert not p.global_mode


def env(domain: str = "files.coop.test") -> AppEnv:
    return AppEnv(domain, "default", Path(f"/abra/servers/default/{domain}.env"), "demo", None, {})


def feature() -> tuple[Nodes, FakeSwarm]:
    swarm = FakeSwarm(
        node_list=list(NODES),
        placement_list=[
            Placement(
                "app", "files_coop_test", (), ("files_coop_test_data",), nodes=("id-worker-1",)
            ),
            Placement(
                "web", "other_coop_test", ("node.role == worker",), (), nodes=("id-worker-2",)
            ),
        ],
    )
    apps = FakeApps({"default": swarm}, envs=[env(), env("other.coop.test")])
    return Nodes(apps, ["default"]), swarm


async def test_listing_shows_each_node_and_what_runs_there() -> None:
    nodes, _ = feature()
    text = await nodes.listing()
    lines = text.splitlines()
    assert lines[0] == "**default**: 3 node(s)"
    assert lines[1].startswith("- ✅ `manager` (manager, leader): active, ready, engine `20.10.24`")
    assert "runs nothing" in lines[1]
    assert "labels `disk=ssd`; runs files.coop.test" in lines[2]
    assert lines[3].endswith("runs other.coop.test")
    assert "could lose data by moving" in lines[4]
    assert lines[5].startswith("  - files.coop.test: app keeps")
    assert "`node.hostname == worker-1`" in lines[5]


async def test_status_lines_show_the_node_of_each_task_and_the_warning() -> None:
    nodes, _ = feature()
    lines = await nodes.status_lines(env())
    assert lines[:2] == ["Nodes:", "- app: `worker-1`"]
    assert "node.hostname == worker-1" in lines[2]
    assert lines[2].startswith("- ⚠ app keeps")


async def test_drain_plan_and_run() -> None:
    nodes, swarm = feature()
    plan = await nodes.plan_availability(None, "worker-1", "drain")
    assert plan.fingerprint == "id-worker-1:active"
    assert "Drain node `worker-1`" in plan.summary
    assert "files.coop.test" in plan.summary
    assert "empty volume" in plan.summary  # its stranded service is named
    report = await nodes.set_availability(None, "worker-1", "drain", wait=1)
    assert report == "✅ `worker-1` on default is drained: no task runs there."
    assert swarm.availability_set == [("worker-1", "drain")]
    same = await nodes.plan_availability(None, "worker-1", "drain")
    assert not same.needed
    assert same.summary == "`worker-1` on default is already drain."
    plan = await nodes.plan_availability("default", "worker-1", "active")
    assert plan.fingerprint == "id-worker-1:drain"
    assert "active" in plan.summary
    with pytest.raises(UserError, match="No node `nope`"):
        await nodes.plan_availability(None, "nope", "drain")
    with pytest.raises(UserError, match="No server"):
        nodes.server("elsewhere")
    # The member's text is shown inert: no mention or link rides along.
    with pytest.raises(UserError) as refused:
        nodes.server("@room[x](https://evil.test)")
    assert "No server `@room[x](https://evil.test)`" in str(refused.value)


async def test_deploy_preflight_warning_from_compose() -> None:
    _, swarm = feature()
    config: dict[str, Any] = {
        "services": {"app": {"volumes": ["data:/d"]}},
        "volumes": {"data": {}},
    }
    (found,) = await swarm.stranded_by(config, "files_coop_test")
    assert found.pin == "node.hostname == worker-1"  # where its task runs now
    assert await FakeSwarm().stranded_by(config, "files_coop_test") == []
