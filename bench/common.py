"""Shared parts of the benchmarks: a throwaway Synapse, accounts, rooms, the bot's
config, the processes under test (started and stopped by pid) and the measuring member.

Everything stays on 127.0.0.1. The bot runs as `coopbot run --config X` and the
baseline as `python -m bench.echo_client`, each in its own process, so both pay
the same price for their own interpreter, imports and HTTP connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nio
import yaml

from tests.harness.synapse import Synapse

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PASSWORD = "bench-password-not-secret"
# The member's /sync long-poll (ms). A reply ends a poll at once, so this only bounds
# how long an idle poll lasts; the same for both responders.
POLL_MS = 1000
STOP_TIMEOUT = 15.0


# ------------------------------------------------------------------ processes


class Proc:
    """One child process, its output in a log file; stopped by its own pid only."""

    def __init__(self, name: str, argv: Sequence[str], log: Path) -> None:
        self.name, self.argv, self.log = name, list(argv), log
        self.popen: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.started_at = time.perf_counter()
            self.popen = subprocess.Popen(
                self.argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} is not running"
        return self.popen.pid

    def check(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{tail}")

    def stop(self) -> None:
        popen, self.popen = self.popen, None
        if popen is None or popen.poll() is not None:
            return
        popen.terminate()  # SIGTERM to this pid
        try:
            popen.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def rss_mib(pid: int, field_name: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field_name} for pid {pid}")


# --------------------------------------------------------------- the member


@dataclass(frozen=True)
class Reply:
    room_id: str
    sender: str
    in_reply_to: str
    body: str
    at: float  # perf_counter() when the member's sync returned it


class Member:
    """A bare nio client that sends commands and watches, through its own /sync,
    for replies (events whose m.in_reply_to names an event). Its own events are
    filtered out, so a long-poll wakes only for what others send."""

    def __init__(self, homeserver: str, user_id: str) -> None:
        self.user_id = user_id
        self.client = nio.AsyncClient(homeserver, user_id)
        self.filter: dict[str, Any] = {
            "room": {
                "timeline": {"limit": 100, "not_senders": [user_id]},
                "ephemeral": {"not_types": ["*"]},
                "account_data": {"not_types": ["*"]},
            },
            "presence": {"not_types": ["*"]},
            "account_data": {"not_types": ["*"]},
        }
        self.replies: dict[str, list[Reply]] = {}  # by the event id answered
        self.gapless = True
        self._followed: set[str] = set()  # rooms whose timeline we have had from the start

    async def login(self) -> None:
        response = await self.client.login(PASSWORD, device_name="bench")
        if not isinstance(response, nio.LoginResponse):
            raise RuntimeError(f"login {self.user_id}: {response}")
        await self.poll(0, allow_gap=True)

    async def close(self) -> None:
        await self.client.close()

    async def create_room(self, invite: Sequence[str]) -> str:
        response = await self.client.room_create(name="bench", invite=list(invite))
        if not isinstance(response, nio.RoomCreateResponse):
            raise RuntimeError(f"create room: {response}")
        return str(response.room_id)

    async def join(self, room_id: str) -> None:
        response = await self.client.join(room_id)
        if not isinstance(response, nio.JoinResponse):
            raise RuntimeError(f"join {room_id}: {response}")

    async def send(self, room_id: str, body: str) -> str:
        content = {"msgtype": "m.text", "body": body}
        response = await self.client.room_send(room_id, "m.room.message", content)
        if not isinstance(response, nio.RoomSendResponse):
            raise RuntimeError(f"send to {room_id}: {response}")
        return str(response.event_id)

    async def poll(self, timeout_ms: int = POLL_MS, *, allow_gap: bool = False) -> list[Reply]:
        """One /sync; records and returns the replies in it."""
        response = await self.client.sync(timeout=timeout_ms, sync_filter=self.filter)
        at = time.perf_counter()
        if not isinstance(response, nio.SyncResponse):
            raise RuntimeError(f"sync {self.user_id}: {response}")
        found: list[Reply] = []
        for room_id, info in response.rooms.join.items():
            if info.timeline.limited and room_id in self._followed and not allow_gap:
                self.gapless = False  # a reply could have been skipped
            self._followed.add(room_id)
            for event in info.timeline.events:
                content = event.source.get("content", {})
                relates = content.get("m.relates_to") or {}
                answered = (relates.get("m.in_reply_to") or {}).get("event_id")
                if answered:
                    reply = Reply(room_id, event.sender, answered, str(content.get("body")), at)
                    self.replies.setdefault(answered, []).append(reply)
                    found.append(reply)
        return found

    async def wait_reply(self, event_id: str, timeout: float = 30) -> Reply:  # noqa: ASYNC109
        deadline = time.perf_counter() + timeout
        while event_id not in self.replies:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"no reply to {event_id} within {timeout}s")
            await self.poll()
        return self.replies[event_id][0]


async def wait_answering(
    member: Member,
    room_id: str,
    proc: Proc,
    timeout: float = 90,  # noqa: ASYNC109
) -> float:
    """Send `!ping` until one is answered (a client that has not joined yet ignores
    them); return the seconds from the process's start to that first answer."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        proc.check()
        event_id = await member.send(room_id, "!ping")
        try:
            reply = await member.wait_reply(event_id, timeout=3)
            return reply.at - proc.started_at
        except TimeoutError:
            continue
    raise TimeoutError(f"{proc.name} did not answer within {timeout}s; see {proc.log}")


