"""Deploy time: `!deploy` to its success report, beside the same deploy by hand.

One private swarm dockerd, one recipe (one release: a busybox `sleep` service),
two stacks from the same compose file and image: the bot's app and a stack
deployed by hand. By hand means Debian's CLI, `docker stack deploy -c compose.yml
STACK` with the same environment the bot gives the CLI (the .env values and
STACK_NAME), then polling through the docker SDK until the stack has converged by
the bot's criteria: every service's UpdateStatus completed or absent, its
up-to-date tasks running in the desired count, and still so after the same
monitor window (5 s, `Swarm.wait_converged`'s default) at the same poll interval (1 s).

The bot runs in-process behind an in-memory chat; its time runs from handing
`!deploy` to the dispatcher to the progress message's text saying "runs <version>".
The first deploy of each side is timed on its own; then each run changes the
app's GREETING (the .env for the bot, the environment by hand), so every run is a
real update that replaces the task, and the two sides take turns going first.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import docker

from bench.common import arguments, machine, median, result
from bench.inproc import InprocBot, dockerd
from bot.features.apps import Steps
from bot.ops.swarm import DOCKER_CLI, NAMESPACE_LABEL
from tests.harness.dockerd import Dockerd
from tests.harness.recipes import make_app_env, make_recipe

VERSION = "1.0.0+1.0"
DOMAIN = "bot.bench.test"
BOT_STACK = DOMAIN.replace(".", "_")
HAND_STACK = "hand_bench_test"
IMAGE = "local/busybox:1.0"
MONITOR = 5.0  # Swarm.wait_converged's default, which Apps.deploy uses
POLL = 1.0  # likewise
TARGET_REL, TARGET_ABS = 0.15, 1.0
COMPOSE = f"""version: "3.8"
services:
  app:
    image: {IMAGE}
    command: sleep 3600
    stop_grace_period: 1s
    environment:
      - GREETING=${{GREETING}}
    deploy:
      endpoint_mode: dnsrr
      restart_policy: {{condition: on-failure, delay: 1s}}
