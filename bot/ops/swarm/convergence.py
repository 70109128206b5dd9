"""When is a stack converged, pending, failed or rolled back by swarm; pure.

`evaluate()` judges one snapshot (services and their tasks, as parse.py builds them);
`ConvergenceWatch` judges a series of snapshots over time (the monitor window, the
timeout, which problem lines are new). Neither does I/O nor reads a clock: the
client's poll loop fetches, passes the time in, and reports what they say.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from bot.labels import UpdateState, is_rollback
from bot.ops.swarm.model import (
    ACTIVE_STATES,
    FAILED_STATES,
    STATE_ORDER,
    Convergence,
    ServiceInfo,
    Status,
    TaskInfo,
)
from bot.ops.swarm.parse import EPOCH, parse_ts


@dataclass(frozen=True)
class _ServiceVerdict:
    status: Status
    lines: list[str]
    running: int
    expected: int | None  # None: not known yet (global service without tasks)


def _pick_tasks(tasks: list[TaskInfo], key: Callable[[TaskInfo], object]) -> list[TaskInfo]:
    """One task per slot (or node), as the docker CLI does: the lowest desired state
    wins (a restarted slot has a failed task wanting shutdown and a new one wanting
    running); equal desired states go to the less advanced observed state."""
    chosen: dict[object, TaskInfo] = {}
    for task in tasks:
        if task.desired_state not in STATE_ORDER or task.state not in STATE_ORDER:
            continue  # "remove", "orphaned": not counted
        k = key(task)
        cur = chosen.get(k)
        if cur is not None:
            cur_d, new_d = STATE_ORDER[cur.desired_state], STATE_ORDER[task.desired_state]
            if cur_d < new_d:
                continue
            if cur_d == new_d and STATE_ORDER[cur.state] <= STATE_ORDER[task.state]:
                continue
        chosen[k] = task
    return list(chosen.values())


def _since(svc: ServiceInfo, after_rollback: bool) -> datetime | None:
    """Task errors older than the deploy being watched are history. When a rollback
    is the expected outcome, so are the errors that led to it: only what happened
    since the rollback changed the spec counts."""
    if after_rollback and is_rollback(svc.update_state):
        return parse_ts(svc.updated_at)
    times = [t for t in (parse_ts(svc.update_started_at), parse_ts(svc.updated_at)) if t]
    return min(times) if times else None


def _error_lines(
    svc: ServiceInfo, tasks: list[TaskInfo], after_rollback: bool = False
) -> tuple[list[str], int]:
    """Problem lines (newest first, distinct) and the number of failed tasks since the
    deploy. A task counts when it has an error, happened since the deploy, and either
    failed or is an up-to-date task still wanted running (e.g. "no suitable node")."""
    since = _since(svc, after_rollback)
    lines: list[str] = []
    failed = 0
    for task in sorted(tasks, key=lambda t: parse_ts(t.timestamp) or EPOCH, reverse=True):
        ts = parse_ts(task.timestamp)
        if since is not None and ts is not None and ts < since:
            continue
        is_failed = task.state in FAILED_STATES
        if is_failed and task.up_to_date:
            failed += 1
        if not task.error:
            continue
        if is_failed or (task.up_to_date and task.desired_state in ACTIVE_STATES):
            line = f"{svc.short_name}: task {task.state}: {task.error}"
            if line not in lines:
                lines.append(line)
    return lines, failed


NODE_DOWN = ", which is down: "  # in the problem line of a task on a node that is down


def node_down_line(service: str, hostname: str) -> str:
    """The problem line of a task on a node that is not ready (its state is stale: the
    manager no longer hears from it)."""
    return f"{service}: task on node {hostname}{NODE_DOWN}not counted as running"


def _evaluate_service(
    svc: ServiceInfo,
    tasks: list[TaskInfo],
    *,
    after_rollback: bool,
    max_failures: int | None,
    down: Mapping[str, str],
) -> _ServiceVerdict:
    if svc.replicas_desired == 0:
        return _ServiceVerdict("converged", [], 0, 0)
    lines, failed = _error_lines(svc, tasks, after_rollback)
    current = [t for t in tasks if t.up_to_date]
    if svc.replicas_desired is None:  # global: one task per eligible node
        picked = _pick_tasks(current, lambda t: t.node_id)
        # Converged on the nodes that remain: a down node's task is not waited for.
        expected: int | None = sum(1 for t in picked if t.node_id not in down) or None
    else:
        picked = _pick_tasks(current, lambda t: t.slot if t.slot is not None else t.id)
        expected = svc.replicas_desired
    # A node that is down reports nothing: its tasks' last state ("running") is stale.
    # Each task it still held alive (of this spec or an older one, whether swarm has
    # replaced it yet or not) was lost with it: said even once the stack converges
    # on the other nodes, so the room knows which services were hit.
    lost: list[str] = []
    for task in tasks:
        if task.node_id in down and task.state in ACTIVE_STATES:
            line = node_down_line(svc.short_name, down[task.node_id])
            if line not in lost:
                lost.append(line)
    lines = [*lost, *lines]
    running = sum(
        1
        for t in picked
        if t.desired_state in ACTIVE_STATES and t.state == "running" and t.node_id not in down
    )
    tasks_ok = expected is not None and running == expected

    state, msg = svc.update_state, svc.update_message
    short = svc.short_name
    if state == UpdateState.PAUSED:
        return _ServiceVerdict(
            "failed", [f"{short}: update paused: {msg}", *lines], running, expected
        )
    if state == UpdateState.ROLLBACK_PAUSED:
        return _ServiceVerdict(
            "failed", [f"{short}: rollback paused: {msg}", *lines], running, expected
        )
    if state == UpdateState.ROLLBACK_STARTED:
        # Swarm restores the previous spec (by itself, or because we asked): wait for it.
        note = [] if after_rollback else [f"{short}: swarm is rolling back: {msg}"]
        return _ServiceVerdict("pending", [*note, *lines], running, expected)
    if state == UpdateState.ROLLBACK_COMPLETED and not after_rollback:
        return _ServiceVerdict(
            "rolled_back", [f"{short}: rolled back by swarm: {msg}", *lines], running, expected
        )
    done = state in (None, UpdateState.COMPLETED) or (
        state == UpdateState.ROLLBACK_COMPLETED and after_rollback
    )
    if done and tasks_ok:
        return _ServiceVerdict("converged", lost, running, expected)
    if max_failures is not None and failed >= max_failures:
        return _ServiceVerdict(
            "failed",
            [f"{short}: {failed} tasks failed, giving up", *lines],
            running,
            expected,
        )
    return _ServiceVerdict("pending", lines, running, expected)


def _accepts_rollback(after_rollback: bool | Collection[str], svc: ServiceInfo) -> bool:
    if isinstance(after_rollback, bool):
        return after_rollback
    return svc.name in after_rollback


def evaluate(
    services: list[ServiceInfo],
    tasks_by_service: Mapping[str, list[TaskInfo]],
    *,
    after_rollback: bool | Collection[str] = False,
    max_failures: int | None = None,
    down: Mapping[str, str] | None = None,
) -> tuple[Status, list[str]]:
    """Where a stack stands, with human problem lines ("app: task failed: ...").

    `tasks_by_service` maps a service's full name to its tasks (all of them; those
    with `up_to_date=False` ran an older spec and only count for error lines).

    A service is converged when its UpdateStatus is "completed" or absent (a new
    service, or a deploy that changed nothing) and its up-to-date tasks are running
    in the desired count: one task per slot (per node for global services, which
    must have at least one), picked as the docker CLI does. Services with 0 replicas
    are skipped. "paused" / "rollback_paused" fail; "rollback_completed" means swarm
    restored the old spec (status "rolled_back"), "rollback_started" is waited for.
    With `after_rollback` (True, or the names of the services concerned), a rollback is
    the expected outcome (we asked for it, or swarm's is being waited out):
    "rollback_completed" counts as completed. With `max_failures`, a service that has
    had that many up-to-date tasks fail since the deploy fails at once; otherwise a
    crash loop stays "pending" (with its errors) until the caller's timeout: apps that
    crash until their database is up are common. `down` maps the ids of the nodes
    that are not ready to their hostnames: their tasks do not count as running (their
    state is the last one the node sent) and each gets a problem line naming the node,
    so a stack converges only on the nodes that remain.

    Stack: any failed -> "failed"; else any rolled back (and none still rolling
    back) -> "rolled_back"; else any pending -> "pending"; else "converged".
    """
    verdicts = [
        _evaluate_service(
            svc,
            list(tasks_by_service.get(svc.name, [])),
            after_rollback=_accepts_rollback(after_rollback, svc),
            max_failures=max_failures,
            down=down or {},
        )
        for svc in services
    ]
    lines: list[str] = []
    for v in verdicts:
        lines.extend(line for line in v.lines if line not in lines)
    statuses = {v.status for v in verdicts}
    rolling_back = any(s.update_state == UpdateState.ROLLBACK_STARTED for s in services)
    if "failed" in statuses:
        return "failed", lines
    if "rolled_back" in statuses and not rolling_back:
        return "rolled_back", lines
    if "pending" in statuses or "rolled_back" in statuses:
        return "pending", lines
    return "converged", lines


def describe_pending(
    services: list[ServiceInfo],
    tasks_by_service: Mapping[str, list[TaskInfo]],
    *,
    after_rollback: bool | Collection[str] = False,
    down: Mapping[str, str] | None = None,
) -> list[str]:
    """One line per service that is not converged: "app: 0/1 running, update updating"."""
    out = []
    for svc in services:
        v = _evaluate_service(
            svc,
            list(tasks_by_service.get(svc.name, [])),
            after_rollback=_accepts_rollback(after_rollback, svc),
            max_failures=None,
            down=down or {},
        )
        if v.status == "converged":
            continue
        expected = "?" if v.expected is None else str(v.expected)
        line = f"{svc.short_name}: {v.running}/{expected} running"
        if svc.update_state:
            line += f", update {svc.update_state}"
        out.append(line)
    return out


@dataclass
class ConvergenceWatch:
    """A stack watched over several snapshots (sans I/O: the caller fetches and tells
    the time, in seconds of a monotonic clock).

    Each `observe()` returns the progress lines not said before (problem lines once
    each, and one note when the stack first looks converged) and, once the watch is
    over, its outcome: converged and still so `monitor` seconds later, failed, rolled
    back by swarm, or not converged `timeout` seconds after `start`.

    `after_rollback=None` decides per service from the first snapshot: a service
    already in a rollback state then was rolled back before this watch (by rollback(),
    or by swarm after a failed deploy), so the rollback is the expected outcome and its
    restored tasks are waited for. A deploy resets every service's update state, so
    right after one no service is in one, and a rollback seen later is swarm's
    reaction to this deploy (rolled_back_by_swarm).
    """

    stack: str
    start: float
    timeout: float
    monitor: float = 5.0
    after_rollback: bool | Collection[str] | None = None
    max_failures: int | None = None
    _seen: list[str] = field(default_factory=list, init=False)  # problem lines, first-seen order
    _said: set[str] = field(default_factory=set, init=False)  # every line returned so far
    _converged_since: float | None = field(default=None, init=False)

    def observe(
        self,
        services: list[ServiceInfo],
        tasks: Mapping[str, list[TaskInfo]],
        now: float,
        down: Mapping[str, str] | None = None,
    ) -> tuple[list[str], Convergence | None]:
        """(new progress lines, the outcome or None to keep watching). `down`: the
        nodes not ready now, id -> hostname (see evaluate())."""
        if not services:
            return [], Convergence(False, False, [f"stack {self.stack} has no services"], [])
        accepted = self.after_rollback
        if accepted is None:
            accepted = {s.name for s in services if is_rollback(s.update_state)}
            self.after_rollback = accepted
        status, lines = evaluate(
            services, tasks, after_rollback=accepted, max_failures=self.max_failures, down=down
        )
        news: list[str] = []
        for line in lines:
            if line not in self._seen:
                self._seen.append(line)
            self._say(line, news)
        # The lines of this snapshot, in first-seen order; all lines ever seen when
        # the last snapshot has none (a failure can outlive its tasks' errors).
        problems = [line for line in self._seen if line in lines] or list(self._seen)
        if status == "failed":
            return news, Convergence(False, False, problems, services)
        if status == "rolled_back":
            return news, Convergence(False, True, problems, services)
        if status == "converged":
            if self._converged_since is None:
                self._converged_since = now
                if self.monitor > 0:
                    self._say(
                        f"all services running; checking they stay up for {self.monitor:g}s",
                        news,
                    )
            if now - self._converged_since >= self.monitor:
                return news, Convergence(True, False, [], services)
        else:
            self._converged_since = None
        if now - self.start >= self.timeout:
            waiting = describe_pending(services, tasks, after_rollback=accepted, down=down)
            # Rounded: a budget carried over from an earlier wait is 39.9999 s.
            head = f"not converged after {round(self.timeout, 1):g}s"
            return news, Convergence(False, False, [head, *waiting, *self._seen], services)
        return news, None

    def _say(self, line: str, news: list[str]) -> None:
        if line not in self._said:
            self._said.add(line)
            news.append(line)