# -------------------------------------------------------------- the setting


@dataclass
class Env:
    """A temp dir with a running Synapse; every process and client made through
    it is stopped or closed by `bench_env` on the way out, even on failure."""

    workdir: Path
    synapse: Synapse
    procs: list[Proc] = field(default_factory=list)
    clients: list[Member] = field(default_factory=list)

    def register(self, role: str) -> str:
        return self.synapse.register(f"{role}-{uuid.uuid4().hex[:6]}", PASSWORD)

    async def member(self, role: str = "member") -> Member:
        member = Member(self.synapse.url, self.register(role))
        self.clients.append(member)
        await member.login()
        return member

    def bot(self, name: str, user_id: str, room_id: str, **config: Any) -> Proc:
        """`coopbot run` with the default configuration, except what is needed to
        reach this Synapse and room (and `config`, deep keys as `matrix`/`web`)."""
        home = self.workdir / name
        home.mkdir(exist_ok=True)
        matrix = {
            "homeserver": self.synapse.url,
            "user_id": user_id,
            "password": PASSWORD,
            "rooms": [room_id],
            **config.pop("matrix", {}),
        }
        raw = {"matrix": matrix, "data_dir": str(home / "data"), **config}
        path = home / "config.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        argv = [str(BIN / "coopbot"), "run", "--config", str(path)]
        return self._proc(name, argv, home / "bot.log")

    def echo(self, name: str, user_id: str, room_id: str) -> Proc:
        home = self.workdir / name
        home.mkdir(exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "bench.echo_client",
            self.synapse.url,
            user_id,
            PASSWORD,
            room_id,
            str(home / "state"),
        ]
        return self._proc(name, argv, home / "echo.log")

    def _proc(self, name: str, argv: list[str], log: Path) -> Proc:
        proc = Proc(name, argv, log)
        self.procs.append(proc)
        return proc


def arguments(description: str, **numbers: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    for name, default in numbers.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs)")
    return parser.parse_args()


@contextlib.asynccontextmanager
async def bench_env(name: str, keep: bool = False) -> AsyncIterator[Env]:
    workdir = Path(tempfile.mkdtemp(prefix=f"coopbot-bench-{name}-"))
    synapse = Synapse(workdir / "synapse")
    env = Env(workdir, synapse)
    try:
        print(f"[{name}] starting Synapse in {workdir}", flush=True)
        await asyncio.to_thread(synapse.start)
        yield env
    finally:
        for proc in env.procs:
            proc.stop()
        for client in env.clients:
            await client.close()
        synapse.stop()
        if keep:
            print(f"[{name}] kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# ------------------------------------------------------------------ figures


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def machine() -> str:
    return f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}"


def result(name: str, value: float, target: str) -> None:
    print(f"RESULT {name} {value:.3f} {target}", flush=True)
