"""The recipes' backup and restore hooks: a command run inside one of the app's
services (a database dump before a backup, maintenance mode around a restore)."""

from __future__ import annotations

from bot.errors import UserError
from bot.fmt import code_block
from bot.ops.abra import AppEnv
from bot.ops.swarm import Swarm, SwarmError

UNREACHABLE = "server unreachable"  # how the swarm adapter starts a dead endpoint's error


async def run_hook(
    swarm: Swarm,
    env: AppEnv,
    service: str,
    command: str,
    what: str,
    *,
    node: str | None = None,
    manager: Swarm | None = None,
    prefix: str = "!",
    again: str = "",
) -> int:
    """Run `command` in a task of `service`; UserError with the output's tail if it fails.
    Returns the output's size in bytes: a dump hook that printed nothing is suspect.

    `node`: the hostname whose own endpoint `swarm` is (the data is on another node).
    When that endpoint does not answer, the error names the node, what the manager
    says of it and the next step (`again`, the command to run once it is back; the
    app's backup by default), not the socket that did not answer."""
    try:
        code, output = await swarm.exec(env.stack_name, service, command)
    except SwarmError as e:
        if node is None or not str(e).startswith(UNREACHABLE):
            raise
        again = again or f"{prefix}backup {env.domain}"
        why = await _node_unreachable(env, service, what, node, manager, prefix, again)
        raise UserError(why) from e
    if code != 0:
        tail = output.strip()[-500:]
        raise UserError(
            f"{what} in {service} failed (exit {code})" + (":\n" + code_block(tail) if tail else "")
        )
    return len(output.encode())


async def _node_unreachable(
    env: AppEnv,
    service: str,
    what: str,
    node: str,
    manager: Swarm | None,
    prefix: str,
    again: str,
) -> str:
    state = "not known (the manager was not asked)"
    if manager is not None:
        try:
            found = [n for n in await manager.nodes() if n.hostname == node]
            state = found[0].state if found else "not in the swarm any more"
        except UserError as e:
            state = f"not known: the manager did not answer either ({e})"
    head = f"{what} in {service} could not run on node {node}: its docker endpoint does not answer"
    if state == "ready":
        return (
            f"{head}, though the manager sees {node} ready: check "
            f"servers.{env.server}.nodes.{node} (`coopbot check` tests it), then `{again}`."
        )
    return (
        f"{head}; the manager says {node} is {state}. Once it is back "
        f"(`{prefix}nodes` shows its state), `{again}` runs it again."
    )
