"""`!apps` and `!upgrades` over the corpus recipes plus synthetic apps on 3 servers.

The abra folder holds the six corpus recipes, cloned from `shared/recipes/*.bundle`
(bonfire, foodsharing-cms and traefik-legacy are tagged; agora, gaseous and
llamenos are not), and 14 synthetic recipes (releases 1.0.0, 1.0.1, 1.1.0 and
2.0.0, each with its release note). N = 50, 100, 200 synthetic apps spread round
robin over those 20 recipes and over 3 servers (`s1`, `s2`, `s3`), each with its
`.env`. An app of a tagged recipe runs its oldest release (so the check finds
newer ones with their notes, except on traefik-legacy's only tag); an app of an
untagged one is a chaos deploy of its HEAD. Every app has one service with its own
image, pinned by digest.

The swarms are fakes (tests/fakes.py's FakeSwarm, in memory): this measures the
bot's own work, not a daemon's. The registry is a fake too: every digest lookup
answers after REGISTRY_MS, the same on both sides. `upgrades.fetch_recipes` is off
(no remotes; a fetch is network time, the same for any tool).

Timed from handing the command to the dispatcher to the reply (bot in-process,
in-memory chat, the real `Apps`, `Upgrades` and recipe repos), in the same run and
on the same apps as serial loops a script would run:
- for `!apps`: per app, `git tag` in its recipe;
- for `!upgrades`: per app, `git tag`, one `git cat-file --batch` of the release
  notes between its version and the newest, and one (fake) registry lookup.
The git processes the bot starts per command are counted.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import git.cmd

import bot.ops.recipes as recipes_module
from bench.apps_inventory import fit
from bench.common import arguments, machine, median, result
from bench.inproc import BenchChat, InprocBot
from bot.app import Bot
from bot.config import parse_config
from bot.ops.recipes import parse_version
from bot.ops.swarm import ServiceInfo
from tests.fakes import FakeSwarm
from tests.harness.corpus import RECIPES, clone_recipe
from tests.harness.recipes import make_app_env, make_recipe

SIZES = (50, 100, 200)
SERVERS = ("s1", "s2", "s3")
SYNTHETIC = tuple(f"synth{i:02d}" for i in range(14))
TAGS = ("1.0.0+1.0", "1.0.1+1.0", "1.1.0+1.1", "2.0.0+2.0")
REGISTRY_MS = 2.0
DIGEST = "sha256:" + "b" * 64


def domain(index: int) -> str:
    return f"app{index:03d}.bench.test"


def stack(index: int) -> str:
    return domain(index).replace(".", "_")


def server(index: int) -> str:
    return SERVERS[index % len(SERVERS)]


class BenchSwarm(FakeSwarm):
    """FakeSwarm with a registry that answers after REGISTRY_MS, and a close()."""

    async def registry_digest(self, ref: str) -> str:
        await asyncio.sleep(REGISTRY_MS / 1000)
        return DIGEST

    async def close(self) -> None:
        return None


class ScaleBot(InprocBot):
    """InprocBot on 3 servers served by fake swarms."""

    def __init__(
        self, workdir: Path, abra: Path, swarms: dict[str, BenchSwarm], data: str = "bot-data"
    ) -> None:
        config = parse_config(
            {
                "data_dir": str(workdir / data),
                "abra_dir": str(abra),
                "servers": {name: {"docker_host": "unix:///nonexistent.sock"} for name in swarms},
                "upgrades": {"fetch_recipes": False},
                # one member sends every command of the run, faster than a person would
                "jobs": {"member_rate": 10_000},
            }
        )
        self.chat = BenchChat()
        self.bot = Bot(config, chat=self.chat, swarms=swarms)  # type: ignore[arg-type]
        self._ids = itertools.count(1)

    async def close(self) -> None:
        await self.bot.dispatcher.shutdown()
        self.bot.recipes.close()
        self.bot.store.close()


# ------------------------------------------------------------------ the site


class Recipe:
    """A recipe of the abra folder: its releases (oldest first) and what apps run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name
        names = run_git(path, "tag").split()
        found = [v for name in names if (v := parse_version(name)) is not None]
        self.versions = [v.text for v in sorted(found, key=lambda v: (v.key, v.text))]
        self.head = run_git(path, "rev-parse", "HEAD").strip()
        self.deployed = self.versions[0] if self.versions else self.head
        self.upgradable = len(self.versions) > 1


def run_git(repo: Path, *args: str, stdin: bytes | None = None) -> str:
    out = subprocess.run(
        ["git", *args], cwd=repo, input=stdin, capture_output=True, check=True
    ).stdout
    return out.decode(errors="replace")


def make_site(workdir: Path) -> tuple[Path, list[Recipe]]:
    abra = workdir / "abra"
    recipes = abra / "recipes"
    recipes.mkdir(parents=True)
    paths = [clone_recipe(name, recipes) for name in RECIPES]
    for name in SYNTHETIC:
        releases = [
            (tag, {"compose.yml": f"image: app:{tag}\n", f"release/{tag}": f"Notes of {tag}.\n"})
            for tag in TAGS
        ]
        paths.append(make_recipe(recipes, name, releases))
    return abra, [Recipe(path) for path in paths]


