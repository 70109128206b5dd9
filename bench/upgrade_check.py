"""`!upgrades` (the upgrade check) with N = 10, 25, 50 deployed apps, beside serial baselines.

One private swarm dockerd and one local registry (Debian's docker-registry on
127.0.0.1). 50 recipe repos, each with four releases (1.0.0, 1.0.1, 1.1.0, 2.0.0:
a patch, a minor and a major step) and a release note per release. For each N, apps
1..N each have a .env (its own recipe) and a deployed stack of one tiny service
(busybox `sleep`, dnsrr, no ports) running 1.0.0 with its own image
`REGISTRY/bench/appNN:1.0`, pinned by digest (`docker stack deploy` resolves it), so
the check asks the registry once per app. Each check finds 3 newer releases with
their notes, and no drift. `upgrades.fetch_recipes` is off (no remotes here;
`git fetch` is network time, the same for any tool).

Timed from handing `!upgrades` to the dispatcher to the reply (bot in-process,
in-memory chat), in the same run and on the same apps as:
- the bot with `upgrades.concurrency: 1` (the same code, one app at a time);
- a serial loop as a script would do it: per app, `git tag` in its recipe repo and
  one registry query for its image (`docker manifest inspect`, Debian's CLI).
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.apps_inventory import domain, fit, recipe, stack
from bench.common import arguments, machine, median, result
from bench.inproc import BenchChat, InprocBot, dockerd
from bot.app import Bot
from bot.config import parse_config
from bot.ops.swarm import DOCKER_CLI
from tests.harness.dockerd import Dockerd
from tests.harness.recipes import make_app_env, make_recipe
from tests.harness.registry import Registry

BASE_IMAGE = "local/busybox:1.0"
SIZES = (10, 25, 50)
TAGS = ("1.0.0+1.0", "1.0.1+1.0", "1.1.0+1.1", "2.0.0+2.0")
DEPLOYED, NEWEST = TAGS[0], TAGS[-1]
COMPOSE = f"""version: "3.8"
services:
  app:
    image: ${{IMAGE}}
    command: sleep 3600
    stop_grace_period: 1s
    deploy:
      endpoint_mode: dnsrr
      labels:
        - "coop-cloud.${{STACK_NAME}}.version={DEPLOYED}"
