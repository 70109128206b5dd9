"""Docker Swarm adapter: state through the docker SDK, deploys through the docker CLI.

What goes where, and why:
- `docker stack deploy` / `stack rm` / `service rollback` run as subprocesses of the
  docker CLI (argument list, explicit environment, no shell): docker-py has no
  compose-to-swarm conversion, and the CLI is what abra-deployed stacks were made with.
- Everything else (services, tasks, secrets, volumes, logs, registry lookups) goes
  through the synchronous docker SDK, always inside `asyncio.to_thread`.
- `docker stack config` does not exist in Debian's 20.10 CLI (it came with 24.0), so
  `load_compose()` loads, interpolates and merges compose files itself, following the
  CLI's loader (see its docstring for what it does and does not do).
- `evaluate()` decides convergence from plain data, without I/O; `Swarm.wait_converged`
  only polls and reports. See `evaluate()` for the rules.

Facts checked on dockerd 20.10 (single node):
- Task JSON has no spec version. The daemon's (undocumented, used by the CLI's own
  progress code) task filter `_up-to-date=true` returns the tasks whose spec matches
  the service's current spec; it works without a service filter. Comparing images is
  not enough: a changed command keeps the image, and old tasks stay `running` until the
  updater reaches them. So the adapter lists all tasks, then the up-to-date ones, and
  marks `TaskInfo.up_to_date`.
- Every `docker stack deploy` updates every service of the stack: UpdateStatus is reset
  to none and PreviousSpec is set, even for services whose spec did not change. A
  label-only change leaves the tasks up to date (nothing restarts).
- A failed update with `failure_action: rollback` ends in `rollback_completed` within a
  few seconds, and swarm then drops PreviousSpec. A manual rollback (`docker service
  rollback`) swaps Spec and PreviousSpec instead, so rolling back twice rolls forward:
  `rollback()` skips services already rolled back.
- The tasks of a failed update stop being up to date once swarm rolled back; their
  errors are found by time (task status timestamp >= UpdateStatus.StartedAt).
- `docker stack rm` returns at once; the stack's networks go ~4 s later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import docker
import docker.errors
import requests.exceptions

from bot.errors import UserError
from bot.ops.compose import load_compose

log = logging.getLogger(__name__)

T = TypeVar("T")


def _find_cli() -> str:
    # Debian's 20.10 client matches the engine; /usr/local/bin/docker may be a newer one.
    if os.path.exists("/usr/bin/docker"):
        return "/usr/bin/docker"
    return shutil.which("docker") or "docker"


DOCKER_CLI = _find_cli()

NAMESPACE_LABEL = "com.docker.stack.namespace"
RECENT_ERRORS = 5
# Stack names: what the CLI accepts, and never something that looks like an option.
_STACK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# Task states in lifecycle order (the docker CLI's progress code orders them the same).
ACTIVE_STATES = (
    "new",
    "allocated",
    "pending",
    "assigned",
    "accepted",
    "preparing",
    "ready",
    "starting",
    "running",
)
_STATE_ORDER = {
    s: i for i, s in enumerate((*ACTIVE_STATES, "complete", "shutdown", "failed", "rejected"), 1)
}
FAILED_STATES = ("failed", "rejected")


class SwarmError(UserError):
    """A swarm operation failed; the message is shown to the room as is."""


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class TaskInfo:
    id: str
    service: str  # the service's full name, "<stack>_<svc>"
    state: str
    desired_state: str
    error: str
    message: str
    image: str
    timestamp: str  # ISO 8601, UTC, "YYYY-MM-DDTHH:MM:SS.ffffffZ"
    # Beyond the brief's fields (defaults keep hand-built values short):
    slot: int | None = None  # replicated services; None for global ones
    node_id: str = ""
    up_to_date: bool = True  # the task runs the service's current spec


@dataclass(frozen=True)
class ServiceInfo:
    id: str
    name: str  # "<stack>_<svc>"
    short_name: str  # "<svc>"
    image: str  # as in the spec, may include @sha256:...
    replicas_desired: int | None  # None = global
    replicas_running: int
    update_state: str | None  # updating, completed, paused, rollback_started, ... or None
    update_message: str
    labels: dict[str, str]
    version: int
    has_previous_spec: bool
    previous_image: str | None
    recent_errors: list[str]  # distinct errors of failed/rejected tasks, newest first
    # Beyond the brief's fields: the daemon's times (ISO, UTC), which tell task errors
    # of this deploy from older ones.
    update_started_at: str | None = None  # UpdateStatus.StartedAt
    updated_at: str | None = None  # the spec's last change (each deploy changes it)


@dataclass(frozen=True)
class Convergence:
    ok: bool
    rolled_back_by_swarm: bool
    failures: list[str]
    services: list[ServiceInfo]


Status = Literal["converged", "pending", "failed", "rolled_back"]


# --------------------------------------------------------------------------- timestamps

_TS_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


def parse_ts(text: str | None) -> datetime | None:
    """Docker's RFC 3339 timestamps (nanoseconds, "Z") as aware datetimes; None if unparsable."""
    if not text:
        return None
    m = _TS_RE.match(text.strip())
    if not m:
        return None
    base, frac, zone = m.groups()
    micro = (frac or "").ljust(6, "0")[:6]
    zone = "+00:00" if zone in (None, "Z") else zone
    try:
        return datetime.fromisoformat(f"{base}.{micro}{zone}").astimezone(UTC)
    except ValueError:
        return None


