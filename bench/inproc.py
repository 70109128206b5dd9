"""Shared parts of the swarm benchmarks: a private dockerd, and the bot in-process
behind an in-memory chat that timestamps what the bot posts.

The bot is `bot.app.Bot` with the real dispatcher, gate, jobs, Apps and Swarm; only
the chat network is replaced (no Matrix: these figures are about docker and git).
Messages go straight to `Bot.dispatcher.submit`, as the chat adapter hands them over.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bot.app import Bot
from bot.config import parse_config
from bot.core.chat import EventHandler, Membership, Message, Reaction
from tests.harness.dockerd import Dockerd

ROOM = "!bench:local"
SENDER = "@operator:local"
PORT_WAIT = 1800.0  # how long to wait for another session's swarm dockerd to go away


@dataclass
class Posted:
    """A message the bot posted and every text it has shown since (perf_counter, text)."""

    event_id: str
    reply_to: str | None
    texts: list[tuple[float, str]] = field(default_factory=list)


class BenchChat:
    """bot/core/chat.py's Chat protocol in memory; every member is in the room as an admin."""

    user_id = "@coopbot:local"

    def __init__(self) -> None:
        self.posted: dict[str, Posted] = {}
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()

    async def _record(self, event_id: str, reply_to: str | None, text: str) -> None:
        at = time.perf_counter()
        posted = self.posted.setdefault(event_id, Posted(event_id, reply_to))
        posted.texts.append((at, text))
        async with self._changed:
            self._changed.notify_all()

    async def send(
        self,
        room_id: str,
        markdown: str,
        *,
        reply_to: str | None = None,
        thread_root: str | None = None,
        mentions: Sequence[str] = (),
        notify: bool = False,
    ) -> str:
        event_id = f"$bot-{next(self._ids)}"
        await self._record(event_id, reply_to, markdown)
        return event_id

    async def edit(self, room_id: str, event_id: str, markdown: str) -> None:
        await self._record(event_id, None, markdown)

    async def send_file(
        self,
        room_id: str,
        filename: str,
        data: bytes,
        *,
        reply_to: str | None = None,
        thread_root: str | None = None,
    ) -> str:
        return await self.send(room_id, f"[file {filename}]", reply_to=reply_to)

    async def react(self, room_id: str, event_id: str, key: str) -> str:
        return f"$reaction-{next(self._ids)}"

    async def membership(self, room_id: str, user_id: str) -> Membership:
        return Membership(member=True, power_level=100)

    async def members(self, room_id: str) -> dict[str, Membership]:
        return {SENDER: Membership(member=True, power_level=100)}

    async def reactions(self, room_id: str, event_id: str) -> list[Reaction]:
        return []

    async def run(self, on_event: EventHandler) -> None:
        await asyncio.Event().wait()

    async def home_room(self) -> str | None:
        return ROOM

    async def room_for(self, ref: str) -> str | None:
        # Only the one room exists here: rooms with roles name it by id.
        return ref if ref == ROOM else None

    def alive(self) -> bool:
        return True

    def problems(self) -> list[str]:
        return []

    async def wait(
        self,
        command_id: str,
        done: Callable[[str], bool],
        timeout: float = 300,  # noqa: ASYNC109
    ) -> tuple[float, str]:
        """(when, text) of the first text, in a reply to `command_id`, for which `done`."""

        def found() -> tuple[float, str] | None:
            for posted in self.posted.values():
                if posted.reply_to == command_id:
                    for at, text in posted.texts:
                        if done(text):
                            return at, text
            return None

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        hit = found()
        assert hit is not None
        return hit


class InprocBot:
    """The bot wired to a BenchChat, a data dir, an abra dir and one server."""

    def __init__(self, workdir: Path, abra_dir: Path, docker_host: str) -> None:
        config = parse_config(
            {
                "data_dir": str(workdir / "bot-data"),
                "abra_dir": str(abra_dir),
                "servers": {"default": {"docker_host": docker_host}},
            }
        )
        self.chat = BenchChat()
        self.bot = Bot(config, chat=self.chat)
        self._ids = itertools.count(1)

    async def command(self, body: str) -> tuple[str, float]:
        """Hand a message to the dispatcher; returns its event id and when it was handed."""
        event_id = f"$cmd-{next(self._ids)}"
        message = Message(ROOM, event_id, SENDER, body, int(time.time() * 1000))
        at = time.perf_counter()
        await self.bot.dispatcher.submit(message)
        return event_id, at

    async def close(self) -> None:
        await self.bot.dispatcher.shutdown()
        await self.bot.services.apps.swarm("default").close()
        self.bot.store.close()


@contextlib.contextmanager
def dockerd(name: str, keep: bool = False) -> Iterator[Dockerd]:
    """A private swarm dockerd in a temp dir, stopped (by pid) on the way out.

    Only one such dockerd can run on a machine (swarm's port 7946): when another
    session holds it, wait for it rather than touch it.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"coopbot-bench-{name}-"))
    deadline = time.monotonic() + PORT_WAIT
    daemon: Dockerd | None = None
    try:
        while True:
            daemon = Dockerd(workdir / "dockerd")
            try:
                print(f"[{name}] starting dockerd in {workdir}", flush=True)
                daemon.start()
                break
            except RuntimeError as exc:
                daemon.stop()
                if "7946" not in str(exc) or time.monotonic() > deadline:
                    raise
                print(f"[{name}] {exc}; waiting 30 s", flush=True)
                time.sleep(30)
        yield daemon
    finally:
        if daemon is not None:
            daemon.stop()
        if keep:
            print(f"[{name}] kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
