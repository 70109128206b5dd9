"""Docker that does not answer is told in a sentence with a next step, never as the
HTTP library's text (bot/ops/swarm/client.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bot.ops.swarm import Swarm, SwarmError


async def test_a_missing_socket_says_what_to_check(tmp_path: Path) -> None:
    swarm = Swarm(f"unix://{tmp_path}/nope.sock")
    with pytest.raises(SwarmError) as caught:
        await swarm.info()
    await swarm.close()
    text = str(caught.value)
    assert text == (
        f"server unreachable: the docker socket {tmp_path}/nope.sock is not there: is "
        "dockerd running, and is the socket mounted into the bot? `coopbot check` tests it"
    )
    assert "FileNotFoundError" not in text
    assert "Connection aborted" not in text


async def test_a_socket_nobody_listens_on(tmp_path: Path) -> None:
    path = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))  # a socket file with no listener: connection refused
    swarm = Swarm(f"unix://{path}")
    with pytest.raises(SwarmError, match="is dockerd running there"):
        await swarm.services("x")
    await swarm.close()
