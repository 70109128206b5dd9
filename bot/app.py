"""The one place that builds the real clients and wires everything together.

Adapters (docker, git, restic, Matrix) are constructed here and nowhere else;
features receive what they use, and everything built is closed on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TextIO

from bot.config import PING_TASKS, BackupsConfig, Config
from bot.core.access import Access
from bot.core.authorise import Authoriser
from bot.core.chat import Chat
from bot.core.console import CONSOLE_USER, ConsoleChat
from bot.core.context import Services
from bot.core.deadman import DeadMan, ping_counter
from bot.core.dispatcher import Dispatcher
from bot.core.jobs import JobManager
from bot.core.metrics import Metrics
from bot.core.recovery import tell_interrupted
from bot.core.registry import CommandGroup, Registry
from bot.core.scheduler import Schedule, Scheduler, tasks_from
from bot.core.store import Store
from bot.core.web import Hooks, serve
from bot.core.windows import Windows
from bot.errors import AlreadyRunning
from bot.features.apps import Apps
from bot.features.backups import Backups, restic_environment
from bot.features.self_app import SelfApp, own_container_refs
from bot.features.upgrades import Upgrades
from bot.features.watch import Reporter, Watch
from bot.ops.pings import Pings
from bot.ops.recipes import Recipes
from bot.ops.restic import Restic
from bot.ops.swarm import Swarm, SwarmError
from bot.ops.swarm.own import stack_of_container

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL = 6 * 3600.0  # seconds between prunes of the seen-events table
# How long a supervised loop waits after a failure before it starts again.
RESTART_DELAY = 5.0
SELF_DETECT_TIMEOUT = 15.0  # seconds for finding the bot's own app at start


def build_chat(
    config: Config, store: Store, metrics: Metrics, console_as: str | None = None
) -> Chat:
    """Matrix when configured, else the console room."""
    if config.matrix is not None and console_as is None:
        from bot.ops.matrix import MatrixChat  # nio loads slowly; the console doesn't need it

        return MatrixChat(config.matrix, store, config.data_dir, metrics)
    prefix = config.matrix.prefix if config.matrix else "!"
    return ConsoleChat(prefix, console_as or CONSOLE_USER)


def build_swarm(docker_host: str) -> Swarm:
    return Swarm(docker_host)


def build_node_swarms(config: Config) -> dict[str, dict[str, Swarm]]:
    """Per server, the nodes' own docker endpoints (servers.<name>.nodes), for hooks."""
    return {
        name: {node: build_swarm(host) for node, host in server.nodes.items()}
        for name, server in config.servers.items()
    }


def build_swarms(config: Config) -> dict[str, Swarm]:
    """One docker adapter per configured server."""
    return {name: build_swarm(server.docker_host) for name, server in config.servers.items()}


def build_restic(config: BackupsConfig, data_dir: Path) -> Restic:
    """The restic adapter for the configured repository (its cache in data_dir)."""
    return Restic(
        config.repository,
        config.password_file,
        binary=config.restic,
        extra_env=restic_environment(config.env_file),
        cache_dir=data_dir / "restic-cache",
    )


def build_pings(config: Config, metrics: Metrics) -> Pings:
    """The dead-man switch client (aiohttp); pings that fail are counted in /metrics."""
    counter = ping_counter(metrics.registry)
    urls = {name: url for name in PING_TASKS if (url := config.pings.url(name))}
    return Pings(
        urls,
        timeout=config.pings.timeout,
        failed=lambda task, kind: counter.labels(task, kind, "failed").inc(),
        sent=lambda task, kind: counter.labels(task, kind, "sent").inc(),
    )


def _secret(path: Path | None) -> str | None:
    return None if path is None else path.read_text().strip()


def hold_data_dir(data_dir: Path) -> TextIO:
    """Hold data_dir/coopbot.lock for the whole run: two bots on one data folder would
    both answer every command and write the same SQLite file. The kernel frees the
    lock when the process ends, however it ends."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "coopbot.lock"
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise AlreadyRunning(
            f"another coopbot (pid {holder}) already runs on {data_dir}; stop it first, "
            "or give this one its own data_dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def build_windows(
    config: Config, store: Store, chat: Chat, apps: Apps, zone: tzinfo, clock: Callable[[], float]
) -> Windows | None:
    """The servers' maintenance windows; None when no server has one."""
    if not any(server.window for server in config.servers.values()):
        return None

    async def server_of(domain: str) -> str | None:
        return (await apps.find(domain)).server

    return Windows(config, store, chat, server_of, zone, clock)


async def supervised(name: str, loop: Callable[[], Awaitable[None]]) -> None:
    """Run a long-lived loop until cancelled; a failure is logged and the loop
    starts again, so one failed message edit never stops proposals expiring."""
    while True:
        try:
            await loop()
            return
        except Exception:
            log.exception("%s failed; starting it again in %.0f s", name, RESTART_DELAY)
            await asyncio.sleep(RESTART_DELAY)


