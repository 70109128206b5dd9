"""coopbot run | console | check"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from bot import __version__
from bot.config import load_config
from bot.errors import AlreadyRunning, ConfigError

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
        from bot.check import check

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

    try:
        with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
            asyncio.run(runner())
    except AlreadyRunning as exc:
        print(f"coopbot: {exc}", file=sys.stderr)
        return 1
    return 0
