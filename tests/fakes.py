"""Test doubles for the interfaces of bot/ (no network, no threads)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.core.chat import ChatEvent, EventHandler, Membership, Message, Reaction
from bot.core.progress import Progress
from bot.errors import UserError
from bot.features.apps import Deployed, deployed_from
from bot.ops.abra import AppEnv
from bot.ops.recipes import RecipeRepo
from bot.ops.restic import BackupSummary, ResticError, Snapshot
from bot.ops.restic import Progress as ResticProgress
from bot.ops.swarm import (
    Convergence,
    NodeInfo,
    Placement,
    ServiceInfo,
    Stranded,
    SwarmError,
    compose_placements,
    find_node,
    stranded,
)
from bot.ops.swarm.oneoff import OneOffMount, OneOffResult

MemberInfo = Membership | tuple[bool, int] | tuple[bool, int, bool]


@dataclass(frozen=True)
class Sent:
    """A message the bot posted."""

    room: str
    markdown: str
    event_id: str
    reply_to: str | None = None
    thread_root: str | None = None
    mentions: tuple[str, ...] = ()
    notify: bool = False  # m.text that pings `mentions`, rather than a silent notice


@dataclass(frozen=True)
class Edit:
    """An edit of a message the bot posted earlier."""

    room: str
    event_id: str
    markdown: str


@dataclass(frozen=True)
class SentReaction:
    room: str
    event_id: str
    key: str
    reaction_id: str


@dataclass
class FakeChat:
    """The Chat protocol of bot/core/chat.py, in memory.

    `roster` maps a user id to `(member, power_level[, creator])` or a Membership;
    anyone else is not in the room. `incoming` is what `run()` feeds to the bot,
    in order, before returning (like the console at end of input).
    `server_reactions` is what the relations endpoint would answer, per event id.
    """

    roster: dict[str, MemberInfo] = field(default_factory=dict)
    incoming: list[ChatEvent] = field(default_factory=list)
    user_id: str = "@coopbot:test"
    sent: list[Sent] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)
    sent_reactions: list[SentReaction] = field(default_factory=list)
    server_reactions: dict[str, list[Reaction]] = field(default_factory=dict)
    # Everything in the order it happened: Sent, Edit and SentReaction records.
    log: list[Sent | Edit | SentReaction] = field(default_factory=list)
    running: bool = False
    home: str | None = "!room:test"  # where scheduled work reports
    aliases: dict[str, str] = field(default_factory=dict)  # "#alias:test" -> room id
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _event_id(self) -> str:
        return f"$bot-{next(self._ids)}"

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
        record = Sent(
            room_id, markdown, self._event_id(), reply_to, thread_root, tuple(mentions), notify
        )
        self.sent.append(record)
        self.log.append(record)
        return record.event_id

    async def send_file(
        self,
        room_id: str,
        filename: str,
        data: bytes,
        *,
        reply_to: str | None = None,
        thread_root: str | None = None,
    ) -> str:
        record = Sent(
            room_id, f"[file {filename}]\n{data.decode()}", self._event_id(), reply_to, thread_root
        )
        self.sent.append(record)
        self.log.append(record)
        return record.event_id

    async def edit(self, room_id: str, event_id: str, markdown: str) -> None:
        record = Edit(room_id, event_id, markdown)
        self.edits.append(record)
        self.log.append(record)

    async def react(self, room_id: str, event_id: str, key: str) -> str:
        record = SentReaction(room_id, event_id, key, self._event_id())
        self.sent_reactions.append(record)
        self.log.append(record)
        return record.reaction_id

    async def membership(self, room_id: str, user_id: str) -> Membership:
        info = self.roster.get(user_id)
        if info is None:
            return Membership(member=False, power_level=0)
        if isinstance(info, Membership):
            return info
        return Membership(*info)

    def set_member(self, user_id: str, power_level: int, *, creator: bool = False) -> None:
        self.roster[user_id] = Membership(True, power_level, creator)

    async def members(self, room_id: str) -> dict[str, Membership]:
        people = {user: await self.membership(room_id, user) for user in self.roster}
        return {user: info for user, info in people.items() if info.member}

    async def reactions(self, room_id: str, event_id: str) -> list[Reaction]:
        return list(self.server_reactions.get(event_id, []))

    async def run(self, on_event: EventHandler) -> None:
        self.running = True
        try:
            for event in self.incoming:
                await on_event(event)
        finally:
            self.running = False

    async def home_room(self) -> str | None:
        return self.home

    async def room_for(self, ref: str) -> str | None:
        return self.aliases.get(ref, ref if ref.startswith("!") else None)

    def alive(self) -> bool:
        return self.running

    def problems(self) -> list[str]:
        return []

    # -- helpers for assertions ------------------------------------------------
    def texts(self) -> list[str]:
        """The markdown of every posted message, in order (edits not included)."""
        return [record.markdown for record in self.sent]

    def replies_to(self, event_id: str) -> list[str]:
        return [record.markdown for record in self.sent if record.reply_to == event_id]

    def shown(self, event_id: str) -> str:
        """What a posted message reads now, after its edits."""
        text = next(record.markdown for record in self.sent if record.event_id == event_id)
        for edit in self.edits:
            if edit.event_id == event_id:
                text = edit.markdown
        return text

    def edits_of(self, event_id: str) -> list[str]:
        return [edit.markdown for edit in self.edits if edit.event_id == event_id]


def messages(bodies: Iterable[str], sender: str, room: str = "!room:test") -> list[Message]:
    return [
        Message(room, f"$in-{index}", sender, body, 1_700_000_000_000 + index)
        for index, body in enumerate(bodies, start=1)
    ]


def swap_services(services: object, **fakes: object) -> None:
    """Put fakes into a built bot's frozen Services (tests only: the bot itself never
    changes what it was built with)."""
    for name, fake in fakes.items():
        object.__setattr__(services, name, fake)


# ================================================================ adapters and features
# One copy of each, shared by the unit tests of backups and upgrades; the contract
# tests in tests/integration/test_adapter_contracts.py hold them to the real adapters.

DIGEST = "sha256:" + "a" * 64  # what registry_digest answers for a ref not in `digests`


@dataclass
class FakeSwarm:
    """The parts of bot.ops.swarm.Swarm that the features call."""

    stacks_of: dict[str, list[ServiceInfo]] = field(default_factory=dict)
    volumes_of: dict[str, list[str]] = field(default_factory=dict)
    mounts_of: dict[str, dict[str, list[tuple[str, str]]]] = field(default_factory=dict)
    secret_names: set[str] = field(default_factory=set)  # every swarm secret's name
    hooks: dict[str, tuple[int, str]] = field(default_factory=dict)  # command -> result
    execs: list[tuple[str, str]] = field(default_factory=list)  # (service, command)
    answers: list[list[ServiceInfo]] = field(default_factory=list)  # next services() answers
    scaled: list[dict[str, int]] = field(default_factory=list)
    converged: Convergence | None = None
    digests: dict[str, str | Exception] = field(default_factory=dict)
    # True, or the host to name in the error (the tests of each feature name their own)
    unreachable: bool | str = False
    asked: list[str] = field(default_factory=list)  # refs registry_digest was asked for
    in_flight: int = 0
    most_in_flight: int = 0
    node_list: list[NodeInfo] = field(default_factory=list)  # a single-node swarm if empty
    placement_list: list[Placement] = field(default_factory=list)
    availability_set: list[tuple[str, str]] = field(default_factory=list)  # (node, availability)
    node_id: str = ""  # the node the adapter's daemon runs on (info()["Swarm"]["NodeID"])
    oneoffs: list[dict[str, Any]] = field(default_factory=list)  # run_oneoff's arguments
    oneoff_results: list[OneOffResult | Exception] = field(default_factory=list)  # next answers
    volume_dirs: dict[str, str] = field(default_factory=dict)  # volume -> its folder there

    async def info(self) -> dict[str, Any]:
        return {"Swarm": {"NodeID": self.node_id}}

    async def remove_ended_oneoffs(self) -> list[str]:
        return []  # the fake's one-offs end within run_oneoff: none is ever left

    async def run_oneoff(
        self,
        *,
        purpose: str,
        node_id: str,
        image: str,
        command: Sequence[str],
        mounts: Sequence[OneOffMount] = (),
        secrets: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        on_line: Callable[[str], Awaitable[None]] | None = None,
        timeout: float = 3600,  # noqa: ASYNC109 - as the real adapter's
        poll: float = 1.0,
    ) -> OneOffResult:
        self.oneoffs.append(
            {
                "timeout": timeout,
                "purpose": purpose,
                "node_id": node_id,
                "image": image,
                "command": list(command),
                "mounts": list(mounts),
                "secrets": dict(secrets or {}),
                "env": dict(env or {}),
            }
        )
        answer = self.oneoff_results.pop(0) if self.oneoff_results else OneOffResult(0, [], [])
        if isinstance(answer, Exception):
            raise answer
        if on_line is not None:
            for line in answer.stdout:
                await on_line(line)
        return answer

    async def volume_dir(self, name: str) -> str:
        return self.volume_dirs[name]

    async def nodes(self) -> list[NodeInfo]:
        return list(self.node_list)

    async def down_nodes(self) -> dict[str, str]:
        return {n.id: n.hostname or n.id for n in self.node_list if n.state != "ready"}

    async def placements(self, stack: str | None = None) -> list[Placement]:
        return [p for p in self.placement_list if stack is None or p.stack == stack]

    async def set_availability(self, name: str, availability: str) -> NodeInfo:
        node = find_node(self.node_list, name)
        if node is None:
            raise SwarmError(f"no node {name!r} in this swarm")
        self.availability_set.append((node.hostname, availability))
        new = dataclasses.replace(node, availability=availability)
        self.node_list = [new if n.id == node.id else n for n in self.node_list]
        if availability == "drain":  # its tasks move to the first other node
            other = next(n.id for n in self.node_list if n.id != node.id)
            self.placement_list = [
                dataclasses.replace(p, nodes=tuple(other if i == node.id else i for i in p.nodes))
                for p in self.placement_list
            ]
        return new

    async def stranded_by(self, config: dict[str, Any], stack: str) -> list[Stranded]:
        if len(self.node_list) < 2:
            return []
        current = {p.service: p.nodes for p in await self.placements(stack)}
        return stranded(compose_placements(config, stack), self.node_list, current)

    async def stacks(self) -> dict[str, list[ServiceInfo]]:
        if self.unreachable:
            host = self.unreachable if isinstance(self.unreachable, str) else "ssh://nowhere"
            raise SwarmError(f"server unreachable: {host}")
        # by stack name, and services by name, as the daemon is asked to answer
        return {name: self._sorted(s) for name, s in sorted(self.stacks_of.items())}

    @staticmethod
    def _sorted(services: list[ServiceInfo]) -> list[ServiceInfo]:
        return sorted(services, key=lambda s: s.name)

    async def services(self, stack: str) -> list[ServiceInfo]:
        await asyncio.sleep(0)
        if self.answers:
            return self.answers.pop(0)
        return self._sorted(self.stacks_of.get(stack, []))

    async def secrets(self) -> set[str]:
        return set(self.secret_names)

    async def volumes(self, stack: str) -> list[str]:
        return sorted(self.volumes_of.get(stack, []))

    async def mounts(self, stack: str) -> dict[str, list[tuple[str, str]]]:
        return self.mounts_of.get(stack, {})

    async def exec(self, stack: str, service: str, command: str) -> tuple[int, str]:
        self.execs.append((service, command))
        if self.unreachable:  # as the adapter says it: the socket's sentence
            raise SwarmError(f"server unreachable: nothing answers at {self.unreachable}")
        return self.hooks.get(command, (0, ""))

    async def scale(self, stack: str, replicas: dict[str, int]) -> None:
        self.scaled.append(dict(replicas))
        self.stacks_of[stack] = [
            dataclasses.replace(s, replicas_running=replicas[s.short_name])
            if s.short_name in replicas
            else s
            for s in self.stacks_of[stack]
        ]

    async def wait_converged(self, stack: str, timeout: float) -> Convergence:  # noqa: ASYNC109
        return self.converged or Convergence(True, False, [], self.stacks_of[stack])

    async def registry_digest(self, ref: str) -> str:
        self.asked.append(ref)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.01)  # long enough for the others to start
            answer = self.digests.get(ref, DIGEST)
            if isinstance(answer, Exception):
                raise answer
            return answer
        finally:
            self.in_flight -= 1


@dataclass
class FakeApps:
    """The parts of bot.features.apps.Apps that Backups, Upgrades and the commands use."""

    swarms: dict[str, FakeSwarm]
    envs: list[AppEnv] = field(default_factory=list)
    # where recipe() finds the recipes' git checkouts; tests that ask for one set it
    abra_dir: Path = Path("/nonexistent/abra")
    deploys: list[tuple[str, str, str]] = field(default_factory=list)  # (domain, version, action)
    deploy_fails: str | None = None  # the error, or None for success
    deploy_changes_spec: bool = True  # a failed deploy that got as far as the swarm
    self_app: Any = None  # the bot's own app (bot/features/self_app.py), like Apps
    prefix: str = "!"  # the command prefix for hints, like Apps.prefix

    async def inventory(self) -> tuple[list[AppEnv], list[str]]:
        return list(self.envs), []

    async def find(self, domain: str) -> AppEnv:
        for env in self.envs:
            if env.domain == domain:
                return env
        raise UserError(f"No app {domain} on any configured server.")

    def swarm(self, server: str) -> FakeSwarm:
        return self.swarms[server]

    def recipe(self, name: str) -> RecipeRepo:
        return RecipeRepo(self.abra_dir / "recipes" / name)

    async def deployed(self, env: AppEnv) -> Deployed:
        services = await self.swarm(env.server).services(env.stack_name)
        return deployed_from(env.stack_name, services)

    async def plan(self, env: AppEnv, version: str | None = None, *, chaos: bool = False) -> str:
        """Apps.plan's text, as far as a fake knows it (the move, not the specs)."""
        current = (await self.deployed(env)).version
        return f"📋 Plan: {current or 'not deployed'} → **{'chaos' if chaos else version}**"

    async def deploy(
        self,
        env: AppEnv,
        progress: Progress,
        actor: str,
        version: str | None = None,
        *,
        job_id: int | None = None,
        action: str = "deploy",
    ) -> str:
        assert version is not None
        self.deploys.append((env.domain, version, action))
        await progress.update(f"**{action.capitalize()} {env.domain}**\n⏳ deploying")
        swarm = self.swarm(env.server)
        old = swarm.stacks_of[env.stack_name]
        if self.deploy_fails:
            if self.deploy_changes_spec:
                swarm.stacks_of[env.stack_name] = [
                    dataclasses.replace(s, version=s.version + 2) for s in old
                ]
            raise UserError(f"**{action.capitalize()} {env.domain}**\n❌ {self.deploy_fails}")
        label = f"coop-cloud.{env.stack_name}.version"
        swarm.stacks_of[env.stack_name] = [
            dataclasses.replace(s, labels={**s.labels, label: version}, version=s.version + 1)
            for s in old
        ]
        return f"**{action.capitalize()} {env.domain}**\n✅ {env.domain} runs {version}."