"""
PHASES = ("plan", "checkout", "pre-flight", "stack deploy", "convergence", "report")
# Steps.step() texts that start each phase after "plan", and the final done().
_STEP_STARTS = ("Checking out", "Pre-flight", "`docker stack deploy`", "Waiting for convergence")

step_log: list[tuple[float, str]] = []  # (perf_counter, text) of every Steps.step/done


def _instrument_steps() -> None:
    """Timestamps of the deploy's steps as they happen (the chat only sees throttled
    edits). Bench-only: wraps Steps.step and Steps.done."""
    step, done = Steps.step, Steps.done

    async def timed_step(self: Steps, text: str) -> None:
        step_log.append((time.perf_counter(), text))
        await step(self, text)

    async def timed_done(self: Steps, text: str | None = None, mark: str = "✅") -> None:
        step_log.append((time.perf_counter(), f"done {text or ''}"))
        await done(self, text, mark)

    Steps.step = timed_step  # type: ignore[method-assign]
    Steps.done = timed_done  # type: ignore[method-assign]


# ------------------------------------------------------------------ the bot


def _finished(text: str) -> bool:
    return f"runs {VERSION}" in text or any(mark in text for mark in ("failed", "❌", "💥"))


async def bot_deploy(bot: InprocBot, abra: Path, greeting: str) -> tuple[float, list[float]]:
    make_app_env(abra, "default", DOMAIN, "bench", VERSION, {"GREETING": greeting})
    step_log.clear()
    event_id, start = await bot.command(f"!deploy {DOMAIN} {VERSION}")
    end, text = await bot.chat.wait(event_id, _finished)
    if f"runs {VERSION}" not in text:
        raise RuntimeError(f"the bot's deploy failed:\n{text}")
    marks = [start]
    for prefix in _STEP_STARTS:
        marks.append(next(at for at, text in step_log if text.startswith(prefix)))
    marks.append(next(at for at, text in step_log if text.startswith("done Converged")))
    marks.append(end)
    return end - start, [b - a for a, b in itertools.pairwise(marks)]


# ------------------------------------------------------------------ by hand


def _converged(client: Any, stack: str) -> bool:
    api = client.api
    services = api.services(filters={"label": f"{NAMESPACE_LABEL}={stack}"})
    if not services:
        return False
    fresh = api.tasks(filters={"service": [s["ID"] for s in services], "_up-to-date": "true"})
    for service in services:
        if (service.get("UpdateStatus") or {}).get("State") not in (None, "completed"):
            return False
        wanted = service["Spec"]["Mode"]["Replicated"]["Replicas"]
        running = {
            t["Slot"]
            for t in fresh
            if t["ServiceID"] == service["ID"]
            and t["DesiredState"] == "running"
            and t["Status"]["State"] == "running"
        }
        if len(running) != wanted:
            return False
    return True


def hand_deploy(daemon: Dockerd, client: Any, compose: Path, greeting: str) -> tuple[float, float]:
    """`docker stack deploy`, then poll until converged for MONITOR s; (total, CLI) seconds."""
    env = {"GREETING": greeting, "DOMAIN": "hand.bench.test", "STACK_NAME": HAND_STACK}
    start = time.perf_counter()
    daemon.cli("stack", "deploy", "-c", str(compose), HAND_STACK, env=env)  # raises if it fails
    deployed = time.perf_counter()
    since: float | None = None
    while True:
        ok = _converged(client, HAND_STACK)
        now = time.perf_counter()
        if ok:
            since = since or now
            if now - since >= MONITOR:
                return now - start, deployed - start
        else:
            since = None
        if now - start > 300:
            raise TimeoutError(f"{HAND_STACK} did not converge within 300 s")
        time.sleep(POLL)


# ------------------------------------------------------------------ the run


def _fmt(values: list[float]) -> str:
    return " ".join(f"{v:6.2f}" for v in values)


async def main() -> None:
    args = arguments(__doc__ or "", runs=5)
    _instrument_steps()
    bot_runs: list[tuple[float, list[float]]] = []
    hand_runs: list[tuple[float, float]] = []
    with dockerd("deploy", args.keep) as daemon:
        workdir = daemon.workdir.parent
        daemon.import_image(IMAGE)
        abra = workdir / "abra"
        make_recipe(abra / "recipes", "bench", [(VERSION, {"compose.yml": COMPOSE})])
        compose = abra / "recipes" / "bench" / "compose.yml"
        client = docker.DockerClient(base_url=daemon.host, version="auto")
        bot = InprocBot(workdir, abra, daemon.host)
        try:
            print(f"[deploy] first deploys, then {args.runs} updates each", flush=True)
            bot_first = await bot_deploy(bot, abra, "first")
            hand_first = await asyncio.to_thread(hand_deploy, daemon, client, compose, "first")
            for run in range(1, args.runs + 1):
                greeting = f"run-{run}"
                sides = ["bot", "hand"] if run % 2 else ["hand", "bot"]
                for side in sides:
                    if side == "bot":
                        bot_runs.append(await bot_deploy(bot, abra, greeting))
                    else:
                        hand_runs.append(
                            await asyncio.to_thread(hand_deploy, daemon, client, compose, greeting)
                        )
                print(
                    f"[deploy] run {run}: bot {bot_runs[-1][0]:.2f} s, "
                    f"hand {hand_runs[-1][0]:.2f} s",
                    flush=True,
                )
        finally:
            await bot.close()
            for stack in (BOT_STACK, HAND_STACK):
                daemon.cli("stack", "rm", stack, check=False)
            client.close()

    bot_total = [total for total, _ in bot_runs]
    hand_total = [total for total, _ in hand_runs]
    bot_med, hand_med = median(bot_total), median(hand_total)
    overhead = bot_med - hand_med
    allowed = max(TARGET_ABS, TARGET_REL * hand_med)
    print()
    print(f"Deploy to converged, bot vs by hand ({machine()}, CLI {DOCKER_CLI})")
    print(f"monitor window {MONITOR:g} s and poll {POLL:g} s on both sides")
    print(f"first deploy:   bot {bot_first[0]:6.2f} s   hand {hand_first[0]:6.2f} s")
    print(f"updates, bot:   {_fmt(bot_total)}   median {bot_med:.2f} s")
    print(f"updates, hand:  {_fmt(hand_total)}   median {hand_med:.2f} s")
    print(
        f"overhead: {overhead:+.2f} s ({overhead / hand_med:+.1%}); "
        f"target < {allowed:.2f} s (15 % or 1 s, the larger)"
    )
    print()
    print("bot breakdown, s (median of the updates; first deploy in brackets):")
    for index, phase in enumerate(PHASES):
        values = [phases[index] for _, phases in bot_runs]
        print(f"  {phase:13} {median(values):6.3f}  [{bot_first[1][index]:6.3f}]")
    cli = median([cli for _, cli in hand_runs])
    print(
        f"hand breakdown: stack deploy {cli:.3f} s, convergence {hand_med - cli:.3f} s "
        f"(first: {hand_first[1]:.3f} s, {hand_first[0] - hand_first[1]:.3f} s)"
    )
    result("deploy_first_bot_s", bot_first[0], "-")
    result("deploy_first_hand_s", hand_first[0], "-")
    result("deploy_bot_median_s", bot_med, "-")
    result("deploy_hand_median_s", hand_med, "-")
    result("deploy_overhead_s", overhead, f"<{allowed:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
