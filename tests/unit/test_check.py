"""`coopbot check` ends, and says which probe failed, when what it probes does not
answer (bot/check.py, bot/ops/matrix_check.py)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from bot.check import check
from bot.config import parse_config


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


async def test_check_ends_when_the_homeserver_refuses_connections(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "password").write_text("secret")
    config = parse_config(
        {
            "matrix": {
                "homeserver": f"http://127.0.0.1:{_closed_port()}",
                "user_id": "@coopbot:test",
                "password_file": "password",
                "rooms": ["#ops:test"],
            },
            "servers": {"gone": {"docker_host": f"unix://{tmp_path}/no.sock"}},
            "data_dir": str(tmp_path / "data"),
        },
        tmp_path,
    )
    # The bound is only there so a regression fails instead of hanging the suite.
    assert await asyncio.wait_for(check(config), 120) == 1
    out = capsys.readouterr().out
    assert "FAIL  homeserver http://127.0.0.1:" in out
    assert "FAIL  server gone: docker is unreachable" in out
