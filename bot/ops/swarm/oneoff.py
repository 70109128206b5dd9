"""One-off tasks: a command run once on a chosen node, as a swarm service of one
replica that never restarts, its output read back through the manager's service
logs. What the bot uses to work where the data lives (a backup of a volume on a
worker) without an agent installed on that node. A mixin of `Swarm` (client.py is
at its size limit); it goes through the same SDK shell, `Swarm._sdk`.

Seen on dockerd 20.10 (three nodes in network namespaces, tests/integration/
test_multinode.py):
- Through a manager, `service logs` reaches a task on a worker, also once it ended.
- A node killed mid-task is `ready` to the manager until its heartbeat times out, then
  `down`; its task is not moved (restart condition none) and need not change state, so
  the node's state is watched as well as the task's.
- Secrets are files under /run/secrets/<name> in the task; a secret in use cannot be
  removed, so the service goes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import docker.errors
import docker.types

from bot.ops.swarm.model import SwarmError

log = logging.getLogger(__name__)

T = TypeVar("T")

ONEOFF_LABEL = "coopbot.oneoff"  # on the service and its secrets: what to clean up
_ENDED = {"complete", "failed", "shutdown", "rejected", "orphaned", "remove"}
ENDED = ("complete", "failed", "rejected", "shutdown", "orphaned", "remove")


@dataclass(frozen=True)
class OneOffMount:
    source: str  # a volume name, or a host path for a bind
    target: str
    read_only: bool = True
    bind: bool = False


@dataclass(frozen=True)
class OneOffResult:
    exit_code: int
    stdout: list[str]  # lines
    stderr: list[str]


class OneOffCalls:
    """What `Swarm` can run once on a node."""

    if TYPE_CHECKING:

        async def _sdk(self, fn: Callable[[Any], T]) -> T: ...

    async def run_oneoff(
        self,
        *,
        purpose: str,  # a word for the names: "backup"
        node_id: str,
        image: str,
        command: Sequence[str],
        mounts: Sequence[OneOffMount] = (),
        secrets: Mapping[str, str] | None = None,  # file name -> value
        env: Mapping[str, str] | None = None,
        on_line: Callable[[str], Awaitable[None]] | None = None,  # stdout, as it comes
        timeout: float = 3600,  # noqa: ASYNC109 - the bot's API: a budget
        poll: float = 1.0,
    ) -> OneOffResult:
        """Run `command` once in `image` on the node, wait for it to end and return
        its exit code and output. The service and its secrets are removed whatever
        happens. SwarmError if the task cannot start, its node goes down, or it runs
        longer than `timeout`."""
        name = f"coopbot-{purpose}-{uuid.uuid4().hex[:10]}"
        labels = {ONEOFF_LABEL: name}
        secret_ids: list[tuple[str, str, str]] = []  # (id, swarm name, file name)

        def create(c: Any) -> str:
            for filename, value in (secrets or {}).items():
                secret_name = f"{name}-{filename}"
                made = c.api.create_secret(secret_name, value.encode(), labels=labels)
                secret_ids.append((made["ID"], secret_name, filename))
            refs = [
                docker.types.SecretReference(sid, sname, filename=fname, mode=0o400)
                for sid, sname, fname in secret_ids
            ]
            service = c.services.create(
                image,
                command=list(command),
                name=name,
                labels=labels,
                env=[f"{k}={v}" for k, v in (env or {}).items()],
                mounts=[
                    docker.types.Mount(
                        m.target,
                        m.source,
                        type="bind" if m.bind else "volume",
                        read_only=m.read_only,
                    )
                    for m in mounts
                ],
                secrets=refs,
                constraints=[f"node.id == {node_id}"],
                restart_policy=docker.types.RestartPolicy(condition="none"),
                mode=docker.types.ServiceMode("replicated", replicas=1),
            )
            return str(service.id)

        service_id = ""
        # A cancel (the job's time limit) does not stop the worker thread that creates:
        # the service it makes must still be known, so that it is removed too.
        creating = asyncio.ensure_future(self._sdk(create))
        try:
            service_id = await asyncio.shield(creating)
            return await self._wait_oneoff(service_id, name, node_id, on_line, timeout, poll)
        finally:
            if not service_id:
                with contextlib.suppress(Exception):  # its own error is already raised
                    service_id = await asyncio.shield(creating)
            await self._remove_oneoff(service_id, [sid for sid, _, _ in secret_ids])

    async def _wait_oneoff(
        self,
        service_id: str,
        name: str,
        node_id: str,
        on_line: Callable[[str], Awaitable[None]] | None,
        timeout: float,  # noqa: ASYNC109
        poll: float,
    ) -> OneOffResult:
        deadline = time.monotonic() + timeout
        shown = 0  # stdout lines already passed to on_line

        def look(c: Any) -> tuple[dict[str, Any] | None, str]:
            tasks = c.api.tasks(filters={"service": service_id})
            node = c.api.inspect_node(node_id)
            return (tasks[0] if tasks else None), str((node.get("Status") or {}).get("State"))

        while True:
            task, node_state = await self._sdk(look)
            status = (task or {}).get("Status") or {}
            state = status.get("State", "")
            if state in ENDED:
                out, err = await self._oneoff_logs(service_id)
                if on_line is not None:
                    for line in out[shown:]:
                        await on_line(line)
                if "ContainerStatus" not in status:  # rejected, or lost before it ran
                    raise SwarmError(f"{name} did not run: {status.get('Err') or state}")
                code = int((status.get("ContainerStatus") or {}).get("ExitCode", -1))
                return OneOffResult(code, out, err)
            if node_state != "ready":
                raise SwarmError(
                    f"the node {node_id[:12]} of {name} is {node_state}: the task was lost "
                    f"while {state or 'starting'}"
                )
            if time.monotonic() >= deadline:
                raise SwarmError(f"{name} did not finish within {timeout:g}s")
            if on_line is not None and state == "running":
                with contextlib.suppress(SwarmError):  # logs are best effort while it runs
                    out, _ = await self._oneoff_logs(service_id)
                    for line in out[shown:]:
                        await on_line(line)
                    shown = max(shown, len(out))
            await asyncio.sleep(poll)

    async def _oneoff_logs(self, service_id: str) -> tuple[list[str], list[str]]:
        def fetch(c: Any) -> tuple[list[str], list[str]]:
            result = []
            for which in ("stdout", "stderr"):
                chunks = c.api.service_logs(service_id, follow=False, **{which: True})
                text = b"".join(chunks).decode(errors="replace")
                result.append([line for line in text.splitlines() if line.strip()])
            return result[0], result[1]

        return await self._sdk(fetch)

    async def remove_ended_oneoffs(self) -> list[str]:
        """Remove the one-offs (and their secrets) a stopped bot left behind: those whose
        task has ended. A one-off still running is left alone: it may be another bot's,
        or a restic that will end by itself (restart condition none) and be removed by
        the next sweep. Returns the names removed."""

        def sweep(c: Any) -> list[tuple[str, str, list[str]]]:
            ended = []
            for service in c.api.services(filters={"label": ONEOFF_LABEL}):
                tasks = c.api.tasks(filters={"service": service["ID"]})
                if all(t["Status"]["State"] in _ENDED for t in tasks):
                    name = service["Spec"]["Name"]
                    own = c.api.secrets(filters={"label": f"{ONEOFF_LABEL}={name}"})
                    ended.append((service["ID"], name, [s["ID"] for s in own]))
            return ended

        ended = await self._sdk(sweep)
        for service_id, _, secret_ids in ended:
            await self._remove_oneoff(service_id, secret_ids)
        return [name for _, name, _ in ended]

    async def _remove_oneoff(self, service_id: str, secret_ids: list[str]) -> None:
        def remove(c: Any) -> None:
            if service_id:
                with contextlib.suppress(docker.errors.NotFound):
                    c.api.remove_service(service_id)
            # Secrets stay "in use" until the task is gone from the manager's view.
            for secret_id in secret_ids:
                for _ in range(50):
                    try:
                        c.api.remove_secret(secret_id)
                        break
                    except docker.errors.NotFound:
                        break
                    except docker.errors.APIError:
                        time.sleep(0.2)
                else:
                    log.warning("one-off secret %s could not be removed", secret_id)

        # Cleanup must run even when the caller was cancelled (the job's time limit).
        await asyncio.shield(self._sdk(remove))
