"""After a crash: tell each room about the jobs the last run left open, with what the
bot finds now and the command that puts it right. Nothing is re-run by itself: a
deploy or restore cut short is a decision for a person, who now has the facts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.core.context import Services
from bot.core.records import JobRow
from bot.errors import UserError
from bot.fmt import code, utc_time

log = logging.getLogger(__name__)

# What was left half-done by a job of each kind, and what to check.
_AFTERMATH = {
    "restore": "A restore cut short may have left the app's services scaled to 0 and its "
    "old data set aside next to each volume (`*.coopbot-old-*` folders in the volume's "
    "directory).",
    "deploy": "Swarm goes on with a deploy by itself: the app may have finished it, or "
    "rolled back.",
    "upgrade": "Swarm goes on with a deploy by itself: the app may have finished the "
    "upgrade, or rolled back. A backup taken first is in `{prefix}snapshots {app}`.",
    "rollback": "Swarm goes on with a deploy by itself: the rollback may have finished.",
    "backup": "restic may have left a lock in the repository; `{prefix}backup check` "
    "reports it (the bot never removes one by itself).",
}


async def tell_interrupted(
    jobs: list[JobRow], services: Services, ready: Callable[[], Awaitable[bool]]
) -> None:
    """Once the chat can report, one message per interrupted job, as a reply to the
    command that started it."""
    if not jobs:
        return
    while not await ready():  # noqa: ASYNC110 (a predicate, not an event)
        await asyncio.sleep(0.2)
    for job in jobs:
        try:
            await services.chat.send(
                job.room_id,
                await _describe(job, services),
                reply_to=job.event_id or None,
                mentions=[job.sender] if job.sender.startswith("@") else [],
                notify=True,
            )
        except Exception:
            log.exception("could not tell the room about interrupted job #%s", job.id)


async def _describe(job: JobRow, services: Services) -> str:
    prefix = services.prefix
    lines = [
        f"⚠ Job #{job.id} ({code(job.text)}) was interrupted: the bot stopped while it "
        f"was {'running' if job.started_at else 'waiting'} (asked {utc_time(job.created_at)})."
    ]
    if job.app is not None:
        lines.append(await _app_now(job.app, services))
        aftermath = _AFTERMATH.get(job.command)
        if aftermath:
            lines.append(aftermath.format(prefix=prefix, app=job.app))
        lines.append(
            f"Check with `{prefix}status {job.app}`; if it is still wanted, send "
            f"{code(job.text)} again."
        )
    else:
        lines.append(f"If it is still wanted, send {code(job.text)} again.")
    return "\n".join(lines)


async def _app_now(app: str, services: Services) -> str:
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
