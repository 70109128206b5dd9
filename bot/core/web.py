"""aiohttp: /healthz (200 only while the chat loop is alive and the chat reports no
problem, such as a device Element will not trust) and /metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.core.metrics import Metrics

Problems = Callable[[], Sequence[str]]


def _none() -> Sequence[str]:
    return ()


def make_app(
    metrics: Metrics, alive: Callable[[], bool], problems: Problems = _none
) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        if not alive():
            return web.Response(status=503, text="not syncing\n")
        # Syncing but unusable for members (e.g. an unsigned device in encrypted rooms):
        # unhealthy too, with the reason, so monitoring shows what to fix.
        found = list(problems())
        if found:
            return web.Response(status=503, text="".join(f"problem: {p}\n" for p in found))
        return web.Response(text="ok\n")

    async def metrics_view(request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    return app


async def serve(
    metrics: Metrics, alive: Callable[[], bool], listen: str, problems: Problems = _none
) -> web.AppRunner:
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(make_app(metrics, alive, problems), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port)).start()
    return runner
