"""coopbot run | console | check"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import signal
import subprocess
import sys
from collections.abc import Coroutine
from typing import Any

from bot import __version__
from bot.config import Config, load_config
from bot.errors import ConfigError

log = logging.getLogger("coopbot")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coopbot", description="Co-op Cloud chat-ops bot")
    parser.add_argument("--version", action="version", version=f"coopbot {__version__}")
    sub = parser.add_subparsers(dest="action", required=True)
    config_help = "config file (default ./config.yaml or $COOPBOT_CONFIG)"
    run = sub.add_parser("run", help="run the bot (the console room when no matrix: is configured)")
    run.add_argument("--config", help=config_help)
    console = sub.add_parser("console", help="a local room on stdin/stdout")
    console.add_argument("--config", help=config_help)
    console.add_argument(
        "--as",
        dest="as_user",
        metavar="@user:server",
        help="act as this member (default: an admin at the terminal)",
    )
    check = sub.add_parser("check", help="validate the config and test what it points at")
    check.add_argument("--config", help=config_help)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"coopbot: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if config.log_level != "DEBUG":
        # nio logs every room event at INFO: a busy room would drown our own lines.
        logging.getLogger("nio").setLevel(logging.WARNING)
    if args.action == "check":
        return asyncio.run(check(config))
    from bot.app import Bot

    if args.action == "console":
        from bot.core.console import CONSOLE_USER

        bot = Bot(config, console_as=args.as_user or CONSOLE_USER)
    else:
        if config.matrix is None:
            print("No matrix: section configured: opening the console room.", file=sys.stderr)
        bot = Bot(config)
    return _run_until_signal(bot.run())


def _run_until_signal(main_coro: Coroutine[Any, Any, None]) -> int:
    async def runner() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        await main_coro

    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        asyncio.run(runner())
    return 0


async def check(config: Config) -> int:
    """Print one line per check; non-zero exit if any failed."""
    results: list[tuple[bool, str]] = [(True, "config is valid")]
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        probe = config.data_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
        results.append((True, f"data_dir {config.data_dir} is writable"))
    except OSError as exc:
        results.append((False, f"data_dir {config.data_dir}: {exc.strerror}"))
    if config.matrix is None:
        results.append((True, "no matrix: section: the bot will open the console room"))
    else:
        results += await _check_matrix(config)
    if config.servers:
        for name, server in config.servers.items():
            results.append(await asyncio.to_thread(_check_docker, server.docker_host, name))
        abra = config.abra_dir
        results.append(
            (abra.is_dir(), f"abra_dir {abra} " + ("exists" if abra.is_dir() else "does not exist"))
        )
    else:
        results.append(await asyncio.to_thread(_check_docker, None, "default"))
    results.append(await asyncio.to_thread(_check_restic))
    if config.backups is not None:
        results += await _check_backups(config)
    for ok, text in results:
        print(("ok    " if ok else "FAIL  ") + text)
    failed = sum(not ok for ok, _ in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


async def _check_matrix(config: Config) -> list[tuple[bool, str]]:
    from nio import AsyncClient, LoginResponse, RoomResolveAliasError, WhoamiError

    matrix = config.matrix
    assert matrix is not None
    results: list[tuple[bool, str]] = []
    client = AsyncClient(matrix.homeserver, matrix.user_id)
    try:
        try:
            await client.discovery_info()  # any answer at all means reachable
            versions = await client.send("GET", "/_matrix/client/versions")
            reachable = versions.status == 200
        except Exception as exc:
            results.append((False, f"homeserver {matrix.homeserver} is unreachable: {exc}"))
            return results
        if not reachable:
            results.append((False, f"homeserver {matrix.homeserver} answered {versions.status}"))
            return results
        results.append((True, f"homeserver {matrix.homeserver} answers"))
        if matrix.access_token is not None:
            client.access_token = matrix.access_token.get_secret_value()
            who = await client.whoami()
            ok = not isinstance(who, WhoamiError) and who.user_id == matrix.user_id
            results.append(
                (ok, f"access token {'works' if ok else 'was refused'} for {matrix.user_id}")
            )
        else:
            assert matrix.password is not None
            # A throwaway device, logged out again at once.
            login = await client.login(matrix.password.get_secret_value(), "coopbot check")
            ok = isinstance(login, LoginResponse)
            results.append(
                (
                    ok,
                    f"password login as {matrix.user_id} "
                    + ("works" if ok else f"failed: {login.message}"),
                )
            )
            if ok:
                await client.logout()
                client.access_token = login.access_token  # logout cleared it; not needed further
        for ref in matrix.rooms:
            if ref.startswith("#"):
                resolved = await client.room_resolve_alias(ref)
                ok = not isinstance(resolved, RoomResolveAliasError)
                results.append(
                    (ok, f"room alias {ref} " + ("resolves" if ok else "does not resolve"))
                )
    finally:
        await client.close()
    return results


def _check_docker(docker_host: str | None, name: str) -> tuple[bool, str]:
    """One server's docker (DOCKER_HOST or the default socket when none is configured)."""
    import docker
    from docker.errors import DockerException

    try:
        if docker_host is None:
            client = docker.from_env(version="auto", timeout=10)
        else:
            client = docker.DockerClient(base_url=docker_host, version="auto", timeout=10)
        info = client.info()
        swarm = info.get("Swarm", {}).get("LocalNodeState", "inactive")
        client.close()
        ok = swarm == "active"
        return ok, (
            f"server {name}: docker answers (engine {info.get('ServerVersion')}, "
            f"swarm {swarm}{'' if ok else ': run `docker swarm init`'})"
        )
    except DockerException as exc:
        return False, f"server {name}: docker is unreachable: {exc}"


async def _check_backups(config: Config) -> list[tuple[bool, str]]:
    """The repository opens with the password (or does not exist yet), and the
    volumes are where the config says."""
    from bot.app import build_restic
    from bot.errors import UserError

    assert config.backups is not None
    root = config.backups.volumes_root
    results = [
        (
            root.is_dir(),
            f"backups.volumes_root {root} " + ("exists" if root.is_dir() else "does not exist"),
        )
    ]
    try:
        restic = build_restic(config.backups, config.data_dir)
    except UserError as exc:  # an unreadable env_file
        return [*results, (False, f"backups: {exc}")]
    try:
        found = await restic.snapshots()
        results.append((True, f"restic repository {restic.display} opens ({len(found)} snapshots)"))
    except UserError as exc:
        kind = getattr(exc, "kind", None)
        if kind == "no_repository":
            results.append(
                (True, f"restic repository {restic.display}: none yet, made on the first backup")
            )
        else:
            results.append((False, f"restic repository {restic.display}: {exc}"))
    return results


def _check_restic() -> tuple[bool, str]:
    restic = shutil.which("restic")
    if restic is None:
        return False, "restic is not installed (not on PATH)"
    try:
        out = subprocess.run([restic, "version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"restic does not run: {exc}"
    return out.returncode == 0, out.stdout.strip() or out.stderr.strip()
