"""Run a command in a running container of a service, with files put there first.

What `abra app cmd` does: it copies the recipe's `abra.sh` into the service's container
and runs a shell there that sources it and calls one of its functions. The files go in
as a tar archive through the daemon's archive endpoint (no shell, no `docker cp`), and
the command is an argument list. Kept apart from client.py (at its size limit); it
runs through the client's SDK shell, in a worker thread.
"""

from __future__ import annotations

import asyncio
import io
import tarfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bot.labels import service_filter
from bot.ops.swarm.client import Swarm
from bot.ops.swarm.hookexec import exec_bounded
from bot.ops.swarm.model import SwarmError
from bot.ops.swarm.parse import check_stack

OUTPUT_LIMIT = 256 * 1024  # bytes of output kept (the tail); the room sees far less


def tar_of(files: Mapping[str, bytes], mode: int = 0o644) -> bytes:
    """A tar archive holding `files` (name -> content), each readable by all."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def exec_with_files(
    swarm: Swarm,
    stack: str,
    service: str,
    files: Mapping[str, bytes],
    argv: Sequence[str],
    *,
    folder: str = "/tmp",
    timeout: float = 600,  # noqa: ASYNC109 - the bot's API: a budget
) -> tuple[int, str]:
    """Put `files` into `folder` of a running container of `<stack>_<service>` on this
    node, run `argv` there; (exit code, output tail). SwarmError when no container of
    the service runs here or the daemon refuses."""
    name = f"{check_stack(stack)}_{service}"
    archive = tar_of(files)

    def run(c: Any) -> tuple[int, str]:
        running = c.containers.list(filters={"label": service_filter(name), "status": "running"})
        if not running:
            raise SwarmError(f"no running container of {name} on this node")
        container = running[0]
        if not container.put_archive(folder, archive):
            raise SwarmError(f"could not copy {', '.join(files)} into {name}:{folder}")
        # Streamed, its tail kept: exec_run would hold all a function prints in memory.
        return exec_bounded(container, list(argv), OUTPUT_LIMIT)

    try:
        async with asyncio.timeout(timeout):
            return await swarm._sdk(run)
    except TimeoutError:
        raise SwarmError(f"the command in {name} did not finish within {timeout:g}s") from None