def _iso(text: str | None) -> str:
    ts = parse_ts(text)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if ts else (text or "")


# --------------------------------------------------------------------------- convergence


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
        if task.desired_state not in _STATE_ORDER or task.state not in _STATE_ORDER:
            continue  # "remove", "orphaned": not counted
        k = key(task)
        cur = chosen.get(k)
        if cur is not None:
            cur_d, new_d = _STATE_ORDER[cur.desired_state], _STATE_ORDER[task.desired_state]
            if cur_d < new_d:
                continue
            if cur_d == new_d and _STATE_ORDER[cur.state] <= _STATE_ORDER[task.state]:
                continue
        chosen[k] = task
    return list(chosen.values())


def _since(svc: ServiceInfo, after_rollback: bool) -> datetime | None:
    """Task errors older than the deploy being watched are history. When a rollback
    is the expected outcome, so are the errors that led to it: only what happened
    since the rollback changed the spec counts."""
    if after_rollback and (svc.update_state or "").startswith("rollback"):
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
    for task in sorted(tasks, key=lambda t: parse_ts(t.timestamp) or _EPOCH, reverse=True):
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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _evaluate_service(
    svc: ServiceInfo,
    tasks: list[TaskInfo],
    *,
    after_rollback: bool,
    max_failures: int | None,
) -> _ServiceVerdict:
    if svc.replicas_desired == 0:
        return _ServiceVerdict("converged", [], 0, 0)
    lines, failed = _error_lines(svc, tasks, after_rollback)
    current = [t for t in tasks if t.up_to_date]
    if svc.replicas_desired is None:  # global: one task per eligible node
        picked = _pick_tasks(current, lambda t: t.node_id)
        expected: int | None = len(picked) or None
    else:
        picked = _pick_tasks(current, lambda t: t.slot if t.slot is not None else t.id)
        expected = svc.replicas_desired
    running = sum(1 for t in picked if t.desired_state in ACTIVE_STATES and t.state == "running")
    tasks_ok = expected is not None and running == expected

    state, msg = svc.update_state, svc.update_message
    short = svc.short_name
    if state == "paused":
        return _ServiceVerdict(
            "failed", [f"{short}: update paused: {msg}", *lines], running, expected
        )
    if state == "rollback_paused":
        return _ServiceVerdict(
            "failed", [f"{short}: rollback paused: {msg}", *lines], running, expected
        )
    if state == "rollback_started":
        # Swarm restores the previous spec (by itself, or because we asked): wait for it.
        note = [] if after_rollback else [f"{short}: swarm is rolling back: {msg}"]
        return _ServiceVerdict("pending", [*note, *lines], running, expected)
    if state == "rollback_completed" and not after_rollback:
        return _ServiceVerdict(
            "rolled_back", [f"{short}: rolled back by swarm: {msg}", *lines], running, expected
        )
    done = state in (None, "completed") or (state == "rollback_completed" and after_rollback)
    if done and tasks_ok:
        return _ServiceVerdict("converged", [], running, expected)
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
    crash until their database is up are common.

    Stack: any failed -> "failed"; else any rolled back (and none still rolling
    back) -> "rolled_back"; else any pending -> "pending"; else "converged".
    """
    verdicts = [
        _evaluate_service(
            svc,
            list(tasks_by_service.get(svc.name, [])),
            after_rollback=_accepts_rollback(after_rollback, svc),
            max_failures=max_failures,
        )
        for svc in services
    ]
    lines: list[str] = []
    for v in verdicts:
        lines.extend(line for line in v.lines if line not in lines)
    statuses = {v.status for v in verdicts}
    rolling_back = any(s.update_state == "rollback_started" for s in services)
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
) -> list[str]:
    """One line per service that is not converged: "app: 0/1 running, update updating"."""
    out = []
    for svc in services:
        v = _evaluate_service(
            svc,
            list(tasks_by_service.get(svc.name, [])),
            after_rollback=_accepts_rollback(after_rollback, svc),
            max_failures=None,
        )
        if v.status == "converged":
            continue
        expected = "?" if v.expected is None else str(v.expected)
        line = f"{svc.short_name}: {v.running}/{expected} running"
        if svc.update_state:
            line += f", update {svc.update_state}"
        out.append(line)
    return out


# --------------------------------------------------------------------------- SDK JSON -> data


def task_info(raw: Mapping[str, Any], service_name: str, up_to_date: bool = True) -> TaskInfo:
    status = raw.get("Status") or {}
    spec = (raw.get("Spec") or {}).get("ContainerSpec") or {}
    return TaskInfo(
        id=raw.get("ID", ""),
        service=service_name,
        state=status.get("State", ""),
        desired_state=raw.get("DesiredState", ""),
        error=status.get("Err", "") or "",
        message=status.get("Message", "") or "",
        image=spec.get("Image", ""),
        timestamp=_iso(status.get("Timestamp")),
        slot=raw.get("Slot"),
        node_id=raw.get("NodeID", "") or "",
        up_to_date=up_to_date,
    )


def service_info(raw: Mapping[str, Any], tasks: list[TaskInfo]) -> ServiceInfo:
    spec = raw.get("Spec") or {}
    labels = dict(spec.get("Labels") or {})
    name = spec.get("Name", "")
    stack = labels.get(NAMESPACE_LABEL, "")
    short = name[len(stack) + 1 :] if stack and name.startswith(stack + "_") else name
    mode = spec.get("Mode") or {}
    replicas: int | None
    if "Global" in mode:
        replicas = None
    else:
        replicas = int((mode.get("Replicated") or {}).get("Replicas", 1) or 0)
    update = raw.get("UpdateStatus") or {}
    prev = raw.get("PreviousSpec")
    prev_image = None
    if prev:
        prev_image = ((prev.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image")
    errors: list[str] = []
    for t in sorted(tasks, key=lambda t: parse_ts(t.timestamp) or _EPOCH, reverse=True):
        if t.state in FAILED_STATES and t.error and t.error not in errors:
            errors.append(t.error)
    return ServiceInfo(
        id=raw.get("ID", ""),
        name=name,
        short_name=short,
        image=((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image", ""),
        replicas_desired=replicas,
        replicas_running=sum(
            1 for t in tasks if t.state == "running" and t.desired_state == "running"
        ),
        update_state=update.get("State") or None,
        update_message=update.get("Message", "") or "",
        labels=labels,
        version=int((raw.get("Version") or {}).get("Index", 0)),
        has_previous_spec=bool(prev),
        previous_image=prev_image,
        recent_errors=errors[:RECENT_ERRORS],
        update_started_at=_iso(update.get("StartedAt")) or None,
        updated_at=_iso(raw.get("UpdatedAt")) or None,
    )


def _group(
    raw_services: list[dict[str, Any]],
    raw_tasks: list[dict[str, Any]],
    up_to_date_ids: set[str] | None,
) -> tuple[list[ServiceInfo], dict[str, list[TaskInfo]]]:
    names = {s["ID"]: s["Spec"]["Name"] for s in raw_services}
    by_service: dict[str, list[TaskInfo]] = {name: [] for name in names.values()}
    for raw in raw_tasks:
        name = names.get(raw.get("ServiceID", ""))
        if name is None:
            continue
        fresh = True if up_to_date_ids is None else raw.get("ID") in up_to_date_ids
        by_service[name].append(task_info(raw, name, fresh))
    infos = [service_info(s, by_service[s["Spec"]["Name"]]) for s in raw_services]
    infos.sort(key=lambda s: s.name)
    return infos, by_service


def _container_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    return dict((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {})


def _remove_network(client: Any, net_id: str) -> None:
    client.api.remove_network(net_id)


def _check_stack(stack: str) -> str:
    if not _STACK_RE.match(stack):
        raise SwarmError(f"invalid stack name {stack!r}")
    return stack


def _explain(e: docker.errors.APIError) -> str:
    return str(e.explanation or e).strip()


def _split_ref(ref: str) -> tuple[str, str]:
    """An image ref "name[:tag][@digest]" as (name, tag); the tag defaults to latest."""
    ref = ref.split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :]
    return ref, "latest"


class Swarm:
    """One swarm manager, reached at `docker_host` (unix://, tcp://, ssh://)."""

    def __init__(
        self,
        docker_host: str,
        *,
        cli: str = DOCKER_CLI,
        timeout: float = 60,
        docker_config: str | None = None,
    ) -> None:
        self.docker_host = docker_host
        self.cli = cli
        self._timeout = timeout  # per SDK request
        self._docker_config = docker_config  # the CLI's config dir; default: the CLI's own
        self._client: Any = None
        self._client_lock = threading.Lock()

    # -- plumbing

    def _client_sync(self) -> Any:
        """The SDK client, built on first use (version="auto" asks the daemon)."""
        with self._client_lock:
            if self._client is None:
                self._client = docker.DockerClient(
                    base_url=self.docker_host,
                    version="auto",
                    timeout=self._timeout,
                    # The ssh binary (user's ssh config, agent), as the CLI does;
                    # docker-py's default needs paramiko.
                    use_ssh_client=self.docker_host.startswith("ssh://"),
                )
            return self._client

    async def _sdk(self, fn: Callable[[Any], T]) -> T:
        """Run fn(client) in a worker thread; docker errors become SwarmError."""

        def run() -> T:
            return fn(self._client_sync())

        try:
            return await asyncio.to_thread(run)
        except SwarmError:
            raise
        except docker.errors.APIError as e:
            raise SwarmError(f"docker: {_explain(e)}") from e
        except (
            docker.errors.DockerException,
            requests.exceptions.RequestException,
            OSError,
        ) as e:
            raise SwarmError(f"server unreachable: {self.docker_host}: {e}") from e

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    def _cli_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The CLI's whole environment: what the caller gives, plus what the CLI needs."""
        keep = ["PATH", "HOME", "DOCKER_CONFIG"]
        if self.docker_host.startswith("ssh://"):
            keep.append("SSH_AUTH_SOCK")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        env.setdefault("PATH", os.defpath)
        env.update(extra or {})
        if self._docker_config:
            env["DOCKER_CONFIG"] = self._docker_config
        env["DOCKER_HOST"] = self.docker_host
        env.pop("DOCKER_CONTEXT", None)
        return env

    async def _run_cli(
        self,
        args: list[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        limit: float = 300,
    ) -> tuple[int, str, str]:
        """Run the docker CLI (argument list, explicit env); (returncode, stdout, stderr)."""
        log.info("docker %s (env keys: %s)", " ".join(args), ", ".join(sorted(env or {})))
        try:
            proc = await asyncio.create_subprocess_exec(
                self.cli,
                *args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._cli_env(env),
                cwd=cwd,
            )
        except OSError as e:
            raise SwarmError(f"cannot run the docker CLI {self.cli}: {e}") from e
        try:
            async with asyncio.timeout(limit):
                out, err = await proc.communicate()
        except BaseException as e:  # timeout or cancellation: don't leave it running
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())
            if isinstance(e, TimeoutError):
                raise SwarmError(f"docker {' '.join(args[:2])} took more than {limit:g}s") from e
            raise
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    # -- reading state

    async def info(self) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await self._sdk(lambda c: c.info())
        except SwarmError as e:
            msg = str(e)
            if not msg.startswith("server unreachable"):
                msg = f"server unreachable: {msg}"
            raise SwarmError(msg) from e
        return result

    async def _snapshot(
        self, stack: str | None, *, up_to_date: bool
    ) -> tuple[list[ServiceInfo], dict[str, list[TaskInfo]]]:
        """One services listing and one tasks listing (plus the up-to-date task ids
        when asked); all stacks when `stack` is None."""

        def fetch(c: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], set[str] | None]:
            label = NAMESPACE_LABEL if stack is None else f"{NAMESPACE_LABEL}={stack}"
            services = c.api.services(filters={"label": label})
            if not services:
                return [], [], None
            ids = [s["ID"] for s in services]
            task_filter = {} if stack is None else {"service": ids}
            tasks = c.api.tasks(filters=task_filter)
            fresh = None
            if up_to_date:
                fresh_tasks = c.api.tasks(filters={**task_filter, "_up-to-date": "true"})
                fresh = {t["ID"] for t in fresh_tasks}
            return services, tasks, fresh

        services, tasks, fresh = await self._sdk(fetch)
        return _group(services, tasks, fresh)

    async def stacks(self) -> dict[str, list[ServiceInfo]]:
        infos, _ = await self._snapshot(None, up_to_date=False)
        out: dict[str, list[ServiceInfo]] = {}
        for info in infos:
            out.setdefault(info.labels.get(NAMESPACE_LABEL, ""), []).append(info)
        return dict(sorted(out.items()))

    async def services(self, stack: str) -> list[ServiceInfo]:
        infos, _ = await self._snapshot(_check_stack(stack), up_to_date=False)
        return infos

    async def secrets(self) -> set[str]:
        raw = await self._sdk(lambda c: c.api.secrets())
        return {s["Spec"]["Name"] for s in raw}

    async def create_secret(self, name: str, value: str, labels: dict[str, str]) -> None:
        """Create a swarm secret. The value goes to the daemon only, never to a log."""

        def create(c: Any) -> None:
            try:
                c.api.create_secret(name, value.encode(), labels=labels)
            except docker.errors.APIError as e:
                if e.status_code == 409:
                    raise SwarmError(f"secret {name} already exists") from None
                raise SwarmError(f"cannot create secret {name}: {_explain(e)}") from None

        await self._sdk(create)
        log.info("created secret %s", name)

    async def volumes(self, stack: str) -> list[str]:
        """The stack's volumes on the manager node (swarm has no cluster-wide volumes)."""
        label = f"{NAMESPACE_LABEL}={_check_stack(stack)}"
        raw = await self._sdk(lambda c: c.api.volumes(filters={"label": label}))
        return sorted(v["Name"] for v in (raw or {}).get("Volumes") or [])

    async def exec(
        self,
        stack: str,
        service: str,
        command: str,
        timeout: float = 600,  # noqa: ASYNC109 - the bot's API: a budget
    ) -> tuple[int, str]:
        """Run `command` with `sh -c` in a running container of `<stack>_<service>` on
        this node (the hooks of the backupbot labels); (exit code, output tail).

        The command comes from the recipe's labels and runs inside the app's own
        container, as backup-bot-two does; it is passed as an argument list."""
        name = f"{_check_stack(stack)}_{service}"

        def run(c: Any) -> tuple[int, str]:
            running = c.containers.list(
                filters={"label": f"com.docker.swarm.service.name={name}", "status": "running"}
            )
            if not running:
                raise SwarmError(f"no running container of {name} on this node to run a hook in")
            result = running[0].exec_run(["sh", "-c", command], demux=False)
            output = (result.output or b"").decode(errors="replace")
            return int(result.exit_code), output[-2000:]

        try:
            async with asyncio.timeout(timeout):
                return await self._sdk(run)
        except TimeoutError:
            raise SwarmError(f"the command in {name} did not finish within {timeout:g}s") from None

    async def scale(self, stack: str, replicas: Mapping[str, int]) -> None:
        """Set the replica count of these services (short names) of the stack."""
        _check_stack(stack)

        def update(c: Any) -> None:
            for short, count in replicas.items():
                service = c.services.get(f"{stack}_{short}")
                if not service.scale(count):
                    raise SwarmError(f"scaling {stack}_{short} to {count} was refused")

        await self._sdk(update)

    async def mounts(self, stack: str) -> dict[str, list[tuple[str, str]]]:
        """Per service (short name): its volume mounts as (volume name, container path)."""
        label = f"{NAMESPACE_LABEL}={_check_stack(stack)}"
        raw = await self._sdk(lambda c: c.api.services(filters={"label": label}))
        result: dict[str, list[tuple[str, str]]] = {}
        for svc in raw:
            spec = _container_spec(svc["Spec"])
            short = service_info(svc, []).short_name
            result[short] = [
                (m["Source"], m["Target"])
                for m in spec.get("Mounts") or []
                if m.get("Type", "volume") == "volume" and m.get("Source")
            ]
        return result

    async def image_available(self, ref: str) -> tuple[bool, str | None, str]:
        """(available, "name:tag@sha256:..." when a registry answered, reason)."""

        def check(c: Any) -> tuple[bool, str | None, str]:
            try:
                digest = c.images.get_registry_data(ref).id
            except docker.errors.APIError as e:
                registry_error = _explain(e)
            except requests.exceptions.ReadTimeout:
                registry_error = f"the registry did not answer within {self._timeout:g}s"
            else:
                name, tag = _split_ref(ref)
                return True, f"{name}:{tag}@{digest}", f"{ref} is on its registry ({digest})"
            try:
                c.images.get(ref)
            except docker.errors.ImageNotFound:
                return (
                    False,
                    None,
                    f"{ref}: not found locally, and the registry said: {registry_error}",
                )
            return True, None, f"{ref}: local image only (registry: {registry_error})"

        return await self._sdk(check)

    async def logs(self, stack: str, service: str | None, tail: int) -> str:
        """Recent logs (stdout and stderr, with timestamps) of one service or the whole
        stack, lines prefixed with the service's short name, oldest first. `tail` is
        per service, as in docker."""
        _check_stack(stack)
        if tail < 0:
            raise SwarmError("tail must be >= 0")

        def fetch(c: Any) -> list[tuple[str, str, str]]:
            raw = c.api.services(filters={"label": f"{NAMESPACE_LABEL}={stack}"})
            infos = [service_info(s, []) for s in raw]
            if service is not None:
                infos = [i for i in infos if service in (i.short_name, i.name)]
                if not infos:
                    names = ", ".join(sorted(service_info(s, []).short_name for s in raw))
                    raise SwarmError(
                        f"no service {service} in {stack}"
                        + (f" (it has: {names})" if names else "")
                    )
            tty = {s["ID"]: bool(_container_spec(s["Spec"]).get("TTY")) for s in raw}
            lines: list[tuple[str, str, str]] = []
            for info in infos:
                chunks = c.api.service_logs(
                    info.id,
                    stdout=True,
                    stderr=True,
                    timestamps=True,
                    tail=tail,
                    is_tty=tty[info.id],
                )
                text = b"".join(chunks).decode(errors="replace")
                for line in text.splitlines():
                    ts, _, msg = line.partition(" ")
                    lines.append((_iso(ts), info.short_name, msg))
            lines.sort(key=lambda x: x[0])  # stable: each service's own order is kept
            return lines

        lines = await self._sdk(fetch)
        return "\n".join(f"{short} | {ts} {msg}" for ts, short, msg in lines)

    # -- compose

    async def config(
        self,
        compose_files: list[Path],
        env: dict[str, str],
        cwd: Path,
        *,
        allow_missing: bool = False,
    ) -> dict[str, Any]:
        """The merged, interpolated compose, as `docker stack deploy` would see it with
        the same env (Debian's 20.10 CLI has no `docker stack config`: see load_compose)."""
        files = [cwd / f for f in compose_files]
        return await asyncio.to_thread(
            load_compose, files, self._cli_env(env), allow_missing=allow_missing
        )

    # -- changing state

    async def deploy(
        self,
        stack: str,
        compose_files: list[Path],
        env: dict[str, str],
        cwd: Path,
        *,
        limit: float = 300,
    ) -> str:
        """`docker stack deploy --prune --resolve-image=changed`; returns the CLI output.

        --resolve-image=changed asks a registry for the digest of changed images only:
        unchanged services keep the digest they were pinned to, and local-only images
        cost a warning, not a failure.
        """
        args = ["stack", "deploy", "--prune", "--resolve-image=changed"]
        for f in compose_files:
            args += ["-c", str(cwd / f)]
        args.append(_check_stack(stack))
        rc, out, err = await self._run_cli(args, env=env, cwd=cwd, limit=limit)
        if rc:
            detail = (err.strip() or out.strip())[-3000:]
            raise SwarmError(f"docker stack deploy {stack} failed:\n{detail}")
        return "\n".join(p for p in (out.strip(), err.strip()) if p)

    async def wait_converged(
        self,
        stack: str,
        timeout: float,  # noqa: ASYNC109 - the bot's API: a budget, not a cancel scope
        on_progress: Callable[[str], Awaitable[None]] | None = None,
        monitor: float = 5.0,
        poll: float = 1.0,
        *,
        after_rollback: bool | None = None,
        max_failures: int | None = None,
    ) -> Convergence:
        """Poll until the stack is converged and stays so for `monitor` seconds, fails,
        is rolled back by swarm, or `timeout` passes. New problem lines go to
        `on_progress` once each (deduplicated).

        `after_rollback=None` (the default) decides per service from the first look:
        a service already in a rollback state then was rolled back before this watch
        (by rollback(), or by swarm after a failed deploy), so the rollback is the
        expected outcome and its restored tasks are waited for. A deploy resets every
        service's update state, so right after deploy() no service is in one, and a
        rollback seen later is swarm's reaction to this deploy (rolled_back_by_swarm).
        """
        _check_stack(stack)
        start = time.monotonic()
        seen: list[str] = []  # problem lines, in the order they first appeared
        said: set[str] = set()  # everything sent to on_progress
        converged_since: float | None = None
        accepted: bool | set[str] | None = after_rollback

        async def report(line: str) -> None:
            if line in said:
                return
            said.add(line)
            if on_progress is not None:
                try:
                    await on_progress(line)
                except Exception:  # a chat hiccup must not abort the watch
                    log.exception("progress callback failed")

        while True:
            services, tasks = await self._snapshot(stack, up_to_date=True)
            now = time.monotonic()
            if not services:
                return Convergence(False, False, [f"stack {stack} has no services"], [])
            if accepted is None:
                accepted = {
                    s.name for s in services if (s.update_state or "").startswith("rollback")
                }
            status, lines = evaluate(
                services, tasks, after_rollback=accepted, max_failures=max_failures
            )
            for line in lines:
                if line not in seen:
                    seen.append(line)
                await report(line)
            problems = [line for line in seen if line in lines] or list(seen)
            if status == "failed":
                return Convergence(False, False, problems, services)
            if status == "rolled_back":
                return Convergence(False, True, problems, services)
            if status == "converged":
                if converged_since is None:
                    converged_since = now
                    if monitor > 0:
                        await report(
                            f"all services running; checking they stay up for {monitor:g}s"
                        )
                if now - converged_since >= monitor:
                    return Convergence(True, False, [], services)
            else:
                converged_since = None
            if now - start >= timeout:
                waiting = describe_pending(services, tasks, after_rollback=accepted)
                head = f"not converged after {timeout:g}s"
                return Convergence(False, False, [head, *waiting, *seen], services)
            await asyncio.sleep(poll)

    async def rollback(self, stack: str) -> list[str]:
        """Roll back every service of the stack that has a previous spec to go back to;
        returns their short names. Skipped: services swarm (or we) already rolled back
        (a second rollback would re-apply the failed spec) and services whose previous
        spec is their current one. Services created by the failed deploy stay."""
        label = f"{NAMESPACE_LABEL}={_check_stack(stack)}"
        raw = await self._sdk(lambda c: c.api.services(filters={"label": label}))
        rolled = []
        for svc in sorted(raw, key=lambda s: s["Spec"]["Name"]):
            prev = svc.get("PreviousSpec")
            state = (svc.get("UpdateStatus") or {}).get("State", "")
            if not prev or prev == svc["Spec"] or state.startswith("rollback"):
                continue
            args = ["service", "rollback", "--detach", "--quiet", svc["ID"]]
            rc, out, err = await self._run_cli(args, limit=120)
            if rc:
                name = svc["Spec"]["Name"]
                raise SwarmError(f"rollback of {name} failed: {(err or out).strip()}")
            rolled.append(service_info(svc, []).short_name)
        return rolled

    async def remove(
        self,
        stack: str,
        timeout: float = 60,  # noqa: ASYNC109 - the bot's API
    ) -> list[str]:
        """`docker stack rm`, then wait until the stack's services and networks are
        gone (a deploy in between fails). Returns the stack's remaining volumes."""
        _check_stack(stack)
        rc, out, err = await self._run_cli(["stack", "rm", stack], limit=timeout)
        if rc:
            raise SwarmError(f"docker stack rm {stack} failed: {(err or out).strip()}")
        label = {"label": f"{NAMESPACE_LABEL}={stack}"}

        def leftovers(c: Any) -> tuple[list[str], list[dict[str, Any]]]:
            services = [s["Spec"]["Name"] for s in c.api.services(filters=label)]
            return services, c.api.networks(filters=label)

        deadline = time.monotonic() + timeout
        services_gone_at: float | None = None
        while True:
            services, networks = await self._sdk(leftovers)
            if not services and not networks:
                break
            now = time.monotonic()
            if not services:
                services_gone_at = services_gone_at or now
                if now - services_gone_at > 10:  # the CLI's removal failed: once more
                    for net_id in [n["Id"] for n in networks]:
                        with contextlib.suppress(SwarmError):
                            await self._sdk(partial(_remove_network, net_id=net_id))
                    services_gone_at = now
            if now > deadline:
                names = services + [n["Name"] for n in networks]
                raise SwarmError(
                    f"stack {stack} not gone after {timeout:g}s: {', '.join(names)} remain"
                )
            await asyncio.sleep(0.5)
        return await self.volumes(stack)

    async def registry_digest(self, ref: str) -> str:
        """The digest ("sha256:...") that the tag of `ref` points to in its registry
        now (a digest in `ref` is ignored: the question is where the tag went).
        SwarmError, with the registry's answer, when it does not say."""
        name, tag = _split_ref(ref)

        def ask(c: Any) -> str:
            try:
                return str(c.images.get_registry_data(f"{name}:{tag}").id)
            except docker.errors.APIError as e:
                raise SwarmError(f"registry lookup of {name}:{tag} failed: {_explain(e)}") from None
            except requests.exceptions.ReadTimeout:
                raise SwarmError(
                    f"the registry of {name}:{tag} did not answer within {self._timeout:g}s"
                ) from None

        return await self._sdk(ask)