def add_apps(
    abra: Path, swarms: dict[str, BenchSwarm], recipes: list[Recipe], first: int, upto: int
) -> None:
    for index in range(first, upto):
        recipe = recipes[index % len(recipes)]
        tagged = bool(recipe.versions)
        make_app_env(
            abra, server(index), domain(index), recipe.name, recipe.deployed if tagged else None
        )
        name = stack(index)
        labels = {"com.docker.stack.namespace": name, f"coop-cloud.{name}.version": recipe.deployed}
        if not tagged:
            labels[f"coop-cloud.{name}.chaos"] = "true"
        swarms[server(index)].stacks_of[name] = [
            ServiceInfo(
                id=f"id-{name}",
                name=f"{name}_app",
                short_name="app",
                image=f"reg.bench.test/bench/app{index:03d}:1.0@{DIGEST}",
                replicas_desired=1,
                replicas_running=1,
                update_state=None,
                update_message="",
                labels=labels,
                version=1,
                has_previous_spec=False,
                previous_image=None,
                recent_errors=[],
            )
        ]


# ------------------------------------------------------------------ counting


git_runs: Counter[str] = Counter()


def _counted(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        git_runs[name] += 1
        return fn(*args, **kwargs)

    return wrapper


def instrument() -> None:
    """Count git processes: GitPython's (Popen) and the batched reads' (run_process)."""
    setattr(git.cmd, "Popen", _counted("gitpython", getattr(git.cmd, "Popen")))  # noqa: B009, B010
    if hasattr(recipes_module, "run_process"):  # the batched reads (absent before them)
        setattr(recipes_module, "run_process", _counted("batched", recipes_module.run_process))  # noqa: B010


# ------------------------------------------------------------------ the two sides


async def bot_apps(bot: InprocBot, n: int, untagged: int) -> float:
    event_id, start = await bot.command("!apps")
    end, text = await bot.chat.wait(event_id, lambda _: True, timeout=120)
    rows = [line for line in text.splitlines() if ".bench.test |" in line]
    unknown = [row for row in rows if row.endswith("| ? |")]  # no release: untagged recipes
    if len(rows) != n or len(unknown) != untagged:
        raise RuntimeError(f"!apps listed {len(rows)} apps, {len(unknown)} without newest:\n{text}")
    return end - start


async def bot_upgrades(bot: InprocBot, n: int, upgradable: int) -> float:
    event_id, start = await bot.command("!upgrades")
    end, text = await bot.chat.wait(event_id, lambda _: True, timeout=300)
    if f"{n} deployed app(s), {upgradable} can be upgraded, 0 with image drift" not in text:
        raise RuntimeError(f"!upgrades did not report {upgradable} of {n} upgradable:\n{text}")
    return end - start


def loop_apps(recipes: list[Recipe], n: int) -> float:
    start = time.perf_counter()
    for index in range(n):
        run_git(recipes[index % len(recipes)].path, "tag")
    return time.perf_counter() - start


def loop_upgrades(recipes: list[Recipe], n: int) -> float:
    start = time.perf_counter()
    for index in range(n):
        recipe = recipes[index % len(recipes)]
        tags = run_git(recipe.path, "tag").split()
        if recipe.versions and tags:
            newest = recipe.versions[-1]
            wanted = recipe.versions[recipe.versions.index(recipe.deployed) + 1 :]
            asked = "".join(f"refs/tags/{newest}:release/{v}\n" for v in wanted)
            run_git(recipe.path, "cat-file", "--batch", stdin=asked.encode())
        time.sleep(REGISTRY_MS / 1000)  # the fake registry, as the bot's
    return time.perf_counter() - start


# ------------------------------------------------------------------ the run

# N; times of !apps, !upgrades, their loops, cold !apps, cold !upgrades; git runs of each
Row = tuple[int, tuple[list[float], ...], list[Counter[str]]]


async def main() -> None:
    args = arguments(__doc__ or "", repeats=5)
    workdir = Path(tempfile.mkdtemp(prefix="coopbot-bench-corpus-"))
    rows: list[Row] = []
    instrument()
    try:
        abra, recipes = make_site(workdir)
        print(
            "[corpus] recipes: "
            + ", ".join(f"{r.name} ({len(r.versions)} tags)" for r in recipes[: len(RECIPES)])
            + f", {len(SYNTHETIC)} synthetic ({len(TAGS)} tags)",
            flush=True,
        )
        swarms = {name: BenchSwarm() for name in SERVERS}
        bot = ScaleBot(workdir, abra, swarms)
        added = 0
        try:
            for n in SIZES:
                add_apps(abra, swarms, recipes, added, n)
                added = n
                upgradable = sum(recipes[i % len(recipes)].upgradable for i in range(n))
                untagged = sum(not recipes[i % len(recipes)].versions for i in range(n))
                await bot_apps(bot, n, untagged)  # warm-up
                await bot_upgrades(bot, n, upgradable)
                runs: tuple[list[float], ...] = ([], [], [], [], [], [])
                counts: list[Counter[str]] = [Counter() for _ in range(4)]
                for repeat in range(args.repeats):
                    git_runs.clear()
                    runs[0].append(await bot_apps(bot, n, untagged))
                    counts[0] = Counter(git_runs)
                    git_runs.clear()
                    runs[1].append(await bot_upgrades(bot, n, upgradable))
                    counts[1] = Counter(git_runs)
                    runs[2].append(await asyncio.to_thread(loop_apps, recipes, n))
                    runs[3].append(await asyncio.to_thread(loop_upgrades, recipes, n))
                    # Cold: a bot of its own, nothing read yet (as after a restart or a
                    # fetch that brought new tags to every recipe).
                    for i, command in enumerate(("apps", "upgrades")):
                        cold = ScaleBot(workdir, abra, swarms, f"bot-cold-{n}-{repeat}-{i}")
                        try:
                            git_runs.clear()
                            if command == "apps":
                                runs[4].append(await bot_apps(cold, n, untagged))
                            else:
                                runs[5].append(await bot_upgrades(cold, n, upgradable))
                            counts[2 + i] = Counter(git_runs)
                        finally:
                            await cold.close()
                print(
                    f"[corpus] N={n}: !apps {median(runs[0]):.3f} s (cold {median(runs[4]):.3f}, "
                    f"loop {median(runs[2]):.3f}), !upgrades {median(runs[1]):.3f} s (cold "
                    f"{median(runs[5]):.3f}, loop {median(runs[3]):.3f}), git runs "
                    + " / ".join(str(dict(c)) for c in counts),
                    flush=True,
                )
                rows.append((n, runs, counts))
        finally:
            await bot.close()
    finally:
        if args.keep:
            print(f"[corpus] kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(
        f"!apps and !upgrades reply time, median of {args.repeats} ({machine()}; "
        f"{len(recipes)} recipes, {len(SERVERS)} fake swarms, fake registry {REGISTRY_MS:g} ms)"
    )
    print(
        f"{'N':>4} {'!apps s':>8} {'ms/app':>7} {'cold s':>7} {'loop s':>7} {'loop/bot':>8} "
        f"{'!upgr s':>8} {'ms/app':>7} {'cold s':>7} {'loop s':>7} {'loop/bot':>8}  "
        "git runs: apps, upgrades (cold apps, cold upgrades)"
    )
    for n, times, counts in rows:
        a, u, la, lu, ca, cu = (median(r) for r in times)
        c = [sum(x.values()) for x in counts]
        print(
            f"{n:4} {a:8.3f} {a / n * 1000:7.2f} {ca:7.3f} {la:7.3f} {la / a:8.1f} "
            f"{u:8.3f} {u / n * 1000:7.2f} {cu:7.3f} {lu:7.3f} {lu / u:8.1f}  "
            f"{c[0]}, {c[1]} ({c[2]}, {c[3]})"
        )
    sizes = [float(row[0]) for row in rows]
    names = ("!apps", "!upgrades", "apps loop", "upgrades loop", "cold !apps", "cold !upgrades")
    fits = {name: fit(sizes, [median(row[1][i]) for row in rows]) for i, name in enumerate(names)}
    print(
        "linear fit: "
        + "; ".join(f"{k} {s * 1000:.2f} ms/app + {c * 1000:.0f} ms" for k, (s, c) in fits.items())
    )
    first, last = rows[0], rows[-1]
    print(
        f"growth N={last[0]} / N={first[0]}: "
        + ", ".join(
            f"{name} {median(last[1][i]) / median(first[1][i]):.2f}x"
            for i, name in enumerate(names)
        )
        + f" (apps: {last[0] / first[0]:.1f}x)"
    )
    for n, (apps_t, upg_t, lapps_t, lupg_t, capps_t, cupg_t), _ in rows:
        result(f"corpus_apps_bot_n{n}_s", median(apps_t), "-")
        result(f"corpus_apps_cold_n{n}_s", median(capps_t), "-")
        result(f"corpus_apps_loop_n{n}_s", median(lapps_t), "-")
        result(f"corpus_upgrades_bot_n{n}_s", median(upg_t), "<1" if n == 200 else "-")
        result(f"corpus_upgrades_cold_n{n}_s", median(cupg_t), "<1" if n == 200 else "-")
        result(f"corpus_upgrades_loop_n{n}_s", median(lupg_t), "-")
    result("corpus_upgrades_bot_ms_per_app", fits["!upgrades"][0] * 1000, "-")
    result(
        "corpus_upgrades_growth",
        median(last[1][1]) / median(first[1][1]),
        f"~{last[0] / first[0]:.0f} (linear) or less",
    )


if __name__ == "__main__":
    asyncio.run(main())
