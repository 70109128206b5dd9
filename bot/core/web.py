"""aiohttp: /healthz (200 only while the chat loop is alive and the chat reports no
problem, such as a device Element will not trust), /metrics (optionally behind a
bearer token) and, when configured, the webhooks /hooks/forgejo and
/hooks/alertmanager (checks and parsing in hooks.py)."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.core import hooks as parse
from bot.core.metrics import Metrics
from bot.core.store import Store

log = logging.getLogger(__name__)

Problems = Callable[[], Sequence[str]]


def _none() -> Sequence[str]:
    return ()


@dataclass(frozen=True)
class Hooks:
    """What the webhooks need; a secret left None turns its hook off (404)."""

    store: Store
    known_recipe: Callable[[str], bool]
    on_tags: Callable[[str, list[str]], Awaitable[None]]  # recipe, new tags
    on_alert: Callable[[str, str, str | None], Awaitable[None]]  # server, name, summary
    forgejo_secret: bytes | None = None
    alertmanager_token: str | None = None
    max_body: int = 1024 * 1024


def _bearer(request: web.Request, token: str) -> bool:
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


async def _body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    return body


def _json(body: bytes) -> dict[str, object]:
    try:
        data = json.loads(body)
    except ValueError:
        raise web.HTTPBadRequest(text="not JSON\n") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="not a JSON object\n")
    return data


def add_hooks(app: web.Application, hooks: Hooks) -> None:
    # The work a hook starts (an upgrade check) outlives the request: tracked here,
    # cancelled with the app.
    running: set[asyncio.Task[None]] = set()

    def start(work: Awaitable[None], name: str) -> None:
        async def guarded() -> None:
            try:
                await work
            except Exception:
                log.exception("webhook work %s failed", name)

        task = asyncio.create_task(guarded(), name=name)
        running.add(task)
        task.add_done_callback(running.discard)

    async def forgejo(request: web.Request) -> web.Response:
        if hooks.forgejo_secret is None:
            raise web.HTTPNotFound()
        body = await _body(request, hooks.max_body)
        if not parse.signature_ok(
            hooks.forgejo_secret, body, parse.header(request.headers, "Signature")
        ):
            raise web.HTTPUnauthorized(text="bad or missing signature\n")
        delivery = parse.header(request.headers, "Delivery")
        if not delivery:
            raise web.HTTPBadRequest(text="no delivery id\n")
        if hooks.store.seen_delivery("forgejo", delivery):
            raise web.HTTPConflict(text="delivery already handled\n")
        payload = _json(body)
        tags = parse.new_tags(parse.header(request.headers, "Event"), payload)
        recipe = next((n for n in parse.repo_names(payload) if hooks.known_recipe(n)), None)
        if recipe is None:
            raise web.HTTPNotFound(text="not a known recipe\n")
        hooks.store.add_delivery("forgejo", delivery)
        if not tags:
            return web.Response(status=202, text="no new tag: nothing to do\n")
        log.info("webhook: new tag(s) %s of recipe %s", ", ".join(tags), recipe)
        start(hooks.on_tags(recipe, tags), f"hook-tags-{recipe}")
        return web.Response(status=202, text=f"checking {recipe}\n")

    async def alertmanager(request: web.Request) -> web.Response:
        if hooks.alertmanager_token is None:
            raise web.HTTPNotFound()
        if not _bearer(request, hooks.alertmanager_token):
            raise web.HTTPUnauthorized(text="bad or missing token\n")
        payload = _json(await _body(request, hooks.max_body))
        found = parse.alerts(payload)
        for server, name, summary in found:
            await hooks.on_alert(server, name, summary)
        return web.Response(status=202, text=f"{len(found)} alert(s)\n")

    async def cleanup(app: web.Application) -> None:
        for task in list(running):
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    app.router.add_post("/hooks/forgejo", forgejo)
    app.router.add_post("/hooks/alertmanager", alertmanager)
    app.on_cleanup.append(cleanup)


def make_app(
    metrics: Metrics,
    alive: Callable[[], bool],
    problems: Problems = _none,
    *,
    metrics_token: str | None = None,
    hooks: Hooks | None = None,
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
        if metrics_token is not None and not _bearer(request, metrics_token):
            raise web.HTTPUnauthorized(text="bearer token required\n")
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    if hooks is not None:
        add_hooks(app, hooks)
    return app


async def serve(
    metrics: Metrics,
    alive: Callable[[], bool],
    listen: str,
    problems: Problems = _none,
    *,
    metrics_token: str | None = None,
    hooks: Hooks | None = None,
) -> web.AppRunner:
    host, _, port = listen.rpartition(":")
    app = make_app(metrics, alive, problems, metrics_token=metrics_token, hooks=hooks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port)).start()
    return runner
