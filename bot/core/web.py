"""aiohttp: /healthz (200 only while the chat loop is alive) and /metrics."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.core.metrics import Metrics


def make_app(metrics: Metrics, alive: Callable[[], bool]) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        if alive():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="not syncing\n")

    async def metrics_view(request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    return app


async def serve(metrics: Metrics, alive: Callable[[], bool], listen: str) -> web.AppRunner:
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(make_app(metrics, alive), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port)).start()
    return runner
