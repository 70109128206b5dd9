"""Backing up three apps on three nodes: side by side (as `!backup all` runs them)
against one after another, and against one bare `restic backup` of the same data on
one node, in one run.

The three-node test swarm (tests/harness/multinode.py: a manager and two workers, each
a dockerd in its own network namespace, all on this machine) runs one app per node,
pinned by hostname, each with one volume of the same size of random bytes. The
bot's backups feature (bot.features.backups.Backups with the real Swarm and Restic
adapters, no chat) backs them up: the manager's app through volumes_root, the workers'
as one-off swarm tasks there (restic in a busybox+restic image). Every side writes into
a fresh repository created before the clock starts; the sides take turns going first.
The bare side is `restic backup` of the three volume folders at once, on the host.

All three "nodes" share this machine's cores and disk: side by side is bounded by the
cores (restic is CPU-bound on random data), not by three machines' worth of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import arguments, machine, median, result
from bot.config import BackupsConfig
from bot.core.store import Store
from bot.features.backups import Backups
from bot.ops.abra import AppEnv
from bot.ops.restic import Restic
from bot.ops.swarm import Swarm
from tests.harness.multinode import RESTIC_IMAGE, MultiNodeSwarm

PASSWORD = "bench-restic-password"
COMPOSE = """version: "3.8"
services:
  app:
    image: local/busybox:1.0
    command: sleep 3600
    stop_grace_period: 1s
    volumes: [data:/data]
    deploy:
      endpoint_mode: dnsrr
      placement: {{constraints: ["node.hostname == {node}"]}}
      labels: ["backupbot.backup=true"]
volumes:
  data:
"""


class Sink:
    async def update(self, markdown: str) -> None:
        pass


class OneServer:
    """What Backups uses of Apps: the server's Swarm adapter."""

    def __init__(self, swarm: Swarm) -> None:
        self._swarm = swarm

    def swarm(self, server: str) -> Swarm:
        return self._swarm


async def run(args: Any, workdir: Path) -> None:
    swarm_nodes = MultiNodeSwarm(workdir / "swarm")
    swarm_nodes.start()
    try:
        swarm_nodes.import_image("local/busybox:1.0")
        swarm_nodes.import_restic_image()
        envs = []
        for node in swarm_nodes.nodes:
            domain = f"{node.hostname}.bench.test"
            stack = domain.replace(".", "_")
            compose = workdir / f"{stack}.yml"
            compose.write_text(COMPOSE.format(node=node.hostname))
            swarm_nodes.manager.cli("stack", "deploy", "-c", str(compose), stack)
            envs.append(AppEnv(domain, "default", workdir / f"{domain}.env", "bench", None, {}))
        folders = []
        for node, env in zip(swarm_nodes.nodes, envs, strict=True):
            data = node.volumes_root / f"{env.stack_name}_data" / "_data"
            for _ in range(600):
                if data.exists():
                    break
                await asyncio.sleep(0.1)
            for index in range(args.files):
                (data / f"f{index}.bin").write_bytes(
                    os.urandom(args.megabytes * 2**20 // args.files)
                )
            folders.append(data)
        await asyncio.to_thread(subprocess.run, ["sync"], check=True)
        for folder in folders:  # read once: no side pays for a cold page cache
            for f in folder.iterdir():
                f.read_bytes()
        password = workdir / "password"
        password.write_text(PASSWORD + "\n")
        swarm = Swarm(swarm_nodes.manager.host)
        store = Store(workdir / "bench.sqlite")
        times: dict[str, list[float]] = {"parallel": [], "serial": [], "bare": []}
        try:
            for round_no in range(args.rounds):
                order = ["parallel", "serial", "bare"]
                order = order[round_no % 3 :] + order[: round_no % 3]
                for side in order:
                    repo = workdir / f"repo-{side}-{round_no}"
                    restic = Restic(
                        str(repo), password, cache_dir=workdir / f"cache-{side}-{round_no}"
                    )
                    await restic.init()
                    await asyncio.to_thread(subprocess.run, ["sync"], check=True)
                    config = BackupsConfig.model_validate(
                        {
                            "repository": str(repo),
                            "password_file": str(password),
                            "volumes_root": str(swarm_nodes.manager.volumes_root),
                            "remote_image": RESTIC_IMAGE,
                        }
                    )
                    backups = Backups(config, OneServer(swarm), store, restic, data_dir=workdir)  # type: ignore[arg-type]
                    started = time.monotonic()
                    if side == "bare":
                        bare_env = {
                            **os.environ,
                            "RESTIC_REPOSITORY": str(repo),
                            "RESTIC_PASSWORD_FILE": str(password),
                        }
                        await asyncio.to_thread(
                            subprocess.run,
                            [
                                "restic",
                                "backup",
                                "--json",
                                "--cache-dir",
                                str(workdir / f"bare-cache-{round_no}"),
                                "--",
                                *map(str, folders),
                            ],
                            env=bare_env,
                            check=True,
                            capture_output=True,
                        )
                    elif side == "serial":
                        for app in envs:
                            await backups.backup(app, Sink(), "bench")
                    else:

                        async def one_after_another(
                            group: list[AppEnv], backups: Backups = backups
                        ) -> None:
                            for app in group:
                                await backups.backup(app, Sink(), "bench")

                        async with asyncio.TaskGroup() as tasks:
                            for group in await backups.by_node(envs):
                                tasks.create_task(one_after_another(group))
                    took = time.monotonic() - started
                    times[side].append(took)
                    print(f"round {round_no + 1} {side}: {took:.2f} s", flush=True)
        finally:
            store.close()
            await swarm.close()
        p, s, b = (median(times[k]) for k in ("parallel", "serial", "bare"))
        print(
            f"\n{machine()}; 3 apps x {args.megabytes} MB ({args.files} files each), "
            f"{args.rounds} rounds, medians:"
        )
        print(f"  side by side (one-off tasks on the workers): {p:.2f} s")
        print(f"  one after another:                          {s:.2f} s")
        print(f"  bare restic, the same data on one node:     {b:.2f} s")
        result("multinode_backup_parallel_vs_serial", p / s, "< 1 (lower is better)")
        result("multinode_backup_parallel_vs_bare", p / b, "report")
    finally:
        swarm_nodes.stop()


def main() -> None:
    args = arguments(__doc__ or "", megabytes=100, files=20, rounds=3)
    workdir = Path(tempfile.mkdtemp(prefix="bench-multinode-"))
    try:
        asyncio.run(run(args, workdir))
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            with contextlib.suppress(Exception):
                shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