"""


def image(registry: str, index: int) -> str:
    return f"{registry}/bench/app{index:02d}:1.0"


class CheckBot(InprocBot):
    """InprocBot with an `upgrades:` section of our own."""

    def __init__(self, workdir: Path, abra: Path, host: str, concurrency: int) -> None:
        config = parse_config(
            {
                "data_dir": str(workdir / f"bot-data-{concurrency}"),
                "abra_dir": str(abra),
                "servers": {"default": {"docker_host": host}},
                "upgrades": {"fetch_recipes": False, "concurrency": concurrency},
            }
        )
        self.chat = BenchChat()
        self.bot = Bot(config, chat=self.chat)
        self._ids = itertools.count(1)


async def bot_check(bot: InprocBot, n: int) -> float:
    event_id, start = await bot.command("!upgrades")
    end, text = await bot.chat.wait(event_id, lambda _: True, timeout=300)
    rows = [line for line in text.splitlines() if f"| {DEPLOYED} → **{NEWEST}** |" in line]
    clean = f"{n} deployed app(s), {n} can be upgraded, 0 with image drift" in text
    if len(rows) != n or not clean or "\n- ⚠" in text:
        raise RuntimeError(f"!upgrades did not report {n} clean upgrades:\n{text}")
    return end - start


def by_hand(daemon: Dockerd, recipes: Path, registry: str, n: int) -> float:
    env: dict[str, Any] = {**daemon.cli_env, "DOCKER_HOST": daemon.host}
    start = time.perf_counter()
    for index in range(n):
        subprocess.run(["git", "tag"], cwd=recipes / recipe(index), capture_output=True, check=True)
        subprocess.run(
            [DOCKER_CLI, "manifest", "inspect", "--insecure", image(registry, index)],
            env=env,
            capture_output=True,
            check=True,
        )
    return time.perf_counter() - start


def deploy_stacks(daemon: Dockerd, compose: Path, registry: str, first: int, upto: int) -> None:
    for index in range(first, upto):
        env = {"STACK_NAME": stack(index), "IMAGE": image(registry, index)}
        daemon.cli("stack", "deploy", "-c", str(compose), stack(index), env=env)
    deadline = time.monotonic() + 300
    while True:
        out = daemon.cli("service", "ls", "--format", "{{.Replicas}}").stdout.split()
        if out.count("1/1") == upto:
            names = [f"{stack(index)}_app" for index in range(upto)]
            spec = "{{.Spec.TaskTemplate.ContainerSpec.Image}}"
            images = daemon.cli("service", "inspect", "--format", spec, *names).stdout.split()
            if not all("@sha256:" in ref for ref in images):
                raise RuntimeError(f"images not pinned by digest: {images}")
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{upto} services not running after 300 s:\n{out}")
        time.sleep(1)


async def main() -> None:
    args = arguments(__doc__ or "", repeats=5)
    rows: list[tuple[int, list[float], list[float], list[float]]] = []
    with dockerd("upgrades", args.keep) as daemon:
        workdir = daemon.workdir.parent
        reg = Registry(Path(tempfile.mkdtemp(prefix="registry-", dir=workdir)))
        reg.start()
        bots: list[InprocBot] = []
        deployed = 0
        try:
            registry = reg.host_port
            daemon.import_image(BASE_IMAGE)
            abra = workdir / "abra"
            recipes = abra / "recipes"
            print(f"[upgrades] {SIZES[-1]} recipe repos and images", flush=True)
            for index in range(SIZES[-1]):
                releases = [
                    (tag, {"compose.yml": COMPOSE, f"release/{tag}": f"Notes of {tag}.\n"})
                    for tag in TAGS
                ]
                make_recipe(recipes, recipe(index), releases)
                daemon.cli("tag", BASE_IMAGE, image(registry, index))
                daemon.cli("push", image(registry, index))
            compose = workdir / "compose.yml"
            compose.write_text(COMPOSE)
            concurrent = CheckBot(workdir, abra, daemon.host, concurrency=8)
            serial = CheckBot(workdir, abra, daemon.host, concurrency=1)
            bots += [concurrent, serial]
            for n in SIZES:
                for index in range(deployed, n):
                    make_app_env(abra, "default", domain(index), recipe(index), DEPLOYED)
                print(f"[upgrades] deploying stacks {deployed + 1}..{n}", flush=True)
                await asyncio.to_thread(deploy_stacks, daemon, compose, registry, deployed, n)
                deployed = n
                await bot_check(concurrent, n)  # warm-up (imports, first connections)
                await bot_check(serial, n)
                times: tuple[list[float], list[float], list[float]] = ([], [], [])
                for _ in range(args.repeats):
                    times[0].append(await bot_check(concurrent, n))
                    times[1].append(await bot_check(serial, n))
                    times[2].append(await asyncio.to_thread(by_hand, daemon, recipes, registry, n))
                print(
                    f"[upgrades] N={n}: bot {median(times[0]):.3f} s, bot serial "
                    f"{median(times[1]):.3f} s, loop {median(times[2]):.3f} s",
                    flush=True,
                )
                rows.append((n, *times))
        finally:
            for bot in bots:
                await bot.close()
            if deployed:
                daemon.cli("stack", "rm", *(stack(i) for i in range(deployed)), check=False)
            reg.stop()

    print()
    print(f"!upgrades reply time, median of {args.repeats} ({machine()}, CLI {DOCKER_CLI})")
    print(
        f"{'N':>4} {'bot s':>8} {'ms/app':>7} {'serial s':>9} {'ms/app':>7} "
        f"{'loop s':>8} {'ms/app':>7} {'loop/bot':>8}"
    )
    for n, bot_t, serial_t, loop_t in rows:
        b, s, h = median(bot_t), median(serial_t), median(loop_t)
        print(
            f"{n:4} {b:8.3f} {b / n * 1000:7.1f} {s:9.3f} {s / n * 1000:7.1f} "
            f"{h:8.3f} {h / n * 1000:7.1f} {h / b:8.1f}"
        )
    sizes = [float(n) for n, *_ in rows]
    columns = {
        "bot": [row[1] for row in rows],
        "bot serial": [row[2] for row in rows],
        "loop": [row[3] for row in rows],
    }
    fits = {name: fit(sizes, [median(times) for times in col]) for name, col in columns.items()}
    print(
        "linear fit: "
        + "; ".join(f"{k} {s * 1000:.1f} ms/app + {c * 1000:.0f} ms" for k, (s, c) in fits.items())
    )
    first, last = rows[0], rows[-1]
    growth = {name: median(col[-1]) / median(col[0]) for name, col in columns.items()}
    print(
        f"growth N={last[0]} / N={first[0]}: "
        + ", ".join(f"{k} {g:.2f}x" for k, g in growth.items())
        + f" (apps: {last[0] / first[0]:.1f}x)"
    )
    for n, bot_t, serial_t, loop_t in rows:
        result(f"upgrades_bot_n{n}_s", median(bot_t), "-")
        result(f"upgrades_bot_serial_n{n}_s", median(serial_t), "-")
        result(f"upgrades_loop_n{n}_s", median(loop_t), "-")
    result("upgrades_bot_ms_per_app", fits["bot"][0] * 1000, "-")
    result("upgrades_bot_growth_50_10", growth["bot"], f"~{last[0] / first[0]:.0f} (linear)")
    result("upgrades_loop_over_bot_n50", median(last[3]) / median(last[1]), ">1")


if __name__ == "__main__":
    asyncio.run(main())
