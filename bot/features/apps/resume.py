"""Finishing a deploy that a crash cut short (bot/core/recovery.py calls it at start-up).

Once `docker stack deploy` has returned, swarm carries the update on by itself: the
bot being gone changes nothing there. What the dead job still owed the room was the
wait for convergence and its verdict, so that is what is done now, read-only: nothing
is deployed or rolled back again (that stays a decision for a person). A deploy that
had called `docker stack deploy` is written into the history (and the .env pinned) as
the job would have, from the checkpoint it left (bot/features/deploy_record.py).
"""

from __future__ import annotations

from bot.core.store import Store
from bot.core.storefull import StoreFull
from bot.errors import UserError
from bot.features.apps.deploy import DEFAULT_TIMEOUT, Apps
from bot.features.deploy_record import load_checkpoint, record_outcome
from bot.ops.abra import AppEnv
from bot.ops.swarm import Convergence


async def resume_deploy(apps: Apps, store: Store, domain: str, job_id: int) -> str:
    """Wait for the app's stack to converge (if it exists) and say how it ended; a
    deploy that had called `docker stack deploy` is recorded as the job would have."""
    try:
        env = await apps.find(domain)
        swarm = apps.swarm(env.server)
        if not await swarm.services(env.stack_name):
            return (
                f"Now: {domain} is not deployed; nothing of this deploy exists on "
                f"{env.server} (the bot stopped before `docker stack deploy`)."
            )
        result = await swarm.wait_converged(env.stack_name, env.timeout or DEFAULT_TIMEOUT)
        now = await apps.deployed(env)
    except UserError as exc:
        return f"What {domain} looks like now could not be read: {exc}"
    version = now.version or "an unlabelled version"
    replicas = Apps._replicas(now.services)
    failures = "; ".join(result.failures[:5]) or "no reason given"
    if result.ok:
        text = (
            f"⏳→✅ The bot waited for the convergence the job was owed: {domain} "
            f"converged and runs {version} ({replicas})."
        )
    elif result.rolled_back_by_swarm:
        text = (
            f"⏳→↩ The bot waited for convergence: swarm rolled {domain} back by itself; "
            f"it runs {version} ({replicas}). Why: {failures}"
        )
    else:
        text = (
            f"⏳→❌ The bot waited for convergence: {domain} did NOT converge ({failures}); "
            f"it is labelled {version} ({replicas}). `{apps.prefix}rollback {domain}` goes "
            "back to the previous version."
        )
    recorded = await _record(store, env, job_id, now.version, result, failures)
    return "\n".join(filter(None, [text, recorded]))


async def _record(
    store: Store,
    env: AppEnv,
    job_id: int,
    version: str | None,
    result: Convergence,
    failures: str,
) -> str:
    """The history row (and .env pin) the finished job would have written, only for a
    deploy that got as far as `docker stack deploy` (its checkpoint) and whose target
    the services now carry (or that swarm rolled back): a bot killed just before the
    CLI ran deployed nothing, and what runs is the previous deploy's, recorded then."""
    checkpoint = load_checkpoint(store, job_id)
    if checkpoint is None:
        return ""
    ok = result.ok and version == checkpoint.target
    if not ok and version != checkpoint.target and not result.rolled_back_by_swarm:
        return ""
    try:
        await record_outcome(store, env, checkpoint, ok, job_id=job_id, detail=failures)
    except StoreFull:  # the report matters more than the row
        return "⚠ Not recorded in the deploy history: the disk of the bot's data folder is full."
    except OSError as exc:
        return (
            f"Recorded in the deploy history, but the .env could not be pinned to "
            f"{checkpoint.target}: {exc}"
        )
    if not ok:
        return f"Recorded as failed in the deploy history ({checkpoint.target})."
    pinned = "" if checkpoint.chaos else f"; {env.domain}'s .env pins {checkpoint.target}"
    return f"Recorded in the deploy history as the job would have{pinned}."
