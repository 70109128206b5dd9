"""Rendering each corpus recipe: the bot's compose loader beside `docker stack config`.

For each recipe of tests/harness/corpus.py (its default branch), two overlay sets
from its .env.sample: as shipped, and every COMPOSE_FILE line uncommented (the most
files to merge; the same as shipped when the sample has no commented line). The
environment is built as abra builds it (tests/harness/compose_oracle.py). Both
renderers read the same files with the same environment, in the same run:

- bot: `load_compose(...)` in this process (what `Swarm.config` runs in a thread);
- cli: `docker stack config -c ...` of the docker 28 CLI at /usr/local/bin/docker,
  a process per rendering (no daemon: DOCKER_HOST points at a missing socket).

Each figure is the median of --rounds renderings after one warm-up. Both renderings
are also compared (compose_oracle.view), so a figure never stands for a wrong
rendering. The script reports and does not gate.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import arguments, machine, median, result
from bot.ops.compose import load_compose
from tests.harness import compose_oracle as oracle
from tests.harness.corpus import RECIPES, clone_recipe


def _timed(fn: Callable[[], object], rounds: int) -> list[float]:
    fn()  # warm-up: imports, the page cache, the CLI binary
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    args = arguments(str(__doc__).splitlines()[0], rounds=7)
    if not oracle.cli_has_stack_config():
        print(f"needs a docker 24+ CLI at {oracle.DOCKER_28} (for `docker stack config`)")
        sys.exit(0)
    workdir = Path(tempfile.mkdtemp(prefix="coopbot-bench-compose-"))
    rows: list[tuple[str, str, int, float, float, bool]] = []
    try:
        home = workdir / "home"
        home.mkdir()
        for name in RECIPES:
            try:
                recipe = clone_recipe(name, workdir)
            except FileNotFoundError as e:
                print(f"[compose] skipping {name}: {e}", flush=True)
                continue
            combos = oracle.combinations(recipe)
            for label, combo in (("shipped", combos[0]), ("all", combos[-1])):
                if label == "all" and len(combos) == 1:
                    continue
                env = oracle.process_env(oracle.app_env(recipe, combo.env_text), home)
                files = oracle.compose_files(env)
                paths = [recipe / f for f in files]

                def bot(paths: list[Path] = paths, env: dict[str, str] = env) -> dict[str, Any]:
                    return load_compose(paths, env, allow_missing=True, check_refs=False)

                def cli(
                    files: list[str] = files, env: dict[str, str] = env, recipe: Path = recipe
                ) -> oracle.Rendering:
                    return oracle.docker_stack_config(recipe, files, env)

                bot_times = _timed(bot, args.rounds)
                cli_times = _timed(cli, args.rounds)
                theirs = cli().config
                same = theirs is not None and not oracle.differences(
                    oracle.view(theirs), oracle.view(bot())
                )
                rows.append((name, label, len(files), median(bot_times), median(cli_times), same))
                print(
                    f"[compose] {name} {label} ({len(files)} files): bot "
                    f"{median(bot_times) * 1000:.2f} ms, cli {median(cli_times) * 1000:.2f} ms",
                    flush=True,
                )
    finally:
        if args.keep:
            print(f"[compose] kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"Rendering a recipe, median of {args.rounds} ({machine()})")
    print(f"{'recipe':<16} {'overlays':<8} {'files':>5} {'bot ms':>8} {'cli ms':>8} "
          f"{'cli/bot':>7}  same")  # fmt: skip
    for name, label, count, bot_s, cli_s, same in rows:
        print(
            f"{name:<16} {label:<8} {count:>5} {bot_s * 1000:>8.2f} {cli_s * 1000:>8.2f} "
            f"{cli_s / bot_s:>6.1f}x  {'yes' if same else 'NO'}"
        )
    for name, label, _, bot_s, cli_s, _ in rows:
        result(f"compose_bot_{name}_{label}_ms", bot_s * 1000, "-")
        result(f"compose_cli_{name}_{label}_ms", cli_s * 1000, "-")


if __name__ == "__main__":
    main()
