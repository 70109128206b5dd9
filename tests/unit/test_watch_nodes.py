"""The swarm watch on several nodes: a node that goes down opens an urgent incident
naming the apps that ran there (issue 16, part 5)."""

from __future__ import annotations

from bot.features.watch import Rules, Thresholds
from bot.ops.swarm.events import NodeState, ServiceState, SwarmSnapshot

MANAGER = NodeState("m", "mn-manager", "ready", "active")


def service(stack: str, *nodes: str) -> ServiceState:
    return ServiceState(f"{stack}_app", stack, 1, 1, None, "", (), nodes)


def snap(at: float, worker_state: str, *services: ServiceState) -> SwarmSnapshot:
    worker = NodeState("w1", "mn-worker-1", worker_state, "active")
    return SwarmSnapshot(at, (MANAGER, worker), services, True)


def test_a_down_node_names_the_apps_that_ran_there() -> None:
    rules = Rules(Thresholds())
    pinned, other = service("pinned_org", "w1"), service("other_org", "m")
    assert rules.snapshot("default", snap(0, "ready", pinned, other)) == []
    # Swarm moved the task off already (a new one, pending): the memory still names it.
    moved = service("pinned_org")
    [decision] = rules.snapshot("default", snap(10, "down", moved, other))
    assert decision.action == "open"
    assert decision.incident.urgent
    assert decision.incident.summary == (
        "node **mn-worker-1** is down; apps that ran there: `pinned_org`"
    )
    assert rules.snapshot("default", snap(20, "down", moved, other)) == []  # said once
    # Back: closes after the hysteresis, like any node incident.
    assert rules.snapshot("default", snap(30, "ready", pinned, other)) == []
    [closed] = rules.snapshot("default", snap(200, "ready", pinned, other))
    assert closed.action == "close"


def test_a_down_node_without_apps_says_only_that() -> None:
    rules = Rules(Thresholds())
    [decision] = rules.snapshot("default", snap(0, "down", service("other_org", "m")))
    assert decision.incident.summary == "node **mn-worker-1** is down"


def test_stale_tasks_on_the_down_node_name_their_app_after_a_restart() -> None:
    rules = Rules(Thresholds())  # no memory: the tasks' last state says where they ran
    [decision] = rules.snapshot("default", snap(0, "down", service("a_org", "w1")))
    assert decision.incident.summary.endswith("apps that ran there: `a_org`")
