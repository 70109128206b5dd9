"""nio's failures as sentences: exceptions produced for real by matrix-nio's own
client against sockets on 127.0.0.1 (nothing listening, plain HTTP behind an https://
URL, a server that never answers); DNS from the exception aiohttp raises for it (no
test resolves names); Matrix error answers from their errcodes."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.client_reqrep import ConnectionKey
from nio import AsyncClient, AsyncClientConfig

from bot.ops.matrix_errors import unreachable_message, why_refused, why_unreachable


async def nio_failure(homeserver: str) -> BaseException:
    client = AsyncClient(
        homeserver, "@coopbot:test", config=AsyncClientConfig(max_timeouts=1, request_timeout=1)
    )
    try:
        with pytest.raises(Exception) as caught:  # noqa: PT011 - which one is the point
            await client.send("GET", "/_matrix/client/versions")
        return caught.value
    finally:
        await client.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def plain_http() -> AsyncIterator[int]:
    runner = web.AppRunner(web.Application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@pytest.fixture
async def silent() -> AsyncIterator[int]:
    """Accepts connections and never says a word."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_nothing_listening() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    error = await nio_failure(url)
    assert why_unreachable(error, url) == (
        f"nothing answers at {url} (connection refused): is the homeserver running, and "
        "is matrix.homeserver's port right?"
    )


async def test_https_to_a_plain_http_port(plain_http: int) -> None:
    url = f"https://127.0.0.1:{plain_http}"
    error = await nio_failure(url)
    assert isinstance(error, aiohttp.ClientSSLError)
    assert why_unreachable(error, url).startswith(f"the TLS connection to {url} failed")


async def test_a_server_that_never_answers(silent: int) -> None:
    url = f"http://127.0.0.1:{silent}"
    error = await nio_failure(url)
    assert why_unreachable(error, url) == (
        f"{url} did not answer in time: is it overloaded, or is a firewall dropping the "
        "bot's connections?"
    )


def test_a_name_that_does_not_resolve() -> None:
    key = ConnectionKey("matrix.coop.invalid", 443, True, True, None, None, None, None)
    error = aiohttp.ClientConnectorDNSError(key, socket.gaierror(-2, "Name or service not known"))
    assert why_unreachable(error, "https://matrix.coop.invalid").startswith(
        "the homeserver's name in https://matrix.coop.invalid does not resolve (DNS)"
    )


async def test_the_library_text_goes_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    error = await nio_failure(url)
    with caplog.at_level(logging.WARNING, logger="bot.ops.matrix_errors"):
        message = unreachable_message(error, url)
    ident = message.rsplit("id ", 1)[1].rstrip(")")
    assert "Connect call failed" not in message
    (record,) = caplog.records
    assert ident in record.getMessage()
    assert "Connect call failed" in record.getMessage()


@pytest.mark.parametrize(
    ("code", "retry", "start"),
    [
        ("M_FORBIDDEN", None, "the homeserver refused (M_FORBIDDEN): a wrong password"),
        ("M_UNKNOWN_TOKEN", None, "the access token is not valid any more"),
        (
            "M_LIMIT_EXCEEDED",
            2500,
            "the homeserver is rate limiting the bot (M_LIMIT_EXCEEDED) for 2.5s",
        ),
        ("M_UNKNOWN", None, "the homeserver answered M_UNKNOWN: odd"),
    ],
)
def test_error_answers(code: str, retry: int | None, start: str) -> None:
    assert why_refused(code, "odd", retry).startswith(start)
