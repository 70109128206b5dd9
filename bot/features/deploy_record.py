"""What a deploy leaves behind once it has an outcome: its row in the deploy history
(what `!rollback` takes as "previous", what `!history` shows), the audit line and, for
a good deploy of a released version, the version pinned in the app's .env as abra pins
it.

One function for the three places that write it: the deploy step itself
(bot/features/apps/deploy.py), the bot's own self-upgrade reported after the restart it
caused (bot/features/self_app.py), and a deploy a crash cut short that the next start
saw converge (bot/features/apps/resume.py). A module of its own because self_app.py
cannot import the apps package (apps/deploy.py imports self_app.py).

A deploy about to call `docker stack deploy` also leaves a checkpoint (store kv, under
the job's `job.<id>.` keys, pruned with them): what the resume needs to write the same
row for a job that did not live to see its outcome.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Any

from bot.core.store import Store
from bot.ops.abra import AppEnv, set_pinned_version


@dataclass(frozen=True)
class DeployCheckpoint:
    """What a deploy had decided when it called `docker stack deploy`."""

    target: str
    previous: str | None
    actor: str
    chaos: bool = False


def checkpoint_key(job_id: int) -> str:
    return f"job.{job_id}.deploy"


def save_checkpoint(store: Store, job_id: int | None, checkpoint: DeployCheckpoint) -> None:
    if job_id is not None:
        store.put_json(checkpoint_key(job_id), asdict(checkpoint))


def load_checkpoint(store: Store, job_id: int) -> DeployCheckpoint | None:
    saved: Any = store.get_json(checkpoint_key(job_id))
    if not isinstance(saved, dict):
        return None
    try:
        return DeployCheckpoint(**saved)
    except TypeError:  # written by another version of the bot: nothing to go by
        return None


def record_deploy(
    store: Store,
    app: AppEnv,
    version: str,
    previous: str | None,
    actor: str,
    result: str,
    *,
    chaos: bool = False,
    job_id: int | None = None,
    detail: str | None = None,
) -> None:
    """The history row and the audit line of a deploy that ended (`result` ok/failed)."""
    store.add_deploy(
        app.domain,
        version,
        actor,
        result,
        server=app.server,
        previous_version=previous,
        chaos=chaos,
        job_id=job_id,
        detail=detail,
    )
    store.audit(actor, f"deploy.{result}", f"{version} (was {previous})", app=app.domain)


async def record_converged(
    store: Store,
    app: AppEnv,
    version: str,
    previous: str | None,
    actor: str,
    *,
    chaos: bool = False,
    job_id: int | None = None,
) -> None:
    """A deploy that converged: its history row, then the .env pinned to the version
    (not for chaos, which deploys a commit, not a release). Raises OSError when the
    .env cannot be written; the row is in by then."""
    record_deploy(store, app, version, previous, actor, "ok", chaos=chaos, job_id=job_id)
    if not chaos:
        await asyncio.to_thread(set_pinned_version, app.path, app.recipe, version)


async def record_outcome(
    store: Store,
    app: AppEnv,
    checkpoint: DeployCheckpoint,
    ok: bool,
    *,
    job_id: int | None = None,
    detail: str | None = None,
) -> None:
    """A deploy whose job did not live to see its outcome (a crash, or the restart of
    the bot's own app), recorded as the job would have: converged, or failed with why."""
    if ok:
        await record_converged(
            store,
            app,
            checkpoint.target,
            checkpoint.previous,
            checkpoint.actor,
            chaos=checkpoint.chaos,
            job_id=job_id,
        )
    else:
        record_deploy(
            store,
            app,
            checkpoint.target,
            checkpoint.previous,
            checkpoint.actor,
            "failed",
            chaos=checkpoint.chaos,
            job_id=job_id,
            detail=detail,
        )
