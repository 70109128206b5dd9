"""After a crash: tell each room about the jobs the last run left open, in the job's own
thread, with what the bot finds now and the command that puts it right.

Two things are finished rather than only told, because finishing them is safe
whatever the dead job had reached: a deploy (upgrade, rollback) that had started is
waited for (swarm carries an update on by itself; the job still owed the verdict), and
a restore that had touched the app scales it back to its replica counts (an app left
at 0 is down; the checkpoint says which data it now runs on and where the rest is).
Nothing is deployed, restored or unlocked again by itself: that stays a decision for
a person, who now has the facts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial

from bot.core.context import Services
from bot.core.records import JobRow, job_thread_key
from bot.errors import UserError
from bot.features.apps.resume import resume_deploy
from bot.features.backups.resume import (
    backup_all_report,
    backup_report,
    repository_report,
    resume_restore,
)
from bot.fmt import code, utc_time

log = logging.getLogger(__name__)

DEPLOYS = ("deploy", "upgrade", "rollback")
# `!backup`'s subcommand words: its job's "app" (its lock) then, not an app's domain.
_REPOSITORY_WORDS = ("check", "drill", "prune")
_BACKUP_WORDS = ("all", "accept", *_REPOSITORY_WORDS)

# What was left half-done by a job of each kind, and what to check.
_AFTERMATH = {
    "restore": "The restore had not touched the app yet (it was not scaled down): its "
    "data and services are as they were.",
    "upgrade": "A backup taken first, if any, is listed by `{prefix}snapshots {app}`.",
    "backup": "restic may have left a lock in the repository (the bot never removes one "
    "by itself): `{prefix}backup check` reports it. If the app has a backup pre-hook "
    "(maintenance mode, a dump), its post-hook may not have run.",
}


async def tell_interrupted(
    jobs: list[JobRow], services: Services, ready: Callable[[], Awaitable[bool]]
) -> None:
    """Once the chat can report, one message per interrupted job in its thread (or as
    a reply to the command that started it); what is safe to finish is finished, and
    the message is edited with how that ended."""
    if not jobs:
        return
    async with contextlib.AsyncExitStack() as all_held:
        # Each app whose job is finished here is locked before the chat can deliver
        # a command (a free lock is taken without waiting): a member's job on it
        # waits, saying for what, instead of interleaving with the finishing work.
        held: dict[str, contextlib.AsyncExitStack] = {}
        last: dict[str, int] = {}  # the last job finished per app: its lock is freed then
        for job in jobs:
            if job.app is not None and _finishing(job, services) is not None:
                last[job.app] = job.id
                if job.app not in held:
                    held[job.app] = await all_held.enter_async_context(contextlib.AsyncExitStack())
                    lock = services.jobs.app_lock(job.app, holder=_holder(job))
                    await held[job.app].enter_async_context(lock)
        while not await ready():  # noqa: ASYNC110 (a predicate, not an event)
            await asyncio.sleep(0.2)
        for job in jobs:
            try:
                await _tell(job, services)
            except Exception:
                log.exception("could not tell the room about interrupted job #%s", job.id)
            finally:
                if job.app is not None and last.get(job.app) == job.id:
                    await held.pop(job.app).aclose()  # the app is free for the next job


def _holder(job: JobRow) -> str:
    return f"the bot finishing interrupted job #{job.id} ({code(job.text)})"


async def _tell(job: JobRow, services: Services) -> None:
    thread = services.store.get(job_thread_key(job.id))
    head = _head(job)
    finishing = _finishing(job, services)
    first = head + ([finishing[0]] if finishing else [await _app_now(job, services)])
    event_id = await services.chat.send(
        job.room_id,
        "\n".join(first),
        reply_to=None if thread else job.event_id or None,
        thread_root=thread or None,
        mentions=[job.sender] if job.sender.startswith("@") else [],
        notify=True,
    )
    if not finishing:
        return
    outcome = await finishing[1]()
    await services.chat.edit(
        job.room_id, event_id, "\n".join([*head, outcome, *_next(job, services)])
    )


def _head(job: JobRow) -> list[str]:
    return [
        f"⚠ Job #{job.id} ({code(job.text)}) was interrupted: the bot stopped while it "
        f"was {'running' if job.started_at else 'waiting'} (asked {utc_time(job.created_at)})."
    ]


def _finishing(job: JobRow, services: Services) -> tuple[str, Callable[[], Awaitable[str]]] | None:
    """What is finished now for this job: (the line said meanwhile, the work that
    returns how it ended); None when nothing is."""
    if job.app is None or job.started_at is None:
        return None
    if job.command in DEPLOYS:
        return (
            f"⏳ Waiting for {job.app} to converge, as the job would have…",
            partial(resume_deploy, services.apps, services.store, job.app, job.id),
        )
    if job.command == "backup" and services.backups is not None:
        backups, since, prefix = services.backups, job.started_at, services.prefix
        if job.app == "all":
            work = partial(backup_all_report, backups, since, prefix)
        elif job.app in _REPOSITORY_WORDS:
            work = partial(repository_report, backups, job.app, prefix)
        elif job.app in _BACKUP_WORDS:
            return None  # `backup accept` only writes the store: nothing was left half-done
        else:
            work = partial(backup_report, backups, job.app, since, prefix)
        return ("⏳ Looking at the restic repository…", work)
    if job.command == "restore" and services.backups is not None:
        return (
            f"⏳ Looking at what the restore left of {job.app}…",
            partial(_restore, job.app, services),
        )
    return None


async def _restore(app: str, services: Services) -> str:
    assert services.backups is not None
    done = await resume_restore(services.backups, services.store, app, services.prefix)
    if done is not None:
        return done
    return await _app_now_text(app, services) + "\n" + _AFTERMATH["restore"]


def _next(job: JobRow, services: Services) -> list[str]:
    prefix, lines = services.prefix, []
    aftermath = _AFTERMATH.get(job.command)
    told = job.started_at is not None and job.command in ("restore", "backup")
    if aftermath and not told:
        lines.append(aftermath.format(prefix=prefix, app=job.app))
    if (domain := _domain(job)) is not None:
        lines.append(
            f"Check with `{prefix}status {domain}`; if it is still wanted, send "
            f"{code(job.text)} again."
        )
    else:
        lines.append(f"If it is still wanted, send {code(job.text)} again.")
    return lines


def _domain(job: JobRow) -> str | None:
    """The app a job worked on: not `!backup all` (or check, ...), whose lock word it is."""
    if job.command == "backup" and job.app in _BACKUP_WORDS:
        return None
    return job.app


async def _app_now(job: JobRow, services: Services) -> str:
    domain = _domain(job)
    now = await _app_now_text(domain, services) if domain is not None else ""
    return "\n".join([now, *_next(job, services)]).strip()


async def _app_now_text(app: str, services: Services) -> str:
    try:
        env = await services.apps.find(app)
        deployed = await services.apps.deployed(env)
    except UserError as exc:
        return f"What {app} looks like now could not be read: {exc}"
    if not deployed.exists:
        return f"Now: {app} is not deployed."
    services_line = ", ".join(
        f"{s.short_name} {s.replicas_running}/{s.replicas_desired}"
        if s.replicas_desired is not None
        else f"{s.short_name} (global)"
        for s in deployed.services
    )
    return f"Now: {app} runs {deployed.version or 'an unlabelled version'} ({services_line})."
