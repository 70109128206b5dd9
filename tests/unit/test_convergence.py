"""evaluate(): when is a stack converged, pending, failed or rolled back by swarm.

Pure: hand-built ServiceInfo/TaskInfo, no docker. The shapes mirror what dockerd
20.10 reports (checked in tests/integration/test_swarm_adapter.py).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from bot.ops.swarm import (
    ConvergenceWatch,
    ServiceInfo,
    TaskInfo,
    describe_pending,
    evaluate,
    parse_ts,
    service_info,
    task_info,
)

DEPLOYED = "2026-01-01T12:00:00.000000Z"  # the deploy being watched
BEFORE = "2026-01-01T11:00:00.000000Z"
AFTER = "2026-01-01T12:00:05.000000Z"
LATER = "2026-01-01T12:00:10.000000Z"

_ids = itertools.count()


def svc(
    short: str = "app",
    *,
    replicas: int | None = 1,
    state: str | None = None,
    message: str = "",
    started: str | None = None,
    updated: str | None = DEPLOYED,
) -> ServiceInfo:
    return ServiceInfo(
        id=f"id-{short}",
        name=f"st_{short}",
        short_name=short,
        image="local/busybox:1.0",
        replicas_desired=replicas,
        replicas_running=0,
        update_state=state,
        update_message=message,
        labels={},
        version=1,
        has_previous_spec=False,
        previous_image=None,
        recent_errors=[],
        update_started_at=started,
        updated_at=updated,
    )


def task(
    short: str = "app",
    state: str = "running",
    desired: str = "running",
    *,
    slot: int | None = 1,
    node: str = "node1",
    error: str = "",
    at: str = AFTER,
    fresh: bool = True,
) -> TaskInfo:
    return TaskInfo(
        id=f"task-{next(_ids)}",
        service=f"st_{short}",
        state=state,
        desired_state=desired,
        error=error,
        message="",
        image="local/busybox:1.0",
        timestamp=at,
        slot=slot,
        node_id=node,
        up_to_date=fresh,
    )


def by_service(*tasks: TaskInfo) -> dict[str, list[TaskInfo]]:
    out: dict[str, list[TaskInfo]] = {}
    for t in tasks:
        out.setdefault(t.service, []).append(t)
    return out


# --------------------------------------------------------------------------- converged


def test_new_service_running_is_converged() -> None:
    assert evaluate([svc()], by_service(task())) == ("converged", [])


def test_completed_update_running_is_converged() -> None:
    s = svc(state="completed", message="update completed", started=DEPLOYED)
    assert evaluate([s], by_service(task())) == ("converged", [])


def test_all_replicas_must_run() -> None:
    s = svc(replicas=2)
    tasks = by_service(task(slot=1), task("app", "starting", slot=2))
    assert evaluate([s], tasks) == ("pending", [])
    assert describe_pending([s], tasks) == ["app: 1/2 running"]
    tasks = by_service(task(slot=1), task(slot=2))
    assert evaluate([s], tasks) == ("converged", [])


def test_updating_is_pending_even_when_tasks_run() -> None:
    s = svc(state="updating", message="update in progress", started=DEPLOYED)
    tasks = by_service(task())
    assert evaluate([s], tasks) == ("pending", [])
    assert describe_pending([s], tasks) == ["app: 1/1 running, update updating"]


@pytest.mark.parametrize("state", ["new", "pending", "assigned", "preparing", "ready", "starting"])
def test_tasks_on_their_way_are_pending(state: str) -> None:
    assert evaluate([svc()], by_service(task(state=state)))[0] == "pending"


def test_no_tasks_yet_is_pending() -> None:
    assert evaluate([svc()], {}) == ("pending", [])


def test_zero_replicas_are_skipped() -> None:
    assert evaluate([svc(replicas=0)], {}) == ("converged", [])
    # Even with a failing history: nothing is wanted running.
    tasks = by_service(task(state="failed", desired="shutdown", error="boom"))
    assert evaluate([svc(replicas=0), svc("db")], {**tasks, **by_service(task("db"))}) == (
        "converged",
        [],
    )


def test_empty_stack_is_converged() -> None:
    assert evaluate([], {}) == ("converged", [])


# --------------------------------------------------------------------------- old tasks


def test_old_tasks_do_not_count() -> None:
    # A changed command keeps the image: only up_to_date tells old tasks apart.
    tasks = by_service(
        task(fresh=False),  # old spec, still running until the updater gets to it
        task(state="preparing", desired="ready"),
    )
    assert evaluate([svc()], tasks) == ("pending", [])


def test_old_running_tasks_do_not_make_a_replica_count() -> None:
    s = svc(replicas=2)
    tasks = by_service(task(slot=1), task(slot=2, fresh=False))
    assert evaluate([s], tasks)[0] == "pending"


def test_shut_down_tasks_do_not_count() -> None:
    # Running, but swarm wants it gone (e.g. being replaced).
    assert evaluate([svc()], by_service(task(desired="shutdown")))[0] == "pending"


def test_unknown_task_states_are_ignored() -> None:
    tasks = by_service(task(state="orphaned", desired="remove"), task())
    assert evaluate([svc()], tasks) == ("converged", [])


def test_errors_from_before_the_deploy_are_history() -> None:
    tasks = by_service(
        task(state="failed", desired="shutdown", error="old crash", at=BEFORE),
        task(),
    )
    assert evaluate([svc()], tasks) == ("converged", [])


def test_errors_without_timestamps_are_reported() -> None:
    s = svc(updated=None)
    tasks = by_service(task(state="failed", desired="shutdown", error="boom", at=""))
    assert evaluate([s], tasks) == ("pending", ["app: task failed: boom"])


# --------------------------------------------------------------------------- crash loops


def crash_loop(n: int, short: str = "app") -> list[TaskInfo]:
    failed = [
        task(short, "failed", "shutdown", error="task: non-zero exit (1)", at=f"{ts}Z")
        for ts in (f"2026-01-01T12:00:{5 + i:02d}.000000" for i in range(n))
    ]
    return [*failed, task(short, "ready", "ready", at=LATER)]


def test_crash_loop_is_pending_with_its_error_once() -> None:
    status, lines = evaluate([svc()], by_service(*crash_loop(3)))
    assert status == "pending"
    assert lines == ["app: task failed: task: non-zero exit (1)"]


def test_crash_loop_fails_after_max_failures() -> None:
    s = [svc()]
    assert evaluate(s, by_service(*crash_loop(2)), max_failures=3)[0] == "pending"
    status, lines = evaluate(s, by_service(*crash_loop(3)), max_failures=3)
    assert status == "failed"
    assert lines == ["app: 3 tasks failed, giving up", "app: task failed: task: non-zero exit (1)"]


def test_restarted_slot_counts_its_new_task() -> None:
    # The failed task wants shutdown, the new one running: the CLI picks the latter.
    tasks = by_service(task(state="failed", desired="shutdown", error="oom", at=AFTER), task())
    status, lines = evaluate([svc()], tasks)
    assert status == "converged"
    assert lines == []  # converged services report nothing


def test_failures_after_convergence_do_not_fail_max_failures_when_running() -> None:
    tasks = by_service(*crash_loop(5)[:-1], task(at=LATER))
    assert evaluate([svc()], tasks, max_failures=3) == ("converged", [])


# --------------------------------------------------------------------------- errors


def test_rejected_task_reports_its_error() -> None:
    tasks = by_service(
        task(state="rejected", desired="shutdown", error="No such image: local/nope:1.0"),
        task(state="preparing", desired="ready", at=LATER),
    )
    status, lines = evaluate([svc(state="updating", started=DEPLOYED)], tasks)
    assert status == "pending"
    assert lines == ["app: task rejected: No such image: local/nope:1.0"]


def test_pending_task_with_a_scheduling_error_is_reported() -> None:
    error = "no suitable node (scheduling constraints not satisfied on 1 node)"
    tasks = by_service(task(state="pending", error=error))
    assert evaluate([svc()], tasks) == ("pending", [f"app: task pending: {error}"])


def test_lines_are_newest_first_and_distinct() -> None:
    tasks = by_service(
        task(state="failed", desired="shutdown", error="first", at=AFTER),
        task(state="failed", desired="shutdown", error="second", at=LATER),
        task(state="failed", desired="shutdown", error="first", at=LATER),
    )
    _, lines = evaluate([svc()], tasks)
    assert lines == ["app: task failed: second", "app: task failed: first"]


# --------------------------------------------------------------------------- update states


def test_paused_update_fails() -> None:
    s = svc(state="paused", message="update paused due to failure", started=DEPLOYED)
    tasks = by_service(task(state="failed", desired="shutdown", error="task: non-zero exit (1)"))
    status, lines = evaluate([s], tasks)
    assert status == "failed"
    assert lines == [
        "app: update paused: update paused due to failure",
        "app: task failed: task: non-zero exit (1)",
    ]


def test_rollback_paused_fails() -> None:
    s = svc(state="rollback_paused", message="rollback paused", started=DEPLOYED)
    assert evaluate([s], by_service(task()))[0] == "failed"


def test_rollback_completed_is_rolled_back() -> None:
    s = svc(state="rollback_completed", message="rollback completed", started=DEPLOYED)
    s = ServiceInfo(**{**s.__dict__, "updated_at": LATER})  # swarm's rollback changed the spec
    tasks = by_service(
        # The failed task ran the spec swarm abandoned: not up to date any more, but
        # it failed after the update started, so it is the reason.
        task(state="rejected", desired="shutdown", error="No such image: x", fresh=False),
        task(at=LATER),
        task(state="failed", desired="shutdown", error="ancient", at=BEFORE, fresh=False),
    )
    status, lines = evaluate([s], tasks)
    assert status == "rolled_back"
    assert lines == [
        "app: rolled back by swarm: rollback completed",
        "app: task rejected: No such image: x",
    ]


def test_rollback_started_waits() -> None:
    s = svc(state="rollback_started", message="update rolled back due to failure")
    status, lines = evaluate([s], by_service(task()))
    assert status == "pending"
    assert lines == ["app: swarm is rolling back: update rolled back due to failure"]


def test_rolled_back_waits_for_other_services_still_rolling_back() -> None:
    done = svc("app", state="rollback_completed", message="rollback completed")
    going = svc("db", state="rollback_started", message="rolling back")
    tasks = by_service(task("app"), task("db"))
    assert evaluate([done, going], tasks)[0] == "pending"
    going = svc("db", state="completed")
    assert evaluate([done, going], tasks)[0] == "rolled_back"


def test_failure_beats_rollback_and_pending() -> None:
    services = [
        svc("a", state="rollback_completed"),
        svc("b", state="paused", message="paused"),
        svc("c", state="updating"),
    ]
    tasks = by_service(task("a"), task("b"), task("c"))
    assert evaluate(services, tasks)[0] == "failed"


def test_pending_beats_converged() -> None:
    tasks = by_service(task("a"), task("b", state="starting"))
    assert evaluate([svc("a"), svc("b")], tasks)[0] == "pending"


def test_after_our_rollback_rollback_completed_counts_as_completed() -> None:
    s = svc(state="rollback_completed", message="rollback completed", started=DEPLOYED)
    assert evaluate([s], by_service(task()), after_rollback=True) == ("converged", [])
    # ...but its tasks must still run.
    starting = by_service(task(state="starting"))
    assert evaluate([s], starting, after_rollback=True)[0] == "pending"


def test_after_rollback_can_name_services() -> None:
    # wait_converged passes the services that were already rolled back when it began.
    done = svc("app", state="rollback_completed", message="rollback completed")
    assert evaluate([done], by_service(task()), after_rollback={"st_app"}) == ("converged", [])
    assert evaluate([done], by_service(task()), after_rollback={"st_db"})[0] == "rolled_back"
    assert evaluate([done], by_service(task()), after_rollback=set())[0] == "rolled_back"


def test_after_rollback_the_errors_that_caused_it_are_history() -> None:
    s = svc(state="rollback_completed", message="rollback completed", started=DEPLOYED)
    s = ServiceInfo(**{**s.__dict__, "updated_at": AFTER})  # when the spec was restored
    tasks = by_service(
        task(state="rejected", desired="shutdown", error="No such image: x", at=AFTER),
        task(state="starting", at=LATER),
    )
    assert evaluate([s], tasks) == (
        "rolled_back",
        ["app: rolled back by swarm: rollback completed", "app: task rejected: No such image: x"],
    )
    tasks["st_app"][0] = task(
        state="rejected", desired="shutdown", error="No such image: x", at=DEPLOYED
    )
    assert evaluate([s], tasks, after_rollback=True) == ("pending", [])
    crash = task(state="failed", desired="shutdown", error="crashed again", at=LATER)
    status, lines = evaluate([s], {"st_app": [*tasks["st_app"], crash]}, after_rollback=True)
    assert (status, lines) == ("pending", ["app: task failed: crashed again"])


def test_after_our_rollback_rollback_started_is_pending_without_alarm() -> None:
    s = svc(state="rollback_started", message="manually requested rollback")
    assert evaluate([s], by_service(task()), after_rollback=True) == ("pending", [])


def test_after_our_rollback_a_paused_rollback_fails() -> None:
    s = svc(state="rollback_paused", message="rollback paused")
    assert evaluate([s], by_service(task()), after_rollback=True)[0] == "failed"


def test_unknown_update_state_is_pending() -> None:
    assert evaluate([svc(state="something_new")], by_service(task()))[0] == "pending"


# --------------------------------------------------------------------------- global services


def test_global_service_runs_on_every_node_it_has_tasks_for() -> None:
    g = svc("agent", replicas=None)
    one = by_service(task("agent", slot=None, node="n1"))
    assert evaluate([g], one) == ("converged", [])
    two = by_service(
        task("agent", slot=None, node="n1"), task("agent", "starting", slot=None, node="n2")
    )
    assert evaluate([g], two)[0] == "pending"
    assert describe_pending([g], two) == ["agent: 1/2 running"]


def test_global_service_without_tasks_is_pending() -> None:
    g = svc("agent", replicas=None)
    assert evaluate([g], {}) == ("pending", [])
    assert describe_pending([g], {}) == ["agent: 0/? running"]


def test_global_restarted_node_task_counts_the_new_one() -> None:
    g = svc("agent", replicas=None)
    tasks = by_service(
        task("agent", "failed", "shutdown", slot=None, node="n1", error="boom"),
        task("agent", slot=None, node="n1", at=LATER),
    )
    assert evaluate([g], tasks) == ("converged", [])


# --------------------------------------------------------------------------- SDK JSON


def raw_task(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ID": "t1",
        "ServiceID": "s1",
        "Slot": 1,
        "NodeID": "n1",
        "DesiredState": "shutdown",
        "Spec": {"ContainerSpec": {"Image": "local/busybox:1.0"}},
        "Status": {
            "Timestamp": "2026-11-22T05:40:22.144768178Z",
            "State": "failed",
            "Message": "started",
            "Err": "task: non-zero exit (1)",
        },
    }
    return {**base, **over}


def test_task_info_from_json() -> None:
    t = task_info(raw_task(), "st_app", up_to_date=False)
    assert t == TaskInfo(
        id="t1",
        service="st_app",
        state="failed",
        desired_state="shutdown",
        error="task: non-zero exit (1)",
        message="started",
        image="local/busybox:1.0",
        timestamp="2026-11-22T05:40:22.144768Z",
        slot=1,
        node_id="n1",
        up_to_date=False,
    )


def test_service_info_from_json() -> None:
    raw = {
        "ID": "s1",
        "Version": {"Index": 69},
        "UpdatedAt": "2026-11-22T05:40:26.5Z",
        "Spec": {
            "Name": "my_stack_app",
            "Labels": {"com.docker.stack.namespace": "my_stack", "foo": "2"},
            "TaskTemplate": {"ContainerSpec": {"Image": "local/busybox:2.0"}},
            "Mode": {"Replicated": {"Replicas": 2}},
        },
        "PreviousSpec": {"TaskTemplate": {"ContainerSpec": {"Image": "local/busybox:1.0"}}},
        "UpdateStatus": {
            "State": "paused",
            "StartedAt": "2026-11-22T05:40:22.144768178Z",
            "Message": "update paused due to failure",
        },
    }
    tasks = [
        task("my_stack_app", state="failed", desired="shutdown", error="e1", at=AFTER),
        task("my_stack_app", state="rejected", desired="shutdown", error="e2", at=LATER),
        task("my_stack_app", state="failed", desired="shutdown", error="e1", at=BEFORE),
        task("my_stack_app", state="running", slot=2),
        task("my_stack_app", state="running", desired="shutdown", slot=2),
    ]
    info = service_info(raw, tasks)
    assert info.name == "my_stack_app"
    assert info.short_name == "app"
    assert info.image == "local/busybox:2.0"
    assert info.replicas_desired == 2
    assert info.replicas_running == 1
    assert info.update_state == "paused"
    assert info.update_message == "update paused due to failure"
    assert info.labels["foo"] == "2"
    assert info.version == 69
    assert info.has_previous_spec
    assert info.previous_image == "local/busybox:1.0"
    assert info.recent_errors == ["e2", "e1"]
    assert info.update_started_at == "2026-11-22T05:40:22.144768Z"
    assert info.updated_at == "2026-11-22T05:40:26.500000Z"


def test_service_info_global_and_new() -> None:
    raw = {
        "ID": "s2",
        "Version": {"Index": 3},
        "Spec": {"Name": "lonely", "Mode": {"Global": {}}},
    }
    info = service_info(raw, [])
    assert info.short_name == "lonely"
    assert info.replicas_desired is None
    assert info.update_state is None
    assert not info.has_previous_spec
    assert info.previous_image is None
    assert info.labels == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T05:40:22.144768178Z", "2026-11-22T05:40:22.144768+00:00"),
        ("2026-11-22T05:40:22Z", "2026-11-22T05:40:22+00:00"),
        ("2026-11-22T06:40:22.5+01:00", "2026-11-22T05:40:22.500000+00:00"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00+00:00"),
    ],
)
def test_parse_ts(text: str, expected: str) -> None:
    ts = parse_ts(text)
    assert ts is not None
    assert ts.isoformat() == expected


@pytest.mark.parametrize("text", [None, "", "yesterday", "2026-13-40T00:00:00Z"])
def test_parse_ts_rejects(text: str | None) -> None:
    assert parse_ts(text) is None


# --------------------------------------------------------------------------- a watch over time


def watch(**kw: Any) -> ConvergenceWatch:
    return ConvergenceWatch("st", start=0.0, **{"timeout": 60.0, "monitor": 5.0, **kw})


def test_watch_converged_must_hold_for_the_monitor_window() -> None:
    w = watch()
    news, outcome = w.observe([svc()], by_service(task()), 1.0)
    assert news == ["all services running; checking they stay up for 5s"]
    assert outcome is None
    assert w.observe([svc()], by_service(task()), 5.9) == ([], None)
    news, outcome = w.observe([svc()], by_service(task()), 6.0)
    assert news == []
    assert outcome is not None
    assert outcome.ok
    assert outcome.failures == []


def test_watch_a_relapse_restarts_the_monitor_window() -> None:
    w = watch()
    w.observe([svc()], by_service(task()), 1.0)
    assert w.observe([svc()], by_service(task(state="starting")), 3.0) == ([], None)
    # Back to running: the window starts again, and its note is not repeated.
    assert w.observe([svc()], by_service(task()), 4.0) == ([], None)
    assert w.observe([svc()], by_service(task()), 8.0) == ([], None)
    outcome = w.observe([svc()], by_service(task()), 9.0)[1]
    assert outcome is not None
    assert outcome.ok


def test_watch_without_monitor_is_done_at_once_and_silent() -> None:
    news, outcome = watch(monitor=0).observe([svc()], by_service(task()), 1.0)
    assert news == []
    assert outcome is not None
    assert outcome.ok


def test_watch_says_each_problem_once() -> None:
    w = watch()
    crash = by_service(task(state="failed", desired="shutdown", error="exit 1"))
    assert w.observe([svc()], crash, 1.0) == (["app: task failed: exit 1"], None)
    assert w.observe([svc()], crash, 2.0) == ([], None)


def test_watch_times_out_with_what_it_waits_for_and_what_it_saw() -> None:
    w = watch(timeout=10.0)
    crash = by_service(task(state="failed", desired="shutdown", error="exit 1"))
    w.observe([svc()], crash, 1.0)
    news, outcome = w.observe([svc()], {}, 10.0)
    assert news == []
    assert outcome is not None
    assert not outcome.ok
    assert not outcome.rolled_back_by_swarm
    assert outcome.failures == [
        "not converged after 10s",
        "app: 0/1 running",
        "app: task failed: exit 1",
    ]


def test_watch_failure_keeps_earlier_problems_when_the_last_look_has_none() -> None:
    w = watch()
    crash = by_service(task(state="failed", desired="shutdown", error="exit 1"))
    w.observe([svc()], crash, 1.0)
    outcome = w.observe([svc(state="paused", message="update paused")], {}, 2.0)[1]
    assert outcome is not None
    assert not outcome.ok
    assert outcome.failures == ["app: update paused: update paused"]
    # Only the lines of the failing look count while it has some; all seen otherwise.
    w2 = watch(max_failures=1)
    outcome = w2.observe([svc()], crash, 1.0)[1]
    assert outcome is not None
    assert outcome.failures == ["app: 1 tasks failed, giving up", "app: task failed: exit 1"]


def test_watch_swarm_rollback_after_the_start_is_swarms() -> None:
    w = watch()
    assert w.observe([svc(state="updating", started=DEPLOYED)], by_service(task()), 1.0)[1] is None
    done = svc(state="rollback_completed", message="rollback completed", started=DEPLOYED)
    news, outcome = w.observe([done], by_service(task()), 2.0)
    assert news == ["app: rolled back by swarm: rollback completed"]
    assert outcome is not None
    assert outcome.rolled_back_by_swarm
    assert not outcome.ok


def test_watch_a_rollback_seen_first_is_expected() -> None:
    # after_rollback=None: decided from the first look, per service.
    done = svc(state="rollback_completed", message="rollback completed", started=DEPLOYED)
    w = watch(monitor=0)
    news, outcome = w.observe([done], by_service(task()), 1.0)
    assert news == []
    assert outcome is not None
    assert outcome.ok
    assert w.after_rollback == {"st_app"}


def test_watch_an_empty_stack_is_a_failure() -> None:
    news, outcome = watch().observe([], {}, 1.0)
    assert news == []
    assert outcome is not None
    assert not outcome.ok
    assert outcome.failures == ["stack st has no services"]
