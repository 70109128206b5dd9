"""`!apps` reply time with N = 10, 25, 50 apps, beside a serial shell-style loop.

One private swarm dockerd; 50 recipe repos with three release tags each. For each
N, apps 1..N each have a .env file (its own recipe) and a deployed stack of one
tiny service (busybox `sleep`, dnsrr, no ports, stop_grace_period 1s), deployed
with Debian's docker CLI, as abra would. The stacks carry the recipe's version
label, as abra's do. Each `!apps` is timed from handing the message to the
dispatcher to the reply being posted (bot in-process, in-memory chat).

Baseline, in the same run and on the same apps: a serial loop that, per app, runs
`git tag` in its recipe repo and `docker stack services STACK` (the CLI).

The bot's docker SDK calls are counted (services and tasks listings per `!apps`),
and so are the git processes it starts.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import git.cmd

import bot.ops.recipes as recipes_module
from bench.common import arguments, machine, median, result
from bench.inproc import InprocBot, dockerd
from bot.ops.process import run_process
from bot.ops.swarm import DOCKER_CLI
from tests.harness.dockerd import Dockerd
from tests.harness.recipes import make_app_env, make_recipe

IMAGE = "local/busybox:1.0"
SIZES = (10, 25, 50)
TAGS = ("1.0.0+1.0", "1.1.0+1.0", "1.2.0+1.0")
DEPLOYED = TAGS[1]
COMPOSE = f"""version: "3.8"
services:
  app:
    image: {IMAGE}
    command: sleep 3600
    stop_grace_period: 1s
    deploy:
      endpoint_mode: dnsrr
      labels:
        - "coop-cloud.${{STACK_NAME}}.version={DEPLOYED}"
"""


def domain(index: int) -> str:
    return f"app{index:02d}.bench.test"


def stack(index: int) -> str:
    return domain(index).replace(".", "_")


def recipe(index: int) -> str:
    return f"rec{index:02d}"


# ------------------------------------------------------------------ counting


COUNTED = ("docker services", "docker tasks", "docker nodes", "docker networks", "git processes")
calls: Counter[str] = Counter()


def _counted(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[name] += 1
        return fn(*args, **kwargs)

    return wrapper


def instrument(bot: InprocBot) -> None:
    """Count the bot's docker API listings and git processes (bench-only wrappers)."""
    client = bot.bot.services.apps.swarm("default")._client_sync()
    for name in COUNTED[:4]:
        method = name.split()[1]
        setattr(client.api, method, _counted(name, getattr(client.api, method)))
    setattr(git.cmd, "Popen", _counted("git processes", getattr(git.cmd, "Popen")))  # noqa: B009, B010
    # The batched recipe reads start git through the one subprocess runner.
    counted = _counted("git processes", run_process)
    setattr(recipes_module, "run_process", counted)  # noqa: B010


# ------------------------------------------------------------------ the two sides


async def bot_apps(bot: InprocBot, n: int) -> float:
    event_id, start = await bot.command("!apps")
    end, text = await bot.chat.wait(event_id, lambda _: True, timeout=120)
    rows = [line for line in text.splitlines() if ".bench.test |" in line]
    healthy = [row for row in rows if f"| {DEPLOYED} | ✅ 1/1 running | {TAGS[-1]} |" in row]
    if len(rows) != n or len(healthy) != n:
        raise RuntimeError(f"!apps listed {len(rows)} apps, {len(healthy)} healthy:\n{text}")
    return end - start


def by_hand(daemon: Dockerd, recipes: Path, n: int) -> float:
    start = time.perf_counter()
    for index in range(n):
        subprocess.run(["git", "tag"], cwd=recipes / recipe(index), capture_output=True, check=True)
        daemon.cli("stack", "services", stack(index))
    return time.perf_counter() - start


def deploy_stacks(daemon: Dockerd, compose: Path, first: int, upto: int) -> None:
    for index in range(first, upto):
        env = {"STACK_NAME": stack(index), "DOMAIN": domain(index)}
        daemon.cli("stack", "deploy", "-c", str(compose), stack(index), env=env)
    deadline = time.monotonic() + 300
    while True:
        out = daemon.cli("service", "ls", "--format", "{{.Replicas}}").stdout.split()
        if out.count("1/1") == upto:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{upto} services not running after 300 s: {out}")
        time.sleep(1)


# ------------------------------------------------------------------ the run


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares line: (slope, intercept)."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return slope, my - slope * mx


