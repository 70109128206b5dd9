"""A small restic REST server (protocol v1) on 127.0.0.1 over a directory, with HTTP
basic auth: enough for restic to init, list and read a repository at a
`rest:http://user:password@127.0.0.1:PORT/` URL, i.e. a repository string that
carries credentials, as real `rest:` and `s3:` ones do. No rest-server package here.

Protocol (restic's doc/100_references.rst, REST backend): HEAD/GET/POST/DELETE on
`/config` and `/{type}/{name}`; GET `/{type}/` lists names as a JSON array; reads may
carry a `Range: bytes=a-b` header; `data` blobs live in `data/<first 2 hex>/`."""

# ruff: noqa: ASYNC240 - a test server reading small files of a tmp directory

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TYPES = ("data", "keys", "locks", "snapshots", "index")


def _path(root: Path, kind: str, name: str) -> Path:
    if kind not in TYPES or "/" in name or name.startswith("."):
        raise web.HTTPNotFound()
    return root / kind / name[:2] / name if kind == "data" else root / kind / name


def app(root: Path, user: str, password: str) -> web.Application:
    token = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.headers.get("Authorization") != token:
            raise web.HTTPUnauthorized()
        return await handler(request)

    async def read(file: Path, request: web.Request) -> web.StreamResponse:
        if not file.is_file():
            raise web.HTTPNotFound()
        data = file.read_bytes()
        if request.method == "HEAD":
            return web.Response(headers={"Content-Length": str(len(data))})
        ranged = request.http_range
        if request.headers.get("Range"):
            body = data[ranged.start : ranged.stop]
            return web.Response(body=body, status=206)
        return web.Response(body=data)

    async def write(file: Path, request: web.Request) -> web.Response:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(await request.read())
        return web.Response()

    async def config(request: web.Request) -> web.StreamResponse:
        file = root / "config"
        if request.method == "POST":
            root.mkdir(parents=True, exist_ok=True)
            return await write(file, request)
        if request.method == "DELETE":
            file.unlink(missing_ok=True)
            return web.Response()
        return await read(file, request)

    async def listing(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind not in TYPES:
            raise web.HTTPNotFound()
        base = root / kind
        names = sorted(p.name for p in base.rglob("*") if p.is_file()) if base.is_dir() else []
        return web.json_response(names)

    async def item(request: web.Request) -> web.StreamResponse:
        file = _path(root, request.match_info["kind"], request.match_info["name"])
        if request.method == "POST":
            return await write(file, request)
        if request.method == "DELETE":
            file.unlink(missing_ok=True)
            return web.Response()
        return await read(file, request)

    application = web.Application(middlewares=[auth], client_max_size=256 * 1024 * 1024)
    application.router.add_route("*", "/config", config)
    application.router.add_route("*", "/", _root_create(root))
    application.router.add_route("*", "/{kind}/", listing)
    application.router.add_route("*", "/{kind}/{name}", item)
    return application


def _root_create(root: Path) -> Handler:
    """`POST /?create=true`: restic's init asks the server to make the layout."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method != "POST" or request.query.get("create") != "true":
            raise web.HTTPNotFound()
        for kind in TYPES:
            (root / kind).mkdir(parents=True, exist_ok=True)
        return web.Response()

    return handler


@asynccontextmanager
async def rest_server(root: Path, user: str, password: str) -> AsyncIterator[int]:
    """Serve `root` on a free 127.0.0.1 port; yields the port."""
    runner = web.AppRunner(app(root, user, password))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        server = site._server
        assert server is not None
        yield server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    finally:
        await runner.cleanup()
