"""Convergence when a node goes down (issue 16, part 5): a task on a node that is not
ready keeps the state it last reported ("running"), so it must not count; the stack
converges only on the nodes that remain, and each lost task is named with its node."""

from __future__ import annotations

from bot.ops.swarm import ConvergenceWatch, describe_pending, evaluate
from bot.ops.swarm.convergence import NODE_DOWN, node_down_line
from tests.unit.test_convergence import by_service, svc, task

DOWN = {"w1": "mn-worker-1"}


def test_a_running_task_on_a_down_node_is_not_converged() -> None:
    tasks = by_service(task(node="w1"))
    assert evaluate([svc()], tasks) == ("converged", [])  # without the nodes: fooled
    status, lines = evaluate([svc()], tasks, down=DOWN)
    assert status == "pending"
    assert lines == ["app: task on node mn-worker-1, which is down: not counted as running"]
    assert NODE_DOWN in lines[0]
    assert describe_pending([svc()], tasks, down=DOWN) == ["app: 0/1 running"]


def test_rescheduled_on_a_remaining_node_converges() -> None:
    # Swarm gave the slot a new task elsewhere; the old one wants shutdown.
    old = task(node="w1", desired="shutdown")
    new = task(node="w2")
    # Converged, and the service hit is still named.
    status, lines = evaluate([svc()], by_service(old, new), down=DOWN)
    assert (status, lines) == ("converged", [node_down_line("app", "mn-worker-1")])
    # A task that had ended before the node went down was not lost with it.
    ended = task(node="w1", state="shutdown", desired="shutdown")
    assert evaluate([svc()], by_service(ended, new), down=DOWN) == ("converged", [])


def test_only_services_on_the_down_node_are_named() -> None:
    services = [svc("app"), svc("db")]
    tasks = by_service(task("app", node="w1"), task("db", node="w2"))
    status, lines = evaluate(services, tasks, down=DOWN)
    assert status == "pending"
    assert lines == [node_down_line("app", "mn-worker-1")]


def test_a_global_service_converges_on_the_nodes_that_remain() -> None:
    g = svc(replicas=None)
    tasks = by_service(task(node="w1", slot=None), task(node="w2", slot=None))
    status, lines = evaluate([g], tasks, down=DOWN)
    assert (status, lines) == ("converged", [node_down_line("app", "mn-worker-1")])
    # Swarm's global orchestrator shuts the down node's task: not waited for either.
    shut = by_service(task(node="w1", slot=None, desired="shutdown"), task(node="w2", slot=None))
    assert evaluate([g], shut, down=DOWN)[0] == "converged"
    assert evaluate([g], shut)[0] == "pending"  # without the nodes: waits forever
    only_down = by_service(task(node="w1", slot=None))
    assert evaluate([g], only_down, down=DOWN)[0] == "pending"


def test_the_watch_names_the_node_once_and_times_out_honestly() -> None:
    watch = ConvergenceWatch("st", start=0.0, timeout=10.0, monitor=2.0)
    tasks = by_service(task(node="w1"))
    news, outcome = watch.observe([svc()], tasks, 1.0, DOWN)
    assert news == [node_down_line("app", "mn-worker-1")]
    assert outcome is None
    news, outcome = watch.observe([svc()], tasks, 5.0, DOWN)
    assert news == []
    assert outcome is None
    news, outcome = watch.observe([svc()], tasks, 11.0, DOWN)
    assert outcome is not None
    assert not outcome.ok
    assert outcome.failures[:2] == ["not converged after 10s", "app: 0/1 running"]
    assert node_down_line("app", "mn-worker-1") in outcome.failures


def test_a_node_going_down_during_the_monitor_window_is_no_success() -> None:
    watch = ConvergenceWatch("st", start=0.0, timeout=60.0, monitor=5.0)
    tasks = by_service(task(node="w1"))
    assert watch.observe([svc()], tasks, 1.0)[1] is None  # converged, monitoring
    assert watch.observe([svc()], tasks, 4.0, DOWN)[1] is None  # node lost: not yet
    assert watch.observe([svc()], tasks, 7.0, DOWN)[1] is None  # still not
    rescheduled = by_service(task(node="w1", desired="shutdown"), task(node="w2"))
    assert watch.observe([svc()], rescheduled, 8.0, DOWN)[1] is None
    _, outcome = watch.observe([svc()], rescheduled, 13.0, DOWN)
    assert outcome is not None
    assert outcome.ok
