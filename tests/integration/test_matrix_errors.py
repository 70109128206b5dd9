"""`coopbot check`'s Matrix probe speaks in sentences: a wrong password on the real
Synapse is M_FORBIDDEN with what to check, and a homeserver with nothing listening is
"nothing answers at …" with an incident id (nio's text in the log)."""

from __future__ import annotations

import socket
from pathlib import Path

from bot.config import parse_config
from bot.ops.matrix_check import probe
from tests.harness.synapse import Synapse


async def test_a_wrong_password_is_forbidden(synapse: Synapse, tmp_path: Path) -> None:
    user = synapse.register("wrongpw", "the right one")
    config = parse_config(
        {
            "matrix": {
                "homeserver": synapse.url,
                "user_id": user,
                "password": "a wrong one",
                "rooms": ["!r:localhost"],
            }
        },
        tmp_path,
    )
    assert config.matrix is not None
    results = await probe(config.matrix)
    assert results[0] == (True, f"homeserver {synapse.url} answers")
    ok, text = results[1]
    assert not ok
    assert text == (
        f"password login as {user} failed: the homeserver refused (M_FORBIDDEN): a wrong "
        "password, a deactivated user, or an action the bot may not do; check "
        "matrix.user_id and its password"
    )


async def test_nothing_listening_is_said_so(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    config = parse_config(
        {
            "matrix": {
                "homeserver": url,
                "user_id": "@coopbot:test",
                "password": "x",
                "rooms": ["!r:test"],
            }
        },
        tmp_path,
    )
    assert config.matrix is not None
    ((ok, text),) = await probe(config.matrix)
    assert not ok
    assert text.startswith(
        f"homeserver {url} is unreachable: nothing answers at {url} (connection refused): "
        "is the homeserver running, and is matrix.homeserver's port right? (details in the "
        "log, id "
    )
