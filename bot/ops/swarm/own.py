"""Which stack the bot's own container belongs to (bot/features/self_app.py asks once
at start). Its own module: client.py is at the size limit, and this is one question."""

from __future__ import annotations

from typing import Any

import docker

from bot.ops.swarm.client import Swarm

STACK_LABEL = "com.docker.stack.namespace"


async def stack_of_container(swarm: Swarm, ref: str) -> str | None:
    """The stack label of the container `ref` names: its full id, or its hostname (swarm
    names a task's container after its short id, which docker accepts), or None when
    `ref` is no container of that daemon (a bot run outside docker)."""

    def look(client: Any) -> str | None:
        try:
            container = client.containers.get(ref)
        except docker.errors.NotFound:
            return None
        if ref not in (container.id, container.attrs.get("Config", {}).get("Hostname")):
            return None  # a container whose id merely starts like this host's name
        label = container.labels.get(STACK_LABEL)
        return str(label) if label else None

    # The adapter's one way into the SDK: off the loop, docker errors as SwarmError.
    return await swarm._sdk(look)
