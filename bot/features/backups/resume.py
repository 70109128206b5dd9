"""Finishing a restore that a crash cut short (bot/core/recovery.py calls it at start-up).

A restore writes a checkpoint into the store before each step that changes the app
(scaling to 0, each swap, scaling back): the replica counts to go back to, which
paths are already replaced, and where the restored copies and the replaced data are.
The process can die anywhere in between (a SIGKILL runs no `finally`), so after a
restart that checkpoint is all there is. Scaling the app back to its counts is safe
whatever step was reached, and leaving it at 0 is not, so the resume does that and
says which data the app now runs on and where the rest is kept. Nothing is deleted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bot.core.store import Store
from bot.errors import UserError
from bot.features.backups.targets import Targets

CHECKPOINT = "restore.checkpoint."  # store kv, + the app's domain; one restore per app


def save_checkpoint(store: Store, domain: str, state: dict[str, Any] | None) -> None:
    """Keep (or, with None, drop) what a restart needs to finish this restore."""
    store.put_json(CHECKPOINT + domain, state)


async def resume_restore(owner: Targets, store: Store, domain: str, prefix: str) -> str | None:
    """Scale an app a dead restore left stopped back up; the lines for the room, or
    None when no restore of it was in flight."""
    state = store.get_json(CHECKPOINT + domain)
    if not isinstance(state, dict):
        return None
    replicas: dict[str, int] = state["replicas"]
    counts = ", ".join(f"{name}={n}" for name, n in replicas.items()) or "no services"
    scope, replaced, snapshot = state["scope"], state["replaced"], state["snapshot"]
    if not replaced:
        data = "its own data, untouched (nothing was restored yet)"
    elif len(replaced) == len(scope):
        data = f"the data of snapshot `{snapshot}` (every path was swapped in)"
    else:
        rest = [p for p in scope if p not in replaced]
        data = (
            f"mixed data: {', '.join(f'`{p}`' for p in replaced)} restored from `{snapshot}`, "
            f"{', '.join(f'`{p}`' for p in rest)} its own; `{prefix}restore {domain} "
            f"{snapshot}` puts the whole snapshot in place"
        )
    lines = [f"The restore had got to: {state['step']}."]
    swarm = owner.apps.swarm(state["server"])
    try:
        await swarm.scale(state["stack"], replicas)
        result = await swarm.wait_converged(state["stack"], timeout=300)
    except UserError as exc:
        lines.append(
            f"⚠ Scaling {domain} back to {counts} failed ({exc}): it may still be at 0. "
            f"`{prefix}deploy {domain}` starts it again."
        )
    else:
        running = "it runs again" if result.ok else "NOT running: " + "; ".join(result.failures[:3])
        lines.append(f"↩ The bot scaled {domain} back to {counts}: {running}, on {data}.")
    for path in await asyncio.to_thread(_existing, state["staging"]):
        lines.append(f"- a restored copy that was not swapped in is at `{path}`")
    for path in await asyncio.to_thread(_existing, state["aside"]):
        lines.append(f"- the data it replaced is kept at `{path}`")
    save_checkpoint(store, domain, None)
    return "\n".join(lines)


def _existing(paths: list[str]) -> list[str]:
    return [p for p in paths if Path(p).exists()]
