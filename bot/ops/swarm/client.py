"""The Swarm adapter's I/O: the docker SDK (in worker threads) and the docker CLI.

- `docker stack deploy` / `stack rm` / `service rollback` run as subprocesses of the
  docker CLI (argument list, explicit environment, no shell): docker-py has no
  compose-to-swarm conversion, and the CLI is what abra-deployed stacks were made with.
- Everything else (services, tasks, secrets, volumes, logs, registry lookups) goes
  through the synchronous docker SDK, always inside `asyncio.to_thread`.
- What the JSON means is read in parse.py, and what a series of snapshots means in
  convergence.py; this module fetches, acts, waits and reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from bot.labels import NAMESPACE_LABEL, is_rollback, namespace_filter, service_filter
from bot.ops.compose import load_compose
from bot.ops.explain import causes as _causes
from bot.ops.process import ProcessTimeout, run_process
from bot.ops.swarm.convergence import ConvergenceWatch
from bot.ops.swarm.events import SwarmEvent, SwarmSnapshot, follow
from bot.ops.swarm.hookexec import exec_bounded, tail_text
from bot.ops.swarm.model import Convergence, ServiceInfo, SwarmError, TaskInfo
from bot.ops.swarm.nodes import NodeCalls
from bot.ops.swarm.oneoff import OneOffCalls
from bot.ops.swarm.parse import check_stack, container_spec, group, iso, service_info, split_ref
from bot.ops.swarm.sshdial import SSHDialAdapter, ssh_docker_client

log = logging.getLogger(__name__)

T = TypeVar("T")


def _find_cli() -> str:
    # Debian's 20.10 client matches the engine; /usr/local/bin/docker may be a newer one.
    if os.path.exists("/usr/bin/docker"):
        return "/usr/bin/docker"
    return shutil.which("docker") or "docker"


DOCKER_CLI = _find_cli()
# `docker stack config` of a big recipe prints a lot; nothing else comes close.
CLI_OUTPUT_LIMIT = 16 * 1024 * 1024


def _remove_network(client: Any, net_id: str) -> None:
    client.api.remove_network(net_id)


def _explain(e: docker.errors.APIError) -> str:
    return str(e.explanation or e).strip()


async def _report(on_progress: Callable[[str], Awaitable[None]] | None, line: str) -> None:
    if on_progress is None:
        return
    try:
        await on_progress(line)
    except Exception:  # a chat hiccup must not abort the watch
        log.exception("progress callback failed")


class Swarm(NodeCalls, OneOffCalls):
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
        self._ssh: SSHDialAdapter | None = None  # ssh:// hosts: what ssh said on failure
        self._client_lock = threading.Lock()

    # -- plumbing

    def _client_sync(self) -> Any:
        """The SDK client, built on first use (version="auto" asks the daemon)."""
        with self._client_lock:
            if self._client is None:
                if self.docker_host.startswith("ssh://"):
                    # The ssh binary (user's ssh config, keys, agent), as the CLI and
                    # abra do; docker-py's own ssh transport needs paramiko (sshdial.py).
                    self._ssh = SSHDialAdapter(self.docker_host, self._timeout)
                    self._client = ssh_docker_client(self._ssh, self._timeout)
                else:
                    self._client = docker.DockerClient(
                        base_url=self.docker_host, version="auto", timeout=self._timeout
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
            log.warning("docker at %s unreachable: %r", self.docker_host, e)
            raise SwarmError(f"server unreachable: {self._why(e)}") from e

    def _why(self, e: Exception) -> str:
        """Why docker did not answer, in a sentence with a next step; the library's
        own text ('Connection aborted', FileNotFoundError(2, ...)) goes to the log.
        For an ssh:// host, ssh's own words ('Permission denied (publickey).')."""
        host = self.docker_host
        if host.startswith("ssh://"):
            said = self._ssh.last_error() if self._ssh is not None else ""
            if said:
                return f"{host}: " + (said if said.startswith("ssh:") else f"ssh: {said}")
            # ssh said nothing (it still runs, say): the generic sentence below.
        causes = _causes(e)
        if host.startswith("unix://"):
            socket_path = host.removeprefix("unix://")
            if any(isinstance(c, FileNotFoundError) for c in causes):
                return (
                    f"the docker socket {socket_path} is not there: is dockerd running, and "
                    "is the socket mounted into the bot? `coopbot check` tests it"
                )
            if any(isinstance(c, PermissionError) for c in causes):
                return (
                    f"the bot may not use the docker socket {socket_path} (permission "
                    "denied): run it as root or in the docker group"
                )
        if any(isinstance(c, ConnectionRefusedError) for c in causes):
            return f"nothing answers at {host}: is dockerd running there?"
        return f"{host} did not answer ({type(e).__name__}); `coopbot check` tests it"

    async def close(self) -> None:
        """Close the SDK client (its HTTP connections); for the bot's shutdown.

        Safe to call twice, or before any use. A call after it builds a new client."""

        def close_sync() -> None:
            # Under the lock: a client being built in a worker thread is closed too,
            # not left behind; the lock is a thread lock, hence the worker thread.
            with self._client_lock:
                client, self._client = self._client, None
            if client is not None:
                client.close()

        await asyncio.to_thread(close_sync)

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
            # The one process runner: a timeout or cancel stops the CLI's whole process
            # group (ssh for ssh:// hosts too), and what it prints is bounded.
            res = await run_process(
                [self.cli, *args],
                env=self._cli_env(env),
                cwd=cwd,
                timeout=limit,
                stdout_limit=CLI_OUTPUT_LIMIT,
            )
        except ProcessTimeout as e:
            raise SwarmError(f"docker {' '.join(args[:2])} took more than {limit:g}s") from e
        except OSError as e:
            raise SwarmError(f"cannot run the docker CLI {self.cli}: {e}") from e
        return res.returncode, res.stdout, res.stderr

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
            label = namespace_filter(stack)
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
        return group(services, tasks, fresh)

    async def stacks(self) -> dict[str, list[ServiceInfo]]:
        infos, _ = await self._snapshot(None, up_to_date=False)
        out: dict[str, list[ServiceInfo]] = {}
        for info in infos:
            out.setdefault(info.labels.get(NAMESPACE_LABEL, ""), []).append(info)
        return dict(sorted(out.items()))

    async def services(self, stack: str) -> list[ServiceInfo]:
        infos, _ = await self._snapshot(check_stack(stack), up_to_date=False)
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
        label = namespace_filter(check_stack(stack))
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
        this node (the hooks of the backupbot labels); (exit code, output tail: the last
        64 kB, bounded while it runs, see hookexec.py).

        The command comes from the recipe's labels and runs inside the app's own
        container, as backup-bot-two does; it is passed as an argument list."""
        name = f"{check_stack(stack)}_{service}"

        def run(c: Any) -> tuple[int, str]:
            running = c.containers.list(
                filters={"label": service_filter(name), "status": "running"}
            )
            if not running:
                raise SwarmError(f"no running container of {name} on this node to run a hook in")
            return exec_bounded(running[0], ["sh", "-c", command])

        try:
            async with asyncio.timeout(timeout):
                return await self._sdk(run)
        except TimeoutError:
            raise SwarmError(f"the command in {name} did not finish within {timeout:g}s") from None

    async def scale(self, stack: str, replicas: Mapping[str, int]) -> None:
        """Set the replica count of these services (short names) of the stack."""
        check_stack(stack)

        def update(c: Any) -> None:
            for short, count in replicas.items():
                service = c.services.get(f"{stack}_{short}")
                if not service.scale(count):
                    raise SwarmError(f"scaling {stack}_{short} to {count} was refused")

        await self._sdk(update)

    async def mounts(self, stack: str) -> dict[str, list[tuple[str, str]]]:
        """Per service (short name): its volume mounts as (volume name, container path)."""
        label = namespace_filter(check_stack(stack))
        raw = await self._sdk(lambda c: c.api.services(filters={"label": label}))
        result: dict[str, list[tuple[str, str]]] = {}
        for svc in raw:
            spec = container_spec(svc["Spec"])
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
                name, tag = split_ref(ref)
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
        check_stack(stack)
        if tail < 0:
            raise SwarmError("tail must be >= 0")

        def fetch(c: Any) -> list[tuple[str, str, str]]:
            raw = c.api.services(filters={"label": namespace_filter(stack)})
            infos = [service_info(s, []) for s in raw]
            if service is not None:
                infos = [i for i in infos if service in (i.short_name, i.name)]
                if not infos:
                    names = ", ".join(sorted(service_info(s, []).short_name for s in raw))
                    raise SwarmError(
                        f"no service {service} in {stack}"
                        + (f" (it has: {names})" if names else "")
                    )
            tty = {s["ID"]: bool(container_spec(s["Spec"]).get("TTY")) for s in raw}
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
                text = tail_text(chunks)  # its newest 8 MB at most, read as a stream
                for line in text.splitlines():
                    ts, _, msg = line.partition(" ")
                    lines.append((iso(ts), info.short_name, msg))
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
        unset: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The merged, interpolated compose, as `docker stack deploy` would see it with
        the same env (Debian's 20.10 CLI has no `docker stack config`: see load_compose)."""
        files = [cwd / f for f in compose_files]
        return await asyncio.to_thread(
            partial(
                load_compose,
                files,
                self._cli_env(env),
                allow_missing=allow_missing,
                unset=unset,
            )
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
        args.append(check_stack(stack))
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

        What the snapshots mean is ConvergenceWatch's business (see it for
        `after_rollback=None`, the default: decided per service from the first look);
        this loop fetches, reports and sleeps.
        """
        watch = ConvergenceWatch(
            check_stack(stack),
            start=time.monotonic(),
            timeout=timeout,
            monitor=monitor,
            after_rollback=after_rollback,
            max_failures=max_failures,
        )
        while True:
            services, tasks = await self._snapshot(stack, up_to_date=True)
            down = await self.down_nodes()  # a node that is down tells nothing new
            news, outcome = watch.observe(services, tasks, time.monotonic(), down)
            for line in news:
                await _report(on_progress, line)
            if outcome is not None:
                return outcome
            await asyncio.sleep(poll)

    async def rollback(self, stack: str) -> list[str]:
        """Roll back every service of the stack that has a previous spec to go back to;
        returns their short names. Skipped: services swarm (or we) already rolled back
        (a second rollback would re-apply the failed spec) and services whose previous
        spec is their current one. Services created by the failed deploy stay."""
        label = namespace_filter(check_stack(stack))
        raw = await self._sdk(lambda c: c.api.services(filters={"label": label}))
        rolled = []
        for svc in sorted(raw, key=lambda s: s["Spec"]["Name"]):
            prev = svc.get("PreviousSpec")
            state = (svc.get("UpdateStatus") or {}).get("State", "")
            if not prev or prev == svc["Spec"] or is_rollback(state):
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
        check_stack(stack)
        rc, out, err = await self._run_cli(["stack", "rm", stack], limit=timeout)
        if rc:
            raise SwarmError(f"docker stack rm {stack} failed: {(err or out).strip()}")
        label = {"label": namespace_filter(stack)}

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
        name, tag = split_ref(ref)

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

    # -- following

    def events(
        self, *, poll_interval: float = 60.0, fallback_interval: float = 15.0
    ) -> AsyncIterator[SwarmEvent | SwarmSnapshot]:
        """The daemon's events (container, service, node) and snapshots of the nodes
        and services, reconnecting with backoff and polling while the stream is down
        (events.py); until the caller stops iterating."""
        return follow(
            self._client_sync, poll_interval=poll_interval, fallback_interval=fallback_interval
        )
