"""Dead-man switches: healthchecks.io / Uptime Kuma style push URLs.

`<url>/start` when a run starts, `<url>` when it succeeds, `<url>/fail` when it
fails, the run's summary as the body. A monitor that hears nothing for too long
alerts: that is how a co-op learns that the bot, or its schedule, is dead.

A ping never fails what it reports on: timeouts and errors are logged (without
the URL, whose path is the check's secret) and counted by the caller's `failed`
callback (the /metrics counter)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

import aiohttp

log = logging.getLogger(__name__)

MAX_BODY = 10_000  # healthchecks.io keeps the first 10 kB of a ping's body
SUFFIX = {"start": "/start", "success": "", "fail": "/fail"}


class Pings:
    def __init__(
        self,
        urls: Mapping[str, str],
        *,
        timeout: float = 10.0,
        failed: Callable[[str, str], None] | None = None,
        sent: Callable[[str, str], None] | None = None,
    ) -> None:
        self._urls = {name: url.rstrip("/") for name, url in urls.items() if url}
        self._timeout = timeout
        self._failed = failed
        self._sent = sent
        self._session: aiohttp.ClientSession | None = None

    def knows(self, name: str) -> bool:
        return name in self._urls

    async def ping(self, name: str, kind: str, body: str = "") -> bool:
        """POST one ping ("start", "success", "fail"); False if it did not get through."""
        url = self._urls.get(name)
        if url is None:
            return False
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout)
            )
        data = body.encode()[:MAX_BODY]
        try:
            async with self._session.post(url + SUFFIX[kind], data=data) as response:
                await response.read()
                if response.status >= 400:
                    raise aiohttp.ClientResponseError(
                        response.request_info, (), status=response.status
                    )
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.warning("ping %s/%s failed: %s", name, kind, type(e).__name__)
            if self._failed is not None:
                self._failed(name, kind)
            return False
        if self._sent is not None:
            self._sent(name, kind)
        return True

    async def close(self) -> None:
        if self._session is not None:
            await asyncio.shield(self._session.close())
            self._session = None