async def main() -> None:
    args = arguments(__doc__ or "", repeats=5)
    rows: list[tuple[int, float, float, list[float], list[float], Counter[str]]] = []
    with dockerd("apps", args.keep) as daemon:
        workdir = daemon.workdir.parent
        daemon.import_image(IMAGE)
        abra = workdir / "abra"
        recipes = abra / "recipes"
        print(f"[apps] making {SIZES[-1]} recipe repos", flush=True)
        for index in range(SIZES[-1]):
            make_recipe(recipes, recipe(index), [(tag, {"compose.yml": COMPOSE}) for tag in TAGS])
        compose = recipes / recipe(0) / "compose.yml"
        bot = InprocBot(workdir, abra, daemon.host)
        instrument(bot)
        deployed = 0
        try:
            for n in SIZES:
                for index in range(deployed, n):
                    make_app_env(abra, "default", domain(index), recipe(index), DEPLOYED)
                print(f"[apps] deploying stacks {deployed + 1}..{n}", flush=True)
                await asyncio.to_thread(deploy_stacks, daemon, compose, deployed, n)
                deployed = n
                calls.clear()
                first = await bot_apps(bot, n)  # the first after a change: not counted
                per_command = Counter({k: v for k, v in calls.items()})
                bot_times, hand_times = [], []
                for _ in range(args.repeats):
                    calls.clear()
                    bot_times.append(await bot_apps(bot, n))
                    hand_times.append(await asyncio.to_thread(by_hand, daemon, recipes, n))
                print(
                    f"[apps] N={n}: first {first:.3f} s, bot {median(bot_times):.3f} s, "
                    f"loop {median(hand_times):.3f} s, calls {dict(calls)}",
                    flush=True,
                )
                rows.append((n, first, median(bot_times), bot_times, hand_times, per_command))
        finally:
            await bot.close()
            if deployed:
                daemon.cli("stack", "rm", *(stack(i) for i in range(deployed)), check=False)

    print()
    print(f"!apps reply time, median of {args.repeats} ({machine()}, CLI {DOCKER_CLI})")
    print(
        f"{'N':>4} {'bot s':>8} {'ms/app':>7} {'loop s':>8} {'ms/app':>7} {'loop/bot':>8}  "
        "bot runs / loop runs (s)"
    )
    for n, _, bot_med, bot_times, hand_times, _ in rows:
        hand_med = median(hand_times)
        runs = " ".join(f"{t:.3f}" for t in bot_times) + " / "
        runs += " ".join(f"{t:.2f}" for t in hand_times)
        print(
            f"{n:4} {bot_med:8.3f} {bot_med / n * 1000:7.1f} {hand_med:8.3f} "
            f"{hand_med / n * 1000:7.1f} {hand_med / bot_med:8.1f}  {runs}"
        )
    sizes = [float(n) for n, *_ in rows]
    bot_slope, bot_icpt = fit(sizes, [row[2] for row in rows])
    hand_slope, hand_icpt = fit(sizes, [median(row[4]) for row in rows])
    bot_ratio = rows[-1][2] / rows[0][2]
    print(
        f"linear fit: bot {bot_slope * 1000:.2f} ms/app + {bot_icpt * 1000:.0f} ms; "
        f"loop {hand_slope * 1000:.1f} ms/app + {hand_icpt * 1000:.0f} ms"
    )
    print(
        f"growth N={rows[-1][0]} / N={rows[0][0]}: bot {bot_ratio:.2f}x, "
        f"loop {median(rows[-1][4]) / median(rows[0][4]):.2f}x"
    )
    print(
        "first !apps after the stacks changed, s: "
        + ", ".join(f"N={n} {first:.3f}" for n, first, *_ in rows)
    )
    print("the bot's calls during one !apps (the first at each N):")
    for n, *_, counted in rows:
        print(f"  N={n}: " + ", ".join(f"{k} {counted[k]}" for k in COUNTED))
    for n, _, bot_med, _, hand_times, _ in rows:
        result(f"apps_bot_n{n}_s", bot_med, "-")
        result(f"apps_loop_n{n}_s", median(hand_times), "-")
    last = rows[-1][5]
    result("apps_bot_ms_per_app", bot_slope * 1000, "-")
    result("apps_bot_growth_50_10", bot_ratio, "-")
    result("apps_docker_listings_per_command", last["docker services"] + last["docker tasks"], "=2")


if __name__ == "__main__":
    asyncio.run(main())
