"""What the fault suite shares: one small recipe (busybox, one volume, backup labels
with hooks), apps of it on the one test swarm, a co-op room, and the bot as a real
process (tests/harness/bot.py BotProcess) that a fault point can SIGKILL.

The bot is started with COOPBOT_FAULT_FILE: a test writes a point's name into that
file just before the command it wants cut short, so one process can do the set-up
(a first backup) and then die at the chosen step; the point fires once, so the same
process started again goes past it.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import re
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

import nio

from bot.ops.restic import Restic
from bot.ops.swarm import Swarm
from tests.harness.bot import BotProcess, raw_bot_config
from tests.harness.coop import BOT_PASSWORD, Coop
from tests.harness.dockerd import Dockerd
from tests.harness.recipes import make_app_env, make_recipe

IMAGE = "local/busybox:1.0"
RELEASES = ("1.0.0+1.0", "1.1.0+1.0")
RESTIC_PASSWORD = "fault suite\n"


def compose(release: str, version_label: bool = False) -> str:
    """The recipe's compose file; `version_label` for a stack deployed by the test
    itself (the bot's own deploys add the label in their overlay)."""
    label = f'        - "coop-cloud.${{STACK_NAME}}.version={release}"\n' if version_label else ""
    return f"""version: "3.8"
services:
  app:
    image: {IMAGE}
    command: sleep 3600
    stop_grace_period: 1s
    environment: [RELEASE={release}]
    volumes: [data:/data]
    deploy:
      endpoint_mode: dnsrr
      restart_policy: {{condition: on-failure, delay: 1s}}
      labels:
        - "coop-cloud.${{STACK_NAME}}.timeout=60"
        - "backupbot.backup=true"
        - "backupbot.backup.pre-hook=echo pre >> /data/hooks.log"
        - "backupbot.backup.post-hook=echo post >> /data/hooks.log"
{label}volumes:
  data:
"""


def stack_of(domain: str) -> str:
    return domain.replace(".", "_")


def make_abra(abra: pathlib.Path) -> None:
    files = [(tag, {"compose.yml": compose(tag), f"release/{tag}": f"{tag}\n"}) for tag in RELEASES]
    make_recipe(abra / "recipes", "demo", files)


def new_app(abra: pathlib.Path, kind: str) -> str:
    """A fresh app of the demo recipe (its .env only): a domain no other test uses."""
    domain = f"{kind}-{uuid.uuid4().hex[:6]}.fault.test"
    make_app_env(abra, "default", domain, "demo")
    return domain


def deploy_by_hand(dockerd: Dockerd, tmp: pathlib.Path, domain: str, release: str) -> None:
    """`docker stack deploy` of the recipe at `release`, as an operator would have."""
    path = tmp / f"{stack_of(domain)}.yml"
    path.write_text(compose(release, version_label=True))
    stack = stack_of(domain)
    dockerd.cli("stack", "deploy", "-c", str(path), stack, env={"STACK_NAME": stack})


@dataclass
class FaultSite:
    coop: Coop
    bot: BotProcess
    dockerd: Dockerd
    abra: pathlib.Path
    repo: Restic
    fault_file: pathlib.Path
    tmp: pathlib.Path

    @property
    def room(self) -> str:
        return self.coop.room

    def volume(self, domain: str) -> pathlib.Path:
        return self.dockerd.data_root / "volumes" / f"{stack_of(domain)}_data" / "_data"

    def arm(self, point: str) -> None:
        """The next time the bot reaches `point`, it SIGKILLs itself."""
        self.fault_file.write_text(point + "\n")

    async def start(self) -> None:
        await self.bot.start()
        # Started means syncing; answering means it has joined and hears the room.
        for _ in range(30):
            try:
                await self.coop.ask(self.coop.bob, "!ping", "pong", timeout=5)
                return
            except TimeoutError:
                continue
        raise AssertionError(f"the bot never answered !ping:\n{self.bot.log_tail()}")

    async def send(self, command: str) -> str:
        """bob sends it; returns the command's event id."""
        return await self.coop.bob.send(self.room, command)

    async def voted(self, command: str) -> str:
        """bob asks, alice approves; returns the proposal message's id, the thread
        the approved job reports in."""
        command_id = await self.send(command)

        def proposal(room: str, event: nio.Event) -> bool:
            content = event.source.get("content", {})
            relates = content.get("m.relates_to") or {}
            return (
                room == self.room
                and event.sender == self.coop.bot_id
                and relates.get("m.in_reply_to", {}).get("event_id") == command_id
            )

        event = await self.coop.bob.wait_for(proposal, 60)
        body = str(event.source["content"]["body"])
        found = re.search(r"Proposal `(\w+)`", body)
        assert found, body
        await self.coop.ask(self.coop.alice, f"!approve {found.group(1)}", "Counted")
        return str(event.event_id)

    async def said(self, text: str, timeout: float = 180) -> str:  # noqa: ASYNC109
        """The body (the newest text, for an edit) of the first bot message containing `text`."""
        reply = await self.coop.bob.wait_for_reply(self.room, self.coop.bot_id, text, timeout)
        content = reply.source["content"]
        return str(content.get("m.new_content", content)["body"])

    async def progress_thread(self, command_id: str, timeout: float = 60) -> str:  # noqa: ASYNC109
        """The thread the job of a command reports in: the thread of its progress message
        (the first bot message replying to the command), or that message itself."""

        def answers(room: str, event: nio.Event) -> bool:
            relates = event.source.get("content", {}).get("m.relates_to") or {}
            return (
                room == self.room
                and event.sender == self.coop.bot_id
                and relates.get("m.in_reply_to", {}).get("event_id") == command_id
            )

        event = await self.coop.bob.wait_for(answers, timeout)
        relates = event.source["content"]["m.relates_to"]
        if relates.get("rel_type") == "m.thread":
            return str(relates["event_id"])
        return str(event.event_id)

    async def killed(self, timeout: float = 120) -> None:  # noqa: ASYNC109
        code = await self.bot.died(timeout)
        assert code == -9, f"the bot exited {code}, not by SIGKILL:\n{self.bot.log_tail()}"

    async def recovery(self, thread: str, done: str, timeout: float = 180) -> str:  # noqa: ASYNC109
        """The crash-recovery message of a job: it must be in the job's thread and name
        the job; returns its final text, which must contain `done` (waiting for its
        edit when the bot finishes something first)."""

        def told(room: str, event: nio.Event) -> bool:
            content = event.source.get("content", {})
            return (
                room == self.room
                and event.sender == self.coop.bot_id
                and "was interrupted" in str(content.get("body", ""))
                and "m.new_content" not in content
            )

        first = await self.coop.bob.wait_for(told, timeout)
        relates = first.source["content"].get("m.relates_to") or {}
        assert relates.get("rel_type") == "m.thread", first.source
        assert relates.get("event_id") == thread, (relates, thread)
        body = str(first.source["content"]["body"])
        if done in body:
            return body

        def edited(room: str, event: nio.Event) -> bool:
            content = event.source.get("content", {})
            relates = content.get("m.relates_to") or {}
            return (
                room == self.room
                and relates.get("rel_type") == "m.replace"
                and relates.get("event_id") == first.event_id
            )

        edit = await self.coop.bob.wait_for(edited, timeout)
        final = str(edit.source["content"]["m.new_content"]["body"])
        assert done in final, final
        return final

    async def services(self, domain: str) -> list[Any]:
        swarm = Swarm(self.dockerd.host)
        try:
            return await swarm.services(stack_of(domain))
        finally:
            await swarm.close()

    def deploys(self, domain: str) -> list[dict[str, Any]]:
        """The bot's deploy history of the app, read from its store (read-only)."""
        store = self.coop.data_dir / "coopbot.sqlite"
        with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM deploys WHERE app = ? ORDER BY id", (domain,))
            return [dict(row) for row in rows]

    def pinned(self, domain: str) -> str:
        """The app's .env TYPE line (the version abra and the bot pin there)."""
        env = self.abra / "servers" / "default" / f"{domain}.env"
        return next(line for line in env.read_text().splitlines() if line.startswith("TYPE="))

    async def snapshots(self) -> list[Any]:
        if not (pathlib.Path(self.repo.repository) / "config").exists():
            return []
        return await self.repo.snapshots()


def site_config(
    coop: Coop, abra: pathlib.Path, dockerd: Dockerd, tmp: pathlib.Path
) -> dict[str, Any]:
    password = tmp / "restic-password"
    password.write_text(RESTIC_PASSWORD)
    sections: dict[str, Any] = {
        "abra_dir": str(abra),
        "servers": {"default": {"docker_host": dockerd.host}},
        "approvals": {"required": 1},
        "jobs": {"progress_interval": "0.5s", "notify_after": "1h"},
        "access": {"admins": [coop.alice.user_id]},
        "upgrades": {"check_schedule": None},
        "backups": {
            "repository": str(tmp / "repo"),
            "password_file": str(password),
            "volumes_root": str(dockerd.data_root / "volumes"),
            "settle_timeout": "30s",
            "schedule": None,
            "check_schedule": None,
            "drill_schedule": None,
        },
        "log_level": "INFO",
    }
    return raw_bot_config(
        coop.synapse.url, coop.bot_id, BOT_PASSWORD, [coop.room], coop.data_dir, sections
    )


async def wait_running(site: FaultSite, domain: str, timeout: float = 90) -> None:  # noqa: ASYNC109
    swarm = Swarm(site.dockerd.host)
    try:
        result = await swarm.wait_converged(stack_of(domain), timeout, monitor=0)
        assert result.ok, result.failures
    finally:
        await swarm.close()
    await asyncio.sleep(0)
