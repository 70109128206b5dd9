"""429 handling of the Matrix adapter against a local HTTP server that rate-limits.

nio's own sleep is recorded instead of slept, so the test checks which wait was
chosen (Retry-After header, retry_after_ms body, the cap) without any timing.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from bot.config import parse_config
from bot.core.metrics import Metrics
from bot.core.store import Store
from bot.ops.matrix import MatrixChat, MatrixError


class RateLimiter:
    def __init__(self) -> None:
        self.hits = 0
        self.headers: dict[str, str] = {}
        self.body: dict[str, Any] = {"errcode": "M_LIMIT_EXCEEDED", "error": "Too many requests"}
        self.free_after: int | None = None  # succeed from this hit on

    async def send(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.free_after is not None and self.hits > self.free_after:
            return web.json_response({"event_id": f"$ok{self.hits}"})
        return web.json_response(self.body, status=429, headers=self.headers)


@pytest.fixture
async def server() -> AsyncIterator[tuple[RateLimiter, str]]:
    limiter = RateLimiter()
    app = web.Application()
    app.router.add_put("/_matrix/client/v3/rooms/{room}/send/{type}/{txn}", limiter.send)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield limiter, f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        recorded.append(seconds)

    import nio.client.async_client as nio_client

    monkeypatch.setattr(nio_client.asyncio, "sleep", fake_sleep)
    return recorded


def make_chat(url: str, tmp_path: pathlib.Path, retries: int = 2) -> MatrixChat:
    config = parse_config(
        {
            "matrix": {
                "homeserver": url,
                "user_id": "@bot:localhost",
                "access_token": "token",
                "rooms": ["!room"],
                "encryption": False,
                "max_rate_limit_retries": retries,
                "max_rate_limit_wait": "30s",
            },
            "data_dir": str(tmp_path),
        }
    )
    assert config.matrix is not None
    chat = MatrixChat(config.matrix, Store(":memory:"), tmp_path, Metrics())
    chat.client.restore_login("@bot:localhost", "DEVICE", "token")
    return chat


async def test_retry_after_header_is_used_and_retries_are_bounded(
    server: tuple[RateLimiter, str], tmp_path: pathlib.Path, sleeps: list[float]
) -> None:
    limiter, url = server
    limiter.headers = {"Retry-After": "2"}
    chat = make_chat(url, tmp_path, retries=2)
    with pytest.raises(MatrixError, match="Too many requests"):
        await chat.send("!room", "hello")
    await chat.close()
    assert limiter.hits == 3  # the first try and two retries, then it gives up
    assert sleeps == [2.0, 2.0]


async def test_retry_after_ms_in_the_body_is_used(
    server: tuple[RateLimiter, str], tmp_path: pathlib.Path, sleeps: list[float]
) -> None:
    limiter, url = server
    limiter.body["retry_after_ms"] = 1500
    limiter.free_after = 1
    chat = make_chat(url, tmp_path)
    assert await chat.send("!room", "hello") == "$ok2"
    await chat.close()
    assert sleeps == [1.5]


async def test_a_huge_wait_is_capped(
    server: tuple[RateLimiter, str], tmp_path: pathlib.Path, sleeps: list[float]
) -> None:
    limiter, url = server
    limiter.headers = {"Retry-After": "3600"}
    limiter.free_after = 1
    chat = make_chat(url, tmp_path)
    await chat.send("!room", "hello")
    await chat.close()
    assert sleeps == [30.0]
