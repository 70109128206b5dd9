"""Finishing a restore that a crash cut short (bot/core/recovery.py calls it at start-up).

A restore writes a checkpoint into the store before each step that changes the app
(scaling to 0, each swap, scaling back): the replica counts to go back to, which
paths are already replaced, and where the restored copies and the replaced data are.
The process can die anywhere in between (a SIGKILL runs no `finally`), so after a
restart that checkpoint is all there is. Scaling the app back to its counts is safe
whatever step was reached, and leaving it at 0 is not, so the resume does that and
says which data the app now runs on and where the rest is kept. Nothing is deleted.

A restore on another node (remote.py) keeps its copies in the volume's folder there:
the checkpoint names the node, the app is scaled back through the manager as on one
node, and which copies are left is asked on that node (a one-off task, each volume's
folder found through the node's own endpoint, mounted read-only). If the node cannot
be asked (it is down, no endpoint), the copies are named as maybe there, on it.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
from pathlib import Path
from typing import Any

from bot.core.store import Store
from bot.errors import UserError
from bot.features.backups.remote import Remote
from bot.features.backups.repository import Repository
from bot.features.backups.targets import APP_TAG
from bot.fmt import utc_time
from bot.ops.restic import ResticError
from bot.ops.swarm.oneoff import OneOffMount

CHECKPOINT = "restore.checkpoint."  # store kv, + the app's domain; one restore per app
STARTED = "backup.started."  # store kv, + the app's domain: when its last backup began


def save_checkpoint(store: Store, domain: str, state: dict[str, Any] | None) -> None:
    """Keep (or, with None, drop) what a restart needs to finish this restore."""
    store.put_json(CHECKPOINT + domain, state)


async def resume_restore(owner: Remote, store: Store, domain: str, prefix: str) -> str | None:
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
    node = state.get("node")
    on = f" (of its data on {node['hostname']})" if isinstance(node, dict) else ""
    lines = [f"The restore{on} had got to: {state['step']}."]
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
    staging, aside = state["staging"], state["aside"]
    if isinstance(node, dict):
        found, why = await _existing_on_node(owner, state["server"], node, [*staging, *aside])
        there = f" on {node['hostname']}"
    else:
        found, why, there = await asyncio.to_thread(_existing, [*staging, *aside]), "", ""
    maybe = "" if found is not None else " (maybe: it could not be asked)"
    for path in staging:
        if found is None or path in found:
            lines.append(f"- a restored copy that was not swapped in is at `{path}`{there}{maybe}")
    for path in aside:
        if found is None or path in found:
            lines.append(f"- the data it replaced is kept at `{path}`{there}{maybe}")
    if why:
        lines.append(f"⚠ The copies{there} could not be listed: {why}")
    save_checkpoint(store, domain, None)
    return "\n".join(lines)


def _existing(paths: list[str]) -> list[str]:
    return [p for p in paths if Path(p).exists()]


async def _existing_on_node(
    owner: Remote, server: str, node: dict[str, str], paths: list[str]
) -> tuple[list[str] | None, str]:
    """Which of `paths` (under volumes_root, each in a volume's folder) exist on the
    node: (the ones found, "") or (None, why it could not be told)."""
    if not paths:
        return [], ""
    endpoint = owner.node_swarms.get(server, {}).get(node["hostname"])
    if endpoint is None:
        return None, f"servers.{server}.nodes names no docker endpoint for it"
    image = owner.config.remote_image
    if image is None:
        return None, "backups.remote_image is not set"
    root = owner.config.volumes_root
    q = shlex.quote
    try:
        mounts = []
        for volume in sorted({Path(p).relative_to(root).parts[0] for p in paths}):
            folder = await endpoint.volume_dir(volume)
            mounts.append(OneOffMount(folder, str(root / volume), read_only=True, bind=True))
        script = "; ".join(f"[ ! -e {q(p)} ] || echo {q(p)}" for p in paths) + "; true"
        result = await owner.apps.swarm(server).run_oneoff(
            purpose="resume",
            node_id=node["id"],
            image=image,
            command=["sh", "-c", script],
            mounts=mounts,
            timeout=120,
        )
    except (UserError, ValueError) as exc:  # SwarmError is a UserError
        return None, str(exc)
    if result.exit_code != 0:
        return None, f"the listing task exited {result.exit_code}"
    return [p for p in paths if p in result.stdout], ""


async def backup_report(owner: Repository, domain: str, since: float, prefix: str) -> str:
    """After a backup cut short: what the repository holds now (read-only). Whether a
    snapshot of the app was made since the job started, and every lock in it, named
    and left in place: the bot never unlocks by itself (a live restic may hold it)."""
    try:
        snaps = [s for s in await owner._snapshots(APP_TAG + domain) if s.time.timestamp() >= since]
        locks = await _locks(owner)
    except UserError as exc:
        return f"The repository could not be read: {exc}"
    lines = [
        f"Repository: snapshot {', '.join(f'`{s.short_id}`' for s in snaps)} of {domain} was "
        "made by this job (restic finished; the job did not record it)."
        if snaps
        else f"Repository: no snapshot of {domain} was made by this job."
    ]
    lines += await asyncio.to_thread(_lock_lines, locks, prefix)
    if not locks:
        lines.append("The repository holds no lock.")
    lines.append(
        "If the app has a backup pre-hook (maintenance mode, a dump), its post-hook did not "
        "run after a stop during the backup: check the app."
    )
    return "\n".join(lines)


def mark_started(store: Store, domain: str, at: float) -> None:
    """When an app's backup began (store kv, one key per app, overwritten): after a
    crash, what tells an app a cut-short `!backup all` had reached from one it had not."""
    store.put(STARTED + domain, repr(at))


async def backup_all_report(owner: Repository, since: float, prefix: str) -> str:
    """After a `!backup all` cut short: per labelled app, what the run had reached
    (a snapshot made, a run recorded, cut short while running, not started), read
    from the repository and the store; then the repository's locks, left in place."""
    try:
        envs, _ = await owner.labelled_apps()
        made = {
            env.domain: [
                s
                for s in await owner._snapshots(APP_TAG + env.domain)
                if s.time.timestamp() >= since
            ]
            for env in envs
        }
        locks = await _locks(owner)
    except UserError as exc:
        return f"The repository could not be read: {exc}"
    lines, cut, waiting = ["Repository, per app of `backup all`:"], [], []
    for env in envs:
        domain = env.domain
        run = next(
            (r for r in owner.store.backups(domain, limit=5) if r["started_at"] >= since), None
        )
        snaps = ", ".join(f"`{s.short_id}`" for s in made[domain])
        if run is not None:
            of = f" (snapshot {snaps})" if snaps else ""
            lines.append(f"- {domain}: finished before the stop, recorded as {run['result']}{of}")
        elif snaps:
            lines.append(
                f"- {domain}: snapshot {snaps} made (restic finished; the job did not record it)"
            )
            cut.append(domain)
        elif _started(owner.store, domain) >= since:
            lines.append(f"- {domain}: cut short while backing up, no snapshot made")
            cut.append(domain)
        else:
            waiting.append(domain)
    if waiting:
        lines.append(f"Not started: {', '.join(waiting)} (`{prefix}backup <app>` backs one up).")
    lines += await asyncio.to_thread(_lock_lines, locks, prefix)
    if not locks:
        lines.append("The repository holds no lock.")
    if cut:
        lines.append(
            f"If {', '.join(cut)} has a backup pre-hook (maintenance mode, a dump), its "
            "post-hook did not run after the stop: check the app."
        )
    return "\n".join(lines)


async def repository_report(owner: Repository, what: str, prefix: str) -> str:
    """After `!backup check`, `drill` or `prune` cut short: only the locks matter (no
    app's data was touched; prune's and check's are exclusive and block every backup)."""
    try:
        locks = await _locks(owner)
    except UserError as exc:
        return f"The repository could not be read: {exc}"
    lines = [
        f"Repository: `{prefix}backup {what}` stopped with the bot; no app's data was changed."
    ]
    lines += await asyncio.to_thread(_lock_lines, locks, prefix)
    if not locks:
        lines.append("The repository holds no lock.")
    return "\n".join(lines)


def _started(store: Store, domain: str) -> float:
    try:
        return float(store.get(STARTED + domain) or 0.0)
    except ValueError:
        return 0.0


async def lock_note(owner: Repository, prefix: str) -> str:
    """After a restic failure: the locks it left, each named with the way out ("" if
    none). Never removed here: another restic (or a live one) may hold them."""
    try:
        locks = await _locks(owner)
    except UserError:
        return ""
    return "\n".join(await asyncio.to_thread(_lock_lines, locks, prefix))


def _lock_lines(locks: list[dict[str, Any]], prefix: str) -> list[str]:
    lines = []
    for lock in locks:
        here = lock["hostname"] == socket.gethostname()
        gone = here and not _alive(int(lock["pid"]))
        holder = f"pid {lock['pid']} on {lock['hostname']}" + (
            ", which is gone: a stale lock" if gone else ""
        )
        lines.append(
            f"🔒 restic lock `{str(lock['id'])[:8]}` ({holder}, since {utc_time(lock['time'])}) is "
            f"left in place: the bot never removes one. Once nothing uses the repository "
            f"(`{prefix}backup check` reports locks), `restic unlock` removes it."
        )
    return lines


async def _locks(owner: Repository) -> list[dict[str, Any]]:
    """A repository that was never created has no locks (`list locks` fails there)."""
    try:
        return await owner.restic.locks()
    except ResticError as exc:
        if exc.kind == "no_repository":
            return []
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