SUMMARY = BackupSummary(
    snapshot_id="abcd1234",
    files_new=1,
    files_changed=2,
    files_unmodified=3,
    data_added=1024,
    total_bytes_processed=2 * 1024 * 1024,
    duration=5.0,
)

NO_REPOSITORY = "Fatal: unable to open config file: there is no repository at /srv/restic"


class FakeRestic:
    """The methods of bot.ops.restic.Restic that Backups calls; every call yields to
    the loop once, as a subprocess would, so concurrent callers interleave."""

    display = "/srv/restic"

    def __init__(self, *, initialised: bool = True) -> None:
        self.initialised = initialised
        self.calls: list[str] = []
        self.snaps: list[Snapshot] = []
        self.summary = SUMMARY
        self.backup_error: Exception | None = None
        self.snapshots_error: ResticError | None = None
        self.check_error: ResticError | None = None
        self.restore_error: ResticError | None = None
        self.backed_up: list[tuple[list[Path], list[str]]] = []
        self.files: dict[str, dict[str, bytes]] = {}  # snapshot id -> {absolute path: data}
        self.listings: dict[str, list[tuple[str, str, int]]] = {}
        self.restored: list[tuple[str, Path, list[str]]] = []
        self.forgotten: list[list[str]] = []
        self.forget_removes: dict[str, list[str]] = {}
        self.stats_bytes: dict[str, int] = {}  # first tag -> raw-data bytes
        self.stats_error: ResticError | None = None
        self.held_locks: list[dict[str, Any]] = []  # what `list locks` would show

    async def locks(self) -> list[dict[str, Any]]:
        await asyncio.sleep(0)  # not in `calls`: a failed run's look, not restic work
        return list(self.held_locks)

    async def _call(self, name: str) -> None:
        self.calls.append(name)
        await asyncio.sleep(0)

    async def version(self) -> tuple[int, int, int]:
        await self._call("version")
        return (0, 14, 0)

    async def init(self) -> None:
        await self._call("init")
        self.initialised = True

    async def snapshots(self, tags: list[str] | None = None) -> list[Snapshot]:
        await self._call("snapshots")
        if self.snapshots_error is not None:
            raise self.snapshots_error
        if not self.initialised:
            raise ResticError(NO_REPOSITORY, kind="no_repository", exit_code=1)
        return [s for s in self.snaps if all(t in s.tags for t in tags or [])]

    async def backup(
        self,
        paths: list[Path],
        tags: list[str],
        on_progress: Callable[[ResticProgress], Awaitable[None]] | None = None,
    ) -> BackupSummary:
        await self._call("backup")
        if not self.initialised:
            raise ResticError(NO_REPOSITORY, kind="no_repository", exit_code=1)
        self.backed_up.append((list(paths), list(tags)))
        if on_progress is not None:
            await on_progress(ResticProgress(50.0, 512, 1024, 1, 2, 1.0, 30.0))
        if self.backup_error is not None:
            raise self.backup_error
        return self.summary

    async def ls(self, snapshot_id: str) -> list[tuple[str, str, int]]:
        await self._call("ls")
        return self.listings[snapshot_id]

    async def restore(self, snapshot_id: str, target: Path, include: Sequence[str] = ()) -> None:
        await self._call("restore")
        self.restored.append((snapshot_id, target, list(include)))
        if self.restore_error is not None:
            raise self.restore_error
        for path, data in self.files[snapshot_id].items():
            if include and not any(path == i or path.startswith(i + "/") for i in include):
                continue
            dest = target / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)

    async def forget(
        self,
        tags: list[str],
        keep_daily: int,
        keep_weekly: int,
        keep_monthly: int,
        group_by: str = "tags",
    ) -> list[str]:
        # the real one's refusals, before any restic runs
        if not tags:
            raise ValueError("forget needs tags: it would apply to the whole repository")
        if not any((keep_daily, keep_weekly, keep_monthly)):
            raise ResticError("a retention policy needs at least one keep value above 0")
        await self._call("forget")
        policy = f"{keep_daily}/{keep_weekly}/{keep_monthly}"
        self.forgotten.append([*tags, policy, f"group_by={group_by!r}"])
        return self.forget_removes.get(tags[0], [])

    async def prune(self) -> None:
        await self._call("prune")

    async def stats(self, tags: list[str]) -> int:
        await self._call("stats")
        if self.stats_error is not None:
            raise self.stats_error
        return self.stats_bytes.get(tags[0], 0)

    async def check(self, read_data_subset: str | None = None) -> str:
        await self._call(f"check {read_data_subset}")
        if self.check_error is not None:
            raise self.check_error
        return "no errors were found"


@dataclass
class Outcome:
    snapshot_id: str
    report: str


@dataclass
class FakeBackups:
    """The parts of bot.features.backups.Backups that Upgrades uses."""

    labelled: bool = True
    fails: str | None = None
    newest: str | None = "feedbeef00112233"
    taken: list[str] = field(default_factory=list)

    async def has_labels(self, env: AppEnv) -> bool:
        return self.labelled

    async def backup(
        self, env: AppEnv, progress: Any, actor: str, job_id: int | None = None
    ) -> Outcome:
        await progress.update(f"💾 Backing up **{env.domain}**: restic")
        if self.fails:
            raise UserError(self.fails)
        self.taken.append(env.domain)
        return Outcome("0123456789abcdef", "snapshot 01234567")

    async def newest_snapshot(self, env: AppEnv) -> str | None:
        return self.newest
