"""`coopbot check`: validate the config and probe what it points at, through the
same adapters the bot runs with (built by bot/app.py)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable

from bot.app import build_restic, build_swarm
from bot.config import POLICY_NAMES, Config
from bot.core.chat import Membership
from bot.core.quorum import shortfalls, voter_roles
from bot.errors import UserError
from bot.ops.process import run_process
from bot.ops.swarm import SwarmError

Result = tuple[bool | None, str]  # None: a warning, shown but not failed
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
# The whole Matrix probe (login, aliases, keys) ends within this, answered or not.
MATRIX_BUDGET = 60.0
STORE_FILE = "coopbot.sqlite"  # the bot's store in data_dir, as bot/app.py opens it


async def check(config: Config) -> int:
    """Print one line per check; non-zero exit if any failed."""
    results: list[Result] = [(True, "config is valid")]
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        probe = config.data_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
        results.append((True, f"data_dir {config.data_dir} is writable"))
    except OSError as exc:
        results.append((False, f"data_dir {config.data_dir}: {exc.strerror}"))
    if config.matrix is None:
        results.append((True, "no matrix: section: the bot will open the console room"))
    else:
        from bot.ops.matrix_check import probe as probe_matrix  # nio loads slowly

        try:
            async with asyncio.timeout(MATRIX_BUDGET):
                results += await probe_matrix(config.matrix, judge=_quorum(config))
        except TimeoutError:
            results.append(
                (
                    False,
                    f"homeserver {config.matrix.homeserver} did not answer within "
                    f"{MATRIX_BUDGET:.0f} s (is the URL right, and reachable from here?)",
                )
            )
        # What the running bot saw and the probe cannot: members it could not decrypt.
        from bot.ops.matrix_undecrypted import recorded_problems

        results += [(False, p) for p in recorded_problems(config.data_dir / STORE_FILE)]
    if config.servers:
        for name, server in config.servers.items():
            results.append(await _check_docker(server.docker_host, name))
        abra = config.abra_dir
        results.append(
            (abra.is_dir(), f"abra_dir {abra} " + ("exists" if abra.is_dir() else "does not exist"))
        )
    else:
        results.append(
            await _check_docker(os.environ.get("DOCKER_HOST", DEFAULT_DOCKER_HOST), "default")
        )
    results.append(await _check_restic(config.backups.restic if config.backups else "restic"))
    if config.backups is not None:
        results += await _check_backups(config)
    for ok, text in results:
        print(("WARN  " if ok is None else "ok    " if ok else "FAIL  ") + text)
    failed = sum(ok is False for ok, _ in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _quorum(config: Config) -> Callable[[str, dict[str, Membership]], list[str]]:
    """Warnings for a room whose members cannot pass the configured votes."""
    assert config.matrix is not None
    bot_id = config.matrix.user_id

    def judge(room: str, members: dict[str, Membership]) -> list[str]:
        roles = voter_roles(config.access, members, bot_id)
        return shortfalls(config.approvals, config.access, roles, POLICY_NAMES, room)

    return judge


async def _check_docker(docker_host: str, name: str) -> Result:
    swarm = build_swarm(docker_host)
    try:
        info = await swarm.info()
    except SwarmError as exc:
        return False, f"server {name}: docker is unreachable: {exc}"
    finally:
        await swarm.close()
    state = info.get("Swarm", {}).get("LocalNodeState", "inactive")
    ok = state == "active"
    return ok, (
        f"server {name}: docker answers (engine {info.get('ServerVersion')}, "
        f"swarm {state}{'' if ok else ': run `docker swarm init`'})"
    )


async def _check_restic(binary: str) -> Result:
    path = shutil.which(binary)
    if path is None:
        return False, f"{binary} is not installed (not on PATH)"
    try:
        out = await run_process([path, "version"], env=dict(os.environ), timeout=20)
    except (OSError, TimeoutError) as exc:
        return False, f"restic does not run: {exc}"
    return out.returncode == 0, (out.stdout or out.stderr).strip()


async def _check_backups(config: Config) -> list[Result]:
    """The repository opens with the password (or does not exist yet), and the
    volumes are where the config says."""
    assert config.backups is not None
    root = config.backups.volumes_root
    results: list[Result] = [
        (
            root.is_dir(),
            f"backups.volumes_root {root} " + ("exists" if root.is_dir() else "does not exist"),
        )
    ]
    try:
        restic = build_restic(config.backups, config.data_dir)
    except UserError as exc:  # an unreadable env_file
        return [*results, (False, f"backups: {exc}")]
    try:
        found = await restic.snapshots()
        results.append((True, f"restic repository {restic.display} opens ({len(found)} snapshots)"))
    except UserError as exc:
        kind = getattr(exc, "kind", None)
        if kind == "no_repository":
            results.append(
                (True, f"restic repository {restic.display}: none yet, made on the first backup")
            )
        else:
            results.append((False, f"restic repository {restic.display}: {exc}"))
    return results
