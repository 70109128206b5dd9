"""Finishing a deploy that a crash cut short (bot/core/recovery.py calls it at start-up).

Once `docker stack deploy` has returned, swarm carries the update on by itself: the
bot being gone changes nothing there. What the dead job still owed the room was the
wait for convergence and its verdict, so that is what is done now, read-only: nothing
is deployed or rolled back again (that stays a decision for a person).
"""

from __future__ import annotations

from bot.errors import UserError
from bot.features.apps.deploy import DEFAULT_TIMEOUT, Apps


async def resume_deploy(apps: Apps, domain: str) -> str:
    """Wait for the app's stack to converge (if it exists) and say how it ended."""
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
    if result.ok:
        return (
            f"⏳→✅ The bot waited for the convergence the job was owed: {domain} "
            f"converged and runs {version} ({replicas})."
        )
    failures = "; ".join(result.failures[:5]) or "no reason given"
    if result.rolled_back_by_swarm:
        return (
            f"⏳→↩ The bot waited for convergence: swarm rolled {domain} back by itself; "
            f"it runs {version} ({replicas}). Why: {failures}"
        )
    return (
        f"⏳→❌ The bot waited for convergence: {domain} did NOT converge ({failures}); "
        f"it is labelled {version} ({replicas}). `{apps.prefix}rollback {domain}` goes back "
        "to the previous version."
    )
