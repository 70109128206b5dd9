"""The recipes' backup and restore hooks: a command run inside one of the app's
services (a database dump before a backup, maintenance mode around a restore)."""

from __future__ import annotations

from bot.errors import UserError
from bot.fmt import code_block
from bot.ops.abra import AppEnv
from bot.ops.swarm import Swarm


async def run_hook(swarm: Swarm, env: AppEnv, service: str, command: str, what: str) -> int:
    """Run `command` in a task of `service`; UserError with the output's tail if it fails.
    Returns the output's size in bytes: a dump hook that printed nothing is suspect."""
    code, output = await swarm.exec(env.stack_name, service, command)
    if code != 0:
        tail = output.strip()[-500:]
        raise UserError(
            f"{what} in {service} failed (exit {code})" + (":\n" + code_block(tail) if tail else "")
        )
    return len(output.encode())
