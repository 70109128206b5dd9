"""Backups where the volume lives, on a swarm of several nodes.

A named volume of the local driver exists on one node only: the one its task runs on.
The bot reads `backups.volumes_root` on its own node; for an app whose data is on
another node, restic runs there instead, as a one-off swarm task (bot/ops/swarm/
oneoff.py): placed on that node by id, each volume mounted read-only at the very path
it would have under volumes_root (so snapshots look the same wherever they were made,
and restores and `!snapshots` need no second scheme), the repository and password
handed in as swarm secrets (removed afterwards), restic's `--json` lines read back
from the task's logs. The image is `backups.remote_image` (the bot's own image has
restic and a shell).

- Which node holds a volume: the node of the running task that mounts it (the manager
  answers; swarm has no cluster-wide volume list). One snapshot reads one node: an app
  whose volumes are spread over several nodes is refused with that reason.
- Hooks (backupbot pre/post) run in the labelled service's container on its node,
  through that node's own docker endpoint (`servers.<name>.nodes`; `exec` does not go
  through a manager). An app with hooks on a node without one is refused before anything
  runs: a backup without its pre-hook (a database dump) would be reported as good.
- Every snapshot of a multi-node swarm carries the tag `node=<hostname>`: `!backups`
  shows where the data was read from.
- A local repository path is bind-mounted at the same path: it must be shared storage
  that node sees (s3:, sftp:, rest: repositories need nothing).
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from bot.errors import UserError
from bot.features.backups.repository import Repository, restic_environment
from bot.features.backups.targets import BackupTarget, Location
from bot.fmt import code
from bot.ops.abra import AppEnv
from bot.ops.restic import BackupSummary, ResticError, parse_backup_line
from bot.ops.restic import Progress as ResticProgress
from bot.ops.swarm import Swarm, SwarmError, eligible
from bot.ops.swarm.oneoff import OneOffMount
from bot.redact import scrub_credentials

NODE_TAG = "node="
# As restore.py names them (not imported: restore.py builds on this module).
RESTORE_DIR = "coopbot-restore-"


def _is_local_repository(repository: str) -> bool:
    # restic's backends are "<scheme>:..."; anything else is a path.
    return repository.startswith("/") or ":" not in repository.split("/", 1)[0]


class Remote(Repository):
    """The part of `Backups` that finds the node of an app's data and backs it up there."""

    node_swarms: Mapping[str, Mapping[str, Swarm]]  # server -> node hostname -> its daemon

    async def locate(self, env: AppEnv) -> Location | None:
        """Where the app's volumes are, on a swarm of several nodes; None on a single
        node (the bot reads its own volumes_root, as before)."""
        swarm = self.apps.swarm(env.server)
        nodes = await swarm.nodes()
        if len(nodes) < 2:
            return None
        own = str(((await swarm.info()).get("Swarm") or {}).get("NodeID", ""))
        prefix = env.stack_name + "_"
        holders: dict[str, set[str]] = {}
        for p in await swarm.placements(env.stack_name):
            # No running task (scaled to 0, its node drained): a service its
            # constraints allow on one node only still has its data there.
            allowed = eligible(p.constraints, nodes)
            held = p.nodes or ((allowed[0].id,) if len(allowed) == 1 else ())
            for volume in p.local_volumes:
                if volume.startswith(prefix):
                    holders.setdefault(volume, set()).update(held)
        names = {n.id: n.hostname for n in nodes}
        where = {node for held in holders.values() for node in held}
        if len(where) > 1:
            spread = ", ".join(
                f"{v} on {', '.join(sorted(names.get(n, n) for n in held))}"
                for v, held in sorted(holders.items())
            )
            raise UserError(
                f"{env.domain} is not backed up: its volumes are on several nodes ({spread}); "
                "a snapshot reads one node. Pin its services to one node."
            )
        node = next(iter(where), own)  # no running task: the copy on the bot's node
        volumes = tuple(sorted(v[len(prefix) :] for v in holders if v[len(prefix) :]))
        return Location(node, names.get(node, node), volumes, remote=node != own)

    async def by_node(self, envs: list[AppEnv]) -> list[list[AppEnv]]:
        """The apps grouped by the node their data is on (in their order): `!backup all`
        runs the groups side by side, each one app after another. One group on a
        single node; an app whose node cannot be told is a group of its own (its
        backup then says why)."""
        groups: dict[tuple[str, str], list[AppEnv]] = {}
        for env in envs:
            try:
                where = await self.locate(env)
                key = (env.server, where.node_id if where is not None else "")
            except (UserError, SwarmError):
                key = (env.server, "?" + env.domain)
            groups.setdefault(key, []).append(env)
        return list(groups.values())

    def hook_swarm(self, target: BackupTarget) -> Swarm:
        if not any(spec.pre_hook or spec.post_hook for spec in target.specs):
            return self.apps.swarm(target.env.server)  # no hook: no endpoint needed
        try:
            return self.hook_swarm_for(target.env, target.location)
        except UserError as e:
            raise UserError(f"{target.env.domain} is not backed up: {e}") from None

    def hook_swarm_for(self, env: AppEnv, where: Location | None) -> Swarm:
        """The daemon to run the app's hooks through: the manager when the data is on
        the bot's node, else that node's own endpoint."""
        if where is None or not where.remote:
            return self.apps.swarm(env.server)
        found = self.node_swarms.get(env.server, {}).get(where.hostname)
        if found is None:
            raise UserError(
                f"its hooks must run on {where.hostname}, and servers.{env.server}.nodes "
                "names no docker endpoint for it (exec does not go through the manager)."
            )
        return found

    async def restic_backup(
        self,
        target: BackupTarget,
        on_progress: Callable[[ResticProgress], Awaitable[None]],
    ) -> BackupSummary:
        where = target.location
        tags = target.tags if where is None else [*target.tags, NODE_TAG + where.hostname]
        if where is None or not where.remote:
            return await self.restic.backup(target.paths, tags, on_progress)
        return await self._remote_backup(target, where, tags, on_progress)

    def _node_swarm(self, env: AppEnv, where: Location, why: str) -> Swarm:
        found = self.node_swarms.get(env.server, {}).get(where.hostname)
        if found is None:
            raise UserError(
                f"{env.domain}: {why} on {where.hostname}, and servers.{env.server}.nodes "
                "names no docker endpoint for it."
            )
        return found

    def _secrets(self) -> tuple[dict[str, str], str, list[OneOffMount]]:
        """The repository and password (and env_file) as one-off secrets; the shell
        prefix that runs restic with them; the bind of a local repository path."""
        repository = self.config.repository
        mounts = []
        if _is_local_repository(repository):
            mounts.append(OneOffMount(repository, repository, read_only=False, bind=True))
        password = self.config.password_file.read_text().splitlines()[0]
        secrets = {"repository": repository, "password": password}
        extra = restic_environment(self.config.env_file)
        script = ""
        if extra:  # S3 keys and the like: a file of exports, never on a command line
            secrets["env"] = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in extra.items())
            script = ". /run/secrets/env && "
        return secrets, script, mounts

    async def _remote_shell(
        self, env: AppEnv, where: Location, purpose: str, script: str, mounts: list[OneOffMount]
    ) -> None:
        """Run a shell script (restic reached as `$RESTIC`) once on the node."""
        image = self.config.remote_image
        if image is None:
            raise UserError(
                f"{env.domain}: its data is on {where.hostname}, and backups.remote_image "
                "(an image with restic and sh) is not set."
            )
        secrets, prefix, repo_mounts = self._secrets()
        restic = (
            "restic --no-cache --repository-file=/run/secrets/repository "
            "--password-file=/run/secrets/password"
        )
        try:
            result = await self.apps.swarm(env.server).run_oneoff(
                purpose=purpose,
                node_id=where.node_id,
                image=image,
                command=["sh", "-c", f"{prefix}RESTIC={shlex.quote(restic)}; {script}"],
                mounts=[*mounts, *repo_mounts],
                secrets=secrets,
            )
        except SwarmError as e:
            raise UserError(f"{purpose} on {where.hostname} failed: {e}") from None
        if result.exit_code != 0:
            raise UserError(
                f"{purpose} on {where.hostname} exited {result.exit_code}: "
                + _last_words([*result.stdout, *result.stderr])
            )

    async def restore_remote(
        self, env: AppEnv, where: Location, snapshot_id: str, dest: Path, token: str, aside: Path
    ) -> None:
        """What restore.py's _restore_one does, on the node that holds the volume: the
        snapshot restored beside `_data` (in the volume's own folder, bind-mounted at
        its volumes_root path), symlinks on the way refused, then swapped in by renames,
        the previous data moved to `aside`."""
        root = self.config.volumes_root
        volume = dest.relative_to(root).parts[0]
        folder = root / volume
        node_dir = await self._node_swarm(
            env, where, "restoring needs the volume's folder"
        ).volume_dir(volume)
        staging = folder / f"{RESTORE_DIR}{token}"
        staged = staging / dest.relative_to("/")
        q = shlex.quote
        checks = " ".join(
            f"[ -L {q(str(f))} ] && echo {q(f'{f} is a symbolic link: refusing')} && exit 3;"
            for f in [dest.parent, *dest.parent.parents]
            if f != folder and folder in f.parents
        )
        script = (
            f"{checks} "
            f"$RESTIC restore --target={q(str(staging))} --include={q(str(dest))} "
            f"-- {q(snapshot_id)}"
            f" || {{ rm -rf {q(str(staging))}; exit 1; }}; "
            f"[ -e {q(str(staged))} ] || {{ rm -rf {q(str(staging))}; "
            f"echo {q(f'{dest} is not in snapshot {snapshot_id}')}; exit 4; }}; "
            f"mkdir -p {q(str(aside.parent))} && "
            f"{{ [ ! -e {q(str(dest))} ] || mv {q(str(dest))} {q(str(aside))}; }} && "
            f"mv {q(str(staged))} {q(str(dest))} && rm -rf {q(str(staging))}"
        )
        mounts = [OneOffMount(node_dir, str(folder), read_only=False, bind=True)]
        await self._remote_shell(env, where, "restore", script, mounts)

    async def remove_remote(self, env: AppEnv, where: Location, paths: list[Path]) -> None:
        """Delete folders (the kept copies after a restore) inside volumes on the node."""
        root = self.config.volumes_root
        mounts, seen = [], set()
        for path in paths:
            volume = path.relative_to(root).parts[0]
            if volume not in seen:
                seen.add(volume)
                node_dir = await self._node_swarm(env, where, "cleaning up").volume_dir(volume)
                mounts.append(OneOffMount(node_dir, str(root / volume), read_only=False, bind=True))
        script = "rm -rf " + " ".join(shlex.quote(str(p)) for p in paths)
        await self._remote_shell(env, where, "cleanup", script, mounts)

    async def _ensure_repository(self) -> None:
        """The one-off's restic cannot create the repository (two nodes' first backups
        would each write a key): the bot makes sure it exists first, once per process
        (a look costs a restic start-up and key derivation; `!backup all` of many apps
        on other nodes paid it for each)."""
        if self._repo_created:  # made, or seen, by this process
            return
        try:
            await self.restic.snapshots(["coopbot-never-a-tag"])
        except ResticError as e:
            if e.kind != "no_repository":
                raise
            await self._create_repository()
            return
        self._repo_created = True

    async def _remote_backup(
        self,
        target: BackupTarget,
        where: Location,
        tags: list[str],
        on_progress: Callable[[ResticProgress], Awaitable[None]],
    ) -> BackupSummary:
        env, image = target.env, self.config.remote_image
        if image is None:
            raise UserError(
                f"{env.domain} is not backed up: its data is on {where.hostname}, and "
                "backups.remote_image (an image with restic and sh) is not set."
            )
        await self._ensure_repository()
        root = self.config.volumes_root
        mounts = [
            OneOffMount(f"{env.stack_name}_{v}", str(root / f"{env.stack_name}_{v}" / "_data"))
            for v in where.volumes
        ]
        secrets, prefix, repo_mounts = self._secrets()
        mounts += repo_mounts
        script = prefix + "exec restic"
        args = [
            "backup",
            "--json",
            "--no-cache",  # a fresh container each time: nothing to keep
            "--repository-file=/run/secrets/repository",
            "--password-file=/run/secrets/password",
            f"--host={where.hostname}",
            *(f"--tag={t}" for t in tags),
            "--",
            *(str(p) for p in target.paths),
        ]
        summary: BackupSummary | None = None
        warnings: list[str] = []

        async def on_line(line: str) -> None:
            nonlocal summary
            item = parse_backup_line(line)
            if isinstance(item, ResticProgress):
                await on_progress(item)
            elif isinstance(item, BackupSummary):
                summary = item
            elif isinstance(item, str) and item not in warnings:
                warnings.append(item)

        try:
            result = await self.apps.swarm(env.server).run_oneoff(
                purpose="backup",
                node_id=where.node_id,
                image=image,
                command=["sh", "-c", f'{script} "$@"', "restic", *args],
                mounts=mounts,
                secrets=secrets,
                on_line=on_line,
            )
        except SwarmError as e:
            raise UserError(f"{env.domain} is not backed up (on {where.hostname}): {e}") from None
        for line in result.stderr:
            item = parse_backup_line(line)
            if isinstance(item, str) and item not in warnings:
                warnings.append(item)
        if summary is None or result.exit_code not in (0, 3):
            raise UserError(
                f"{env.domain} is not backed up: restic on {where.hostname} exited "
                f"{result.exit_code}: {_last_words(result.stderr)}"
            )
        if result.exit_code == 3 and not warnings:
            warnings.append("restic could not read some files (exit 3)")
        return dataclasses.replace(summary, warnings=warnings[:50])


def _last_words(lines: list[str]) -> str:
    """A one-off's last lines for the room: as code (they quote paths and file names
    from the volume) and without credentials (restic may name the repository)."""
    tail = scrub_credentials("; ".join(lines[-3:])[:500])
    return code(tail) if tail else "no output"
