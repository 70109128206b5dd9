"""/healthz: 503 while the chat is not syncing, and also while it reports a problem
(an unsigned device, which Element will not trust), naming it."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp.test_utils import TestClient, TestServer

from bot.core.metrics import Metrics
from bot.core.web import make_app


async def get_health(alive: bool, problems: Sequence[str] = ()) -> tuple[int, str]:
    app = make_app(Metrics(), lambda: alive, lambda: problems)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/healthz")
        return response.status, await response.text()


async def test_healthy_when_syncing_without_problems() -> None:
    assert await get_health(True) == (200, "ok\n")


async def test_not_syncing_comes_first() -> None:
    assert await get_health(False, ["device X is not cross-signed"]) == (503, "not syncing\n")


async def test_a_problem_makes_it_unhealthy_and_is_named() -> None:
    status, text = await get_health(True, ["device X is not cross-signed: no password"])
    assert status == 503
    assert text == "problem: device X is not cross-signed: no password\n"


async def test_the_default_has_no_problems() -> None:
    app = make_app(Metrics(), lambda: True)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/healthz")).status == 200
