"""The bot's own app: it never undeploys itself, and it says so before it upgrades itself.

Which app the bot runs as: `self_app:` in the config (the recipe's config template sets
it), else found once at start from its own container: `STACK_NAME` in its environment,
or the `com.docker.stack.namespace` label of the container whose hostname this is (swarm
names a task's container after its id), matched to an app of the inventory by stack
name. Neither: no app of its own (a bot run outside docker), and nothing is refused.

A deploy of its own app restarts the bot in the middle of its own job (the stack update
stops the old container). So just before `docker stack deploy` it announces that in the
job's thread and records a pending self-upgrade in the store; the next start reports in
that thread what runs now against the target, once swarm has settled, and closes the job
with that result instead of telling the room it was interrupted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bot.core.chat import Chat
from bot.core.records import JobRow, JobState
from bot.core.store import Store
from bot.errors import UserError
from bot.features.deploy_record import DeployCheckpoint, record_outcome
from bot.fmt import code
from bot.ops.abra import AppEnv
from bot.ops.swarm import Convergence, SwarmError

log = logging.getLogger(__name__)

# How long the next start waits for its own stack to settle before it reports.
SETTLE_TIMEOUT = 300.0
# A job in one of these states was cut short by the restart, not finished by the old bot.
_CUT_SHORT = (JobState.RUNNING, JobState.WAITING, JobState.INTERRUPTED, JobState.CANCELLED)


class _Stack(Protocol):
    async def wait_converged(self, stack: str, timeout: float) -> Convergence: ...  # noqa: ASYNC109


class _Deployed(Protocol):
    @property
    def version(self) -> str | None: ...


class _Apps(Protocol):
    """What the report after the restart reads (bot.features.apps.Apps has it)."""

    async def find(self, domain: str) -> AppEnv: ...
    async def deployed(self, app: AppEnv) -> _Deployed: ...
    def swarm(self, server: str) -> Any: ...


@dataclass(frozen=True)
class PendingSelfUpgrade:
    app: str
    target: str
    previous: str | None
    job_id: int | None
    room_id: str | None
    thread: str | None
    actor: str


def own_stack_from_env(environ: Mapping[str, str] = os.environ) -> str | None:
    return environ.get("STACK_NAME") or None


_CONTAINER_ID = re.compile(r"/containers/([0-9a-f]{64})/")


def own_container_refs(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[str]:
    """What may name this process's container: the id in the paths docker mounts its
    /etc/hostname and /etc/hosts from (also on the host network, where the hostname is
    the host's), then the hostname (a swarm task's short id on its own network)."""
    refs: list[str] = []
    try:
        found = _CONTAINER_ID.search(mountinfo.read_text())
    except OSError:
        found = None
    if found:
        refs.append(found.group(1))
    refs.append(socket.gethostname())
    return refs


class SelfApp:
    def __init__(self, store: Store, chat: Chat, configured: str | None = None) -> None:
        self.domain = configured
        self._store = store
        self._chat = chat

    async def detect(
        self, envs: Iterable[AppEnv], stack_of_container: Callable[[], Awaitable[str | None]]
    ) -> str | None:
        """The configured app, else the one whose stack this bot's container belongs to."""
        if self.domain is not None:
            return self.domain
        try:
            stack = own_stack_from_env() or await stack_of_container()
        except (SwarmError, OSError) as exc:
            log.warning("could not tell which app this bot runs as: %s", exc)
            return None
        if stack is None:
            return None
        self.domain = next((env.domain for env in envs if env.stack_name == stack), None)
        if self.domain is None:
            log.warning("this bot runs in the stack %s, which is no app of abra_dir", stack)
        else:
            log.info("this bot runs as the app %s", self.domain)
        return self.domain

    def is_self(self, domain: str) -> bool:
        return self.domain is not None and domain == self.domain

    def refuse_undeploy(self, domain: str) -> None:
        """Asked at request time and again when the job runs."""
        if self.is_self(domain):
            raise UserError(
                f"{domain} is the app I run as: I will not undeploy myself (nobody would be "
                f"left to answer, report or deploy me again). Remove it on the server with "
                f"`abra app undeploy {domain}` if that is what the co-op wants."
            )

    async def before_deploy(
        self, app: AppEnv, target: str, previous: str | None, actor: str, job_id: int | None
    ) -> None:
        """Just before `docker stack deploy` of any app: for the bot's own one, announce
        the restart in the job's thread and remember what to report after it."""
        if not self.is_self(app.domain):
            return
        job = self._store.job(job_id) if job_id is not None else None
        room = job.room_id if job is not None else await self._chat.home_room()
        thread = job.event_id if job is not None and job.event_id else None
        self._store.add_self_upgrade(
            app=app.domain,
            job_id=job_id,
            room_id=room,
            thread=thread,
            target=target,
            previous=previous,
            actor=actor,
        )
        self._store.audit(actor, "self-upgrade.start", f"{previous} → {target}", app=app.domain)
        if room is not None:
            await self._chat.send(
                room,
                f"♻ Upgrading myself to **{target}** ({app.domain}, now "
                f"{previous or 'not deployed'}): the deploy restarts me. I will report "
                "in this thread when I'm back.",
                reply_to=thread,
                thread_root=thread,
            )

    def coming_back(self) -> PendingSelfUpgrade | None:
        """At start: the self-upgrade whose job the restart cut short, if any. One whose
        job the old bot still finished (the deploy did not restart it) is dropped."""
        row = self._store.pending_self_upgrade()
        if row is None:
            return None
        pending = PendingSelfUpgrade(
            row["app"],
            row["target"],
            row["previous"],
            row["job_id"],
            row["room_id"],
            row["thread"],
            row["actor"],
        )
        job = self._store.job(pending.job_id) if pending.job_id is not None else None
        if job is not None and job.state not in _CUT_SHORT:
            self._store.close_self_upgrades(f"finished before a restart: {job.state}")
            return None
        return pending

    @staticmethod
    def not_interrupted(jobs: list[JobRow], pending: PendingSelfUpgrade | None) -> list[JobRow]:
        """The interrupted jobs recovery tells, without the self-upgrade reported here."""
        if pending is None:
            return jobs
        return [job for job in jobs if job.id != pending.job_id]

    async def report_back(
        self,
        pending: PendingSelfUpgrade,
        apps: _Apps,
        ready: Callable[[], Awaitable[bool]],
        settle: float = SETTLE_TIMEOUT,
    ) -> None:
        """After the restart: wait until the chat can report and the stack has settled,
        then say what runs against the target, in the announcement's thread. A failure
        is logged: it runs beside the chat loop and must not stop it."""
        try:
            await self._report_back(pending, apps, ready, settle)
        except Exception:
            log.exception("could not report the upgrade of myself to %s", pending.target)

    async def _report_back(
        self,
        pending: PendingSelfUpgrade,
        apps: _Apps,
        ready: Callable[[], Awaitable[bool]],
        settle: float,
    ) -> str:
        while not await ready():  # noqa: ASYNC110 (a predicate, not an event)
            await asyncio.sleep(0.2)
        try:
            env = await apps.find(pending.app)
            swarm: _Stack = apps.swarm(env.server)
            result = await swarm.wait_converged(env.stack_name, settle)
            deployed = await apps.deployed(env)
        except (UserError, SwarmError) as exc:
            text, ok = f"⚠ I'm back, but {pending.app} could not be read: {exc}", False
        else:
            text, ok = _report(pending, deployed, result)
            # What the old bot's deploy step would have recorded, had it lived to see it:
            # the history (!rollback's "previous") and the .env's pinned version.
            # (bot/features/deploy_record.py: the one function the deploy step calls.)
            try:
                await record_outcome(
                    self._store,
                    env,
                    DeployCheckpoint(pending.target, pending.previous, pending.actor),
                    ok,
                    job_id=pending.job_id,
                    detail=None if ok else text,
                )
            except OSError as exc:  # the report matters more than the pin
                log.warning("could not pin %s to %s: %s", env.domain, pending.target, exc)
        state = JobState.DONE if ok else JobState.FAILED
        if pending.job_id is not None:
            self._store.set_job_state(pending.job_id, state, text.splitlines()[0])
        self._store.close_self_upgrades(state)
        self._store.audit(
            pending.actor, f"self-upgrade.{'ok' if ok else 'failed'}", text, app=pending.app
        )
        if pending.room_id is not None:
            await self._chat.send(
                pending.room_id,
                text,
                reply_to=pending.thread,
                thread_root=pending.thread,
                mentions=[pending.actor] if pending.actor.startswith("@") else [],
                notify=not ok,
            )
        return text


def _report(
    pending: PendingSelfUpgrade, deployed: _Deployed, result: Convergence
) -> tuple[str, bool]:
    now = deployed.version or "an unlabelled version"
    job = f" (job #{pending.job_id})" if pending.job_id is not None else ""
    if result.ok and deployed.version == pending.target:
        return f"✅ I'm back: {pending.app} runs **{now}**, converged{job}.", True
    why = "; ".join(result.failures[:3]) or "not converged in time"
    if result.rolled_back_by_swarm or deployed.version != pending.target:
        why = "swarm rolled it back" if result.rolled_back_by_swarm else why
        lines = [
            f"⚠ I'm back, but {pending.app} runs **{now}**, not the target "
            f"**{pending.target}**{job}: {code(why)}."
        ]
    else:
        lines = [f"⚠ I'm back on **{now}**, but {pending.app} is not converged{job}: {code(why)}."]
    return "\n".join(lines), False
