"""Backup time: `!backup <app>` through the bot, beside plain `restic backup` of the
same folder, in the same run; and the bot's peak memory while it streams progress.

One private swarm dockerd runs a stack with one volume labelled for backups (no
hooks: the figure is restic plus the bot's own work). The benchmark fills the
volume with 20,000 files, 500 MB of random (incompressible) bytes. Each side backs
up into its own repository, created before the clock starts:

- full: the first backup into an empty repository; four rounds with fresh
  repositories, the sides taking turns going first;
- incremental: 1% of the files changed, then both sides back up again; six rounds,
  taking turns likewise.

Medians are compared.

The files are read once before timing, so neither side pays for a cold page cache,
and every timed run starts after `sync`, so none pays for another's writeback.
The bot is `bot.app.Bot` in this process behind an in-memory chat (bench/inproc.py):
its time runs from handing `!backup` to the dispatcher to the progress message
saying "snapshot". The bare side is `restic backup PATH` with the same repository
settings in the environment. Peak RSS is this process's resident set, sampled
every 20 ms while the bot's backups run (restic's own memory is the same on both
sides and not counted).
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
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
from tests.harness.dockerd import Dockerd
from tests.harness.recipes import make_app_env

DOMAIN = "files.bench.test"
STACK = DOMAIN.replace(".", "_")
PASSWORD = "bench-restic-password"
TARGET = 1.05
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


def fill(root: Path, files: int, total_bytes: int, seed: int = 1) -> None:
    """`files` files in 100 folders, sizes spread around the mean, `total_bytes` in all."""
    rng = random.Random(seed)
    weights = [rng.uniform(0.2, 1.8) for _ in range(files)]
    scale = total_bytes / sum(weights)
    for index, weight in enumerate(weights):
        folder = root / f"d{index % 100:02d}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{index:05d}.bin").write_bytes(os.urandom(int(weight * scale)))


def touch_some(root: Path, share: float, seed: int) -> int:
    rng = random.Random(seed)
    paths = sorted(root.rglob("*.bin"))
    chosen = rng.sample(paths, max(1, int(len(paths) * share)))
    for path in chosen:
        path.write_bytes(os.urandom(path.stat().st_size))
    return len(chosen)


def warm(root: Path) -> None:
    for path in root.rglob("*.bin"):
        path.read_bytes()


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


def bare_backup(repo: Path, password: Path, path: Path) -> float:
    os.sync()  # no writeback of earlier work competes with the timed run
    start = time.perf_counter()
    subprocess.run(
        ["restic", "backup", str(path)],
        env=restic_env(repo, password),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class BotSide:
    def __init__(self, workdir: Path, daemon: Dockerd, repo: Path, password: Path) -> None:
        abra = workdir / "abra"
        make_app_env(abra, "default", DOMAIN, "files")
        config = parse_config(
            {
                "data_dir": str(workdir / "bot-data"),
                "abra_dir": str(abra),
                "servers": {"default": {"docker_host": daemon.host}},
                "access": {"operators": ["@operator:local"]},
                "backups": {
                    "repository": str(repo),
                    "password_file": str(password),
                    "volumes_root": str(daemon.data_root / "volumes"),
                },
            }
        )
        self.chat = BenchChat()
        self.bot = Bot(config, chat=self.chat)
        self.count = 0
        self.peak_kib = 0
        self.edits: list[int] = []

    async def backup(self) -> float:
        self.count += 1
        event_id = f"$backup-{self.count}"
        sampling = True

        async def sample() -> None:
            while sampling:
                self.peak_kib = max(self.peak_kib, rss_kib())
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        os.sync()  # as for the bare side
        message = Message(ROOM, event_id, "@operator:local", f"!backup {DOMAIN}", 0)
        start = time.perf_counter()
        await self.bot.dispatcher.submit(message)
        at, text = await self.chat.wait(event_id, lambda t: "snapshot `" in t, 1800)
        sampling = False
        await sampler
        posted = [p for p in self.chat.posted.values() if p.reply_to == event_id]
        self.edits.append(sum(len(p.texts) for p in posted))
        if "✅" not in text:
            raise RuntimeError(f"the bot's backup did not succeed:\n{text}")
        return at - start

    async def close(self) -> None:
        await self.bot.dispatcher.shutdown()
        await self.bot.services.apps.swarm("default").close()
        self.bot.store.close()


async def main() -> None:
    args = arguments(
        __doc__ or "", files=20_000, megabytes=500, full_rounds=4, incremental_rounds=6
    )
    print(f"machine: {machine()}; restic: {restic_version()}")
    with dockerd("backup", args.keep) as daemon:
        workdir = daemon.workdir.parent
        daemon.import_image("local/busybox:1.0")
        compose = workdir / "compose.yml"
        compose.write_text(COMPOSE)
        daemon.cli("stack", "deploy", "-c", str(compose), STACK, env={"STACK_NAME": STACK})
        swarm = Swarm(daemon.host)
        if not (await swarm.wait_converged(STACK, timeout=120, monitor=0)).ok:
            raise RuntimeError("the benchmark stack did not start")
        await swarm.close()
        data = daemon.data_root / "volumes" / f"{STACK}_data" / "_data"
        started = time.perf_counter()
        fill(data, args.files, args.megabytes * 1_000_000)
        print(f"generated {args.files} files, {args.megabytes} MB in "
              f"{time.perf_counter() - started:.1f}s")  # fmt: skip
        password = workdir / "password"
        password.write_text(PASSWORD + "\n")
        bot_repo, bare_repo = workdir / "repo-bot", workdir / "repo-bare"
        warm(data)
        before_kib = rss_kib()

        full_bot, full_bare = [], []
        side: BotSide | None = None
        for round_ in range(args.full_rounds):
            init_repo(bot_repo, password)
            init_repo(bare_repo, password)
            if side is not None:
                await side.close()
            side = BotSide(workdir / f"bot-{round_}", daemon, bot_repo, password)
            if round_ % 2 == 0:
                full_bot.append(await side.backup())
                full_bare.append(bare_backup(bare_repo, password, data))
            else:
                full_bare.append(bare_backup(bare_repo, password, data))
                full_bot.append(await side.backup())
            print(f"full {round_ + 1}: bot {full_bot[-1]:.2f}s, bare {full_bare[-1]:.2f}s")
        assert side is not None
        inc_bot, inc_bare = [], []
        for round_ in range(args.incremental_rounds):
            changed = touch_some(data, 0.01, seed=round_)
            warm(data)
            if round_ % 2 == 0:
                inc_bot.append(await side.backup())
                inc_bare.append(bare_backup(bare_repo, password, data))
            else:
                inc_bare.append(bare_backup(bare_repo, password, data))
                inc_bot.append(await side.backup())
            print(f"incremental {round_ + 1} ({changed} files changed): "
                  f"bot {inc_bot[-1]:.2f}s, bare {inc_bare[-1]:.2f}s")  # fmt: skip
        await side.close()

    full = median(full_bot) / median(full_bare)
    inc = median(inc_bot) / median(inc_bare)
    print()
    print(
        f"full backup:        bot {median(full_bot):.2f}s  bare restic {median(full_bare):.2f}s"
        f"  ratio {full:.3f} (target ≤ {TARGET})"
    )
    print(
        f"incremental backup: bot {median(inc_bot):.2f}s  bare restic {median(inc_bare):.2f}s"
        f"  ratio {inc:.3f} (target ≤ {TARGET})"
    )
    print(f"bot peak RSS while streaming progress: {side.peak_kib / 1024:.1f} MiB "
          f"(before the backups: {before_kib / 1024:.1f} MiB; "
          f"ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB); "
          f"progress texts shown per backup: {side.edits}")  # fmt: skip
    result("backup_full_ratio", full, f"<={TARGET}")
    result("backup_incremental_ratio", inc, f"<={TARGET}")
    result("backup_peak_rss_mib", side.peak_kib / 1024, "report")


def restic_version() -> str:
    out = subprocess.run(["restic", "version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


if __name__ == "__main__":
    asyncio.run(main())
