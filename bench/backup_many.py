"""`!backup all` of many small apps on one node, against one bare `restic backup` of
the same data, in one run (issue 16's figure: target <= 1.5x).

One private swarm dockerd runs `--apps` stacks (50), each one service with one volume
labelled for backups (no hooks), each volume `--files` small files of random bytes
(20 x 4 kB). The bot is `bot.app.Bot` in this process behind an in-memory chat
(bench/inproc.py); its time runs from handing `!backup all` to the dispatcher to the
final "💾 Backups:" report. It makes one snapshot per app, tagged per app, as always
(restore and retention stay per app). The bare side is one `restic backup` of the 50
volume folders at once: one snapshot, one restic start-up, one key derivation.
Every side writes into a fresh repository created before the clock starts; the sides
take turns going first; `sync` before each timed run; medians are compared.

Each restic process pays its start-up and the repository key's scrypt derivation
(about 0.3-0.5 s of CPU here); the bot runs two per app (`backup`, then `stats` for the
app's repository size), so its floor is apps x 2 x that / backups.parallel, while the
bare side pays it once. The figure is reported with the parallelism used
(`--parallel`, the config key backups.parallel).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path

from bench.common import arguments, machine, median, result
from bench.inproc import ROOM, BenchChat, dockerd
from bot.app import Bot
from bot.config import parse_config
from bot.core.chat import Message
from bot.ops.swarm import Swarm
from tests.harness.recipes import make_app_env

PASSWORD = "bench-restic-password"
TARGET = 1.5
COMPOSE = """version: "3.8"
services:
  app:
    image: local/busybox:1.0
    command: sleep 3600
    stop_grace_period: 1s
    volumes: [data:/data]
    deploy:
      endpoint_mode: dnsrr
      labels:
        - "backupbot.backup=true"
        - "coop-cloud.${STACK_NAME}.version=1.0.0+1.0"
volumes:
  data:
"""


def restic_env(repo: Path, password: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME", "/root"),
        "RESTIC_REPOSITORY": str(repo),
        "RESTIC_PASSWORD_FILE": str(password),
        "RESTIC_CACHE_DIR": str(repo.parent / f"{repo.name}-cache"),
    }


def init_repo(repo: Path, password: Path) -> None:
    shutil.rmtree(repo, ignore_errors=True)
    shutil.rmtree(repo.parent / f"{repo.name}-cache", ignore_errors=True)
    subprocess.run(
        ["restic", "init"], env=restic_env(repo, password), check=True, capture_output=True
    )


def bare_backup(repo: Path, password: Path, folders: list[Path]) -> float:
    os.sync()
    start = time.perf_counter()
    subprocess.run(
        ["restic", "backup", "--", *map(str, folders)],
        env=restic_env(repo, password),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


class BotSide:
    def __init__(
        self,
        workdir: Path,
        host: str,
        volumes: Path,
        repo: Path,
        password: Path,
        apps: list[str],
        parallel: int,
    ) -> None:
        abra = workdir / "abra"
        for domain in apps:
            make_app_env(abra, "default", domain, "files")
        backups: dict[str, object] = {
            "repository": str(repo),
            "password_file": str(password),
            "volumes_root": str(volumes),
            "schedule": None,
            "check_schedule": None,
            "drill_schedule": None,
        }
        if parallel:  # the config key; 0: the bot's default
            backups["parallel"] = parallel
        config = parse_config(
            {
                "data_dir": str(workdir / "bot-data"),
                "abra_dir": str(abra),
                "servers": {"default": {"docker_host": host}},
                "access": {"operators": ["@operator:local"]},
                "upgrades": {"check_schedule": None},
                "backups": backups,
            }
        )
        self.chat = BenchChat()
        self.bot = Bot(config, chat=self.chat)

    async def backup_all(self, apps: int) -> float:
        os.sync()
        message = Message(ROOM, "$backup-all", "@operator:local", "!backup all", 0)
        start = time.perf_counter()
        await self.bot.dispatcher.submit(message)
        at, text = await self.chat.wait("$backup-all", lambda t: "💾 Backups:" in t, 3600)
        if f"{apps} of {apps} app(s) backed up." not in text:
            raise RuntimeError(f"the bot's backups did not all succeed:\n{text[:3000]}")
        return at - start

    async def close(self) -> None:
        await self.bot.dispatcher.shutdown()
        await self.bot.services.apps.swarm("default").close()
        self.bot.store.close()


async def main() -> None:
    args = arguments(__doc__ or "", apps=50, files=20, kilobytes=4, rounds=3, parallel=0)
    with dockerd("backup-many", args.keep) as daemon:
        workdir = daemon.workdir.parent
        daemon.import_image("local/busybox:1.0")
        compose = workdir / "compose.yml"
        compose.write_text(COMPOSE)
        domains = [f"app{i:02d}.bench.test" for i in range(args.apps)]
        stacks = [d.replace(".", "_") for d in domains]
        for stack in stacks:
            daemon.cli("stack", "deploy", "-c", str(compose), stack, env={"STACK_NAME": stack})
        swarm = Swarm(daemon.host)
        for stack in stacks:
            if not (await swarm.wait_converged(stack, timeout=600, monitor=0)).ok:
                raise RuntimeError(f"the benchmark stack {stack} did not start")
        await swarm.close()
        volumes = daemon.data_root / "volumes"
        folders = [volumes / f"{stack}_data" / "_data" for stack in stacks]
        for folder in folders:
            for index in range(args.files):
                (folder / f"f{index:03d}.bin").write_bytes(os.urandom(args.kilobytes * 1024))
        for folder in folders:  # read once: no side pays for a cold page cache
            for f in folder.iterdir():
                f.read_bytes()
        password = workdir / "password"
        password.write_text(PASSWORD + "\n")
        bot_times, bare_times = [], []
        parallel = str(args.parallel or "default")
        for round_ in range(args.rounds):
            bot_repo, bare_repo = workdir / f"repo-bot-{round_}", workdir / f"repo-bare-{round_}"
            init_repo(bot_repo, password)
            init_repo(bare_repo, password)
            side = BotSide(
                workdir / f"bot-{round_}",
                daemon.host,
                volumes,
                bot_repo,
                password,
                domains,
                args.parallel,
            )
            try:
                if round_ % 2 == 0:
                    bot_times.append(await side.backup_all(args.apps))
                    bare_times.append(bare_backup(bare_repo, password, folders))
                else:
                    bare_times.append(bare_backup(bare_repo, password, folders))
                    bot_times.append(await side.backup_all(args.apps))
            finally:
                await side.close()
            print(f"round {round_ + 1}: bot {bot_times[-1]:.2f}s, bare {bare_times[-1]:.2f}s",
                  flush=True)  # fmt: skip
    bot, bare = median(bot_times), median(bare_times)
    print(
        f"\n{machine()}; {args.apps} apps x {args.files} files x {args.kilobytes} kB, "
        f"backups.parallel {parallel}, {args.rounds} rounds, medians:"
    )
    print(f"  !backup all (one snapshot per app): {bot:.2f} s")
    print(f"  one bare restic backup of it all:   {bare:.2f} s")
    print(f"  ratio {bot / bare:.2f} (target <= {TARGET})")
    result("backup_many_ratio", bot / bare, f"<={TARGET}")


if __name__ == "__main__":
    asyncio.run(main())