class Bot:
    def __init__(
        self,
        config: Config,
        *,
        chat: Chat | None = None,
        groups: Iterable[CommandGroup] | None = None,
        console_as: str | None = None,
        clock: Callable[[], float] = time.time,
        sweep_interval: float = 5.0,
        swarms: dict[str, Swarm] | None = None,
        restic: Restic | None = None,
    ) -> None:
        if groups is None:
            from commands import GROUPS

            groups = GROUPS
        self.config = config
        prefix = config.matrix.prefix if config.matrix else "!"
        self.store = Store(config.data_dir / "coopbot.sqlite")
        self.metrics = Metrics()
        self.chat = chat or build_chat(config, self.store, self.metrics, console_as)
        self.swarms = swarms if swarms is not None else build_swarms(config)
        self.node_swarms = build_node_swarms(config)
        self.recipes = Recipes(config.abra_dir / "recipes")
        apps = Apps(config, self.store, self.swarms, self.recipes)
        self.self_app = apps.self_app = SelfApp(self.store, self.chat, config.self_app)
        backups = None
        if config.backups is not None:
            restic = restic or build_restic(config.backups, config.data_dir)
            backups = Backups(
                config.backups,
                apps,
                self.store,
                restic,
                data_dir=config.data_dir,
                metrics=self.metrics,
                node_swarms=self.node_swarms,
            )
        access = Access(config.access, self.chat)
        authoriser = Authoriser(access, self.store, self.metrics, prefix)
        self.jobs = JobManager(self.store, config.jobs, self.metrics, authoriser.reauthorise)
        schedule = Schedule(
            tasks_from(config),
            self.store,
            timezone=config.timezone,
            clock=lambda: datetime.fromtimestamp(clock(), UTC),
        )
        self.services = Services(
            config=config,
            chat=self.chat,
            store=self.store,
            registry=Registry(groups),
            access=access,
            metrics=self.metrics,
            apps=apps,
            jobs=self.jobs,
            upgrades=Upgrades(config, apps, self.store, backups),
            schedule=schedule,
            backups=backups,
            windows=build_windows(config, self.store, self.chat, apps, schedule.zone, clock),
        )
        self.dispatcher = Dispatcher(
            self.services, self.jobs, authoriser, clock=clock, sweep_interval=sweep_interval
        )
        self.gate = self.dispatcher.gate
        self.deadman = DeadMan(
            build_pings(config, self.metrics),
            self.dispatcher.run_scheduled,
            self.jobs,
            self.store,
            schedule.tasks,
            prefix,
        )
        self.scheduler = Scheduler(schedule, self.deadman.run, self._announce)
        self.watch: Watch | None = None
        if config.watch is not None:
            reporter = Reporter(
                self.chat,
                self.store,
                config.access.admins,
                zone=schedule.zone,
                quiet_hours=config.watch.quiet_hours,
                rooms={name: s.room for name, s in config.servers.items() if s.room},
                # other servers: the room that takes incident reports (matrix.rooms[].reports)
                room=lambda: self.dispatcher.rooms.report_room("incidents"),
            )
            disks = config.watch.disk_paths or (
                [config.backups.volumes_root] if config.backups else []
            )
            self.watch = Watch(config.watch, self.swarms, reporter, disk_paths=disks)

    async def can_report(self) -> bool:
        """Scheduled work waits until the home room can be written to."""
        return self.chat.alive() and await self.chat.home_room() is not None

    async def _announce(self, text: str) -> None:
        room_id = await self.chat.home_room()
        if room_id is not None:
            await self.chat.send(room_id, text)

    async def run(self) -> None:
        """Run until the chat loop ends (console EOF) or the task is cancelled.

        The chat loop, the proposal upkeep and the scheduler live in one task
        group: when the chat loop ends, the other two are cancelled with it."""
        instance = hold_data_dir(self.config.data_dir)  # one bot per data folder
        interrupted = self.store.interrupt_unfinished_jobs()
        # An upgrade of itself that restarted the bot is reported as such, not "interrupted".
        back = self.self_app.coming_back()
        interrupted = SelfApp.not_interrupted(interrupted, back)
        await self._detect_self()
        for job in interrupted:
            log.warning("job #%s (%s) was interrupted by the last stop", job.id, job.text)
            self.store.audit(
                job.sender,
                "job.interrupted",
                f"#{job.id} {job.text}",
                app=job.app,
                room_id=job.room_id,
                event_id=job.event_id,
            )
        try:
            async with self._web(), asyncio.TaskGroup() as group:
                upkeep = group.create_task(
                    supervised("proposal upkeep", lambda: self.gate.maintain(self.chat.alive)),
                    name="proposals",
                )
                schedule = group.create_task(
                    supervised("scheduler", lambda: self.scheduler.run(self.can_report)),
                    name="scheduler",
                )
                extra = [
                    group.create_task(
                        tell_interrupted(interrupted, self.services, self.can_report),
                        name="recovery",
                    ),
                    group.create_task(
                        supervised("housekeeping", self._housekeeping), name="housekeeping"
                    ),
                ]
                if back is not None:
                    report = self.self_app.report_back(back, self.services.apps, self.can_report)
                    extra.append(group.create_task(report, name="self-upgrade"))
                if self.watch is not None:
                    extra.append(group.create_task(supervised("watch", self.watch.run)))
                if self.config.pings.bot:
                    beat = lambda: self.deadman.heartbeat(self.config.pings.bot_interval)  # noqa: E731
                    extra.append(group.create_task(supervised("heartbeat", beat)))
                await self.chat.run(self.dispatcher.submit)
                # End of input (console): let the work that was asked for finish.
                await self.dispatcher.drain()
                upkeep.cancel()
                schedule.cancel()
                for task in extra:
                    task.cancel()
        finally:
            await self.close()
            instance.close()  # closing the file releases the lock

    async def _detect_self(self) -> None:
        """Which app this bot runs as, unless configured: asked once at start, of the
        daemons on a local socket (the one its container runs on), within a bound."""
        if self.self_app.domain is not None:
            return
        local = [
            swarm
            for name, swarm in self.swarms.items()
            if (server := self.config.servers.get(name)) is not None
            and server.docker_host.startswith("unix://")
        ]

        async def own_stack() -> str | None:
            for swarm in local:
                for ref in own_container_refs():
                    if found := await stack_of_container(swarm, ref):
                        return found
            return None

        try:
            async with asyncio.timeout(SELF_DETECT_TIMEOUT):
                envs, _ = await self.services.apps.inventory()
                await self.self_app.detect(envs, own_stack)
        except TimeoutError:
            log.warning("which app this bot runs as: no answer in %.0f s", SELF_DETECT_TIMEOUT)

    async def _housekeeping(self) -> None:
        """The seen-events table (and the kv keys of jobs finished long ago) is pruned
        now and every few hours, not only at start: a bot that runs for months must
        not grow it without end."""
        while True:
            self.store.forget_old_events()
            self.store.forget_old_job_keys()
            await self._sweep_oneoffs()
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)

    async def _sweep_oneoffs(self) -> None:
        """One-off backup and restore tasks that a stopped bot left on a server (with
        the repository password as a secret) are removed once they have ended."""
        for server, swarm in self.swarms.items():
            try:
                removed = await swarm.remove_ended_oneoffs()
            except SwarmError as e:
                log.warning("one-offs on %s not swept: %s", server, e)
                continue
            if removed:
                log.info("removed one-offs left on %s: %s", server, ", ".join(removed))

    @contextlib.asynccontextmanager
    async def _web(self) -> AsyncIterator[None]:
        if not self.config.web.listen:
            yield
            return
        web_config = self.config.web
        runner = await serve(
            self.metrics,
            self.chat.alive,
            self.config.web.listen,
            lambda: [*self.store.problems(), *self.chat.problems()],
            metrics_token=_secret(web_config.metrics_token_file),
            hooks=self._hooks(),
        )
        log.info("web: http://%s/healthz and /metrics", self.config.web.listen)
        try:
            yield
        finally:
            await runner.cleanup()

    def _hooks(self) -> Hooks | None:
        hooks = self.config.web.hooks
        if hooks.forgejo is None and hooks.alertmanager is None:
            return None
        recipes = self.config.abra_dir / "recipes"

        async def on_tags(recipe: str, tags: list[str]) -> None:
            # The whole check (it speaks only of what is new): a narrower entry point
            # would duplicate the scheduled check's remember-and-report logic.
            await self.dispatcher.run_scheduled("upgrades")

        async def on_alert(server: str, name: str, summary: str | None) -> None:
            if self.watch is not None:
                await self.watch.alert(server, name, summary)

        forgejo = hooks.forgejo.secret_file if hooks.forgejo else None
        alertmanager = hooks.alertmanager.token_file if hooks.alertmanager else None
        secret = _secret(forgejo)
        return Hooks(
            self.store,
            lambda name: "/" not in name and (recipes / name / ".git").exists(),
            on_tags,
            on_alert,
            forgejo_secret=secret.encode() if secret else None,
            alertmanager_token=_secret(alertmanager),
            max_body=hooks.max_body,
        )

    async def close(self) -> None:
        """Stop the jobs, then close every client this bot built."""
        await self.dispatcher.shutdown()
        await self.deadman.close()
        close = getattr(self.chat, "close", None)
        if close is not None:
            await asyncio.shield(close())
        for swarm in self.swarms.values():
            await swarm.close()
        for nodes in self.node_swarms.values():
            for swarm in nodes.values():
                await swarm.close()
        await asyncio.to_thread(self.recipes.close)
        self.store.close()
