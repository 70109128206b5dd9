"""`!logs --tail 2000` of 15 kB lines from a real service, on a private swarm and a
local Synapse: `!ping` latency while the bot fetches, masks and posts that log, against
the same bot idle in the same run (target: median < 1.5× idle).

The service (busybox sh) prints 2000 lines of 15 kB, each `DB_PASSWORD=hunter2 n=<i>`
then one 15 000-character word (the shape that made the old masking pattern
quadratic: twenty such lines delayed a `!ping` by 26 s). The bot runs as `coopbot
run` with that swarm as its server. The room's creator (an admin) asks for the logs;
other members (taking turns, under the per-member rate limit) send `!ping` every
0.3 s until the logs' file has arrived. An observer's /sync records every reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from bench.common import (
    Member,
    arguments,
    bench_env,
    machine,
    median,
    p95,
    result,
    rss_mib,
    wait_answering,
)
from bench.flood import observe, ping
from bench.inproc import dockerd
from tests.harness.recipes import make_app_env, make_recipe

TARGET = 1.5
IMAGE = "local/busybox:1.0"
DOMAIN = "logs.bench.test"
STACK = "logs_bench_test"
VERSION = "1.0.0+1.0"


def compose(lines: int, width: int) -> str:
    script = (
        f"W=$$(head -c {width} /dev/zero | tr '\\0' K); i=0; "
        f'while [ $$i -lt {lines} ]; do echo "DB_PASSWORD=hunter2 n=$$i $$W"; '
        "i=$$((i+1)); done; echo END; sleep 36000"
    )
    return f"""version: "3.8"
services:
  app:
    image: {IMAGE}
    command: ["sh", "-c", {json.dumps(script)}]
    stop_grace_period: 1s
    deploy:
      endpoint_mode: dnsrr
      labels:
        - "coop-cloud.${{STACK_NAME}}.version={VERSION}"
"""


async def main() -> None:
    args = arguments(__doc__ or "", lines=2000, width=15_000, pings=15)
    with dockerd("logs", args.keep) as daemon:
        workdir = daemon.workdir.parent
        daemon.import_image(IMAGE)
        abra = workdir / "abra"
        make_recipe(
            abra / "recipes", "logs", [(VERSION, {"compose.yml": compose(args.lines, args.width)})]
        )
        make_app_env(abra, "default", DOMAIN, "logs", VERSION)
        compose_file = abra / "recipes" / "logs" / "compose.yml"
        env_vars = {"STACK_NAME": STACK, "DOMAIN": DOMAIN}
        daemon.cli("stack", "deploy", "-c", str(compose_file), STACK, env=env_vars)
        async with bench_env("logs", args.keep) as env:
            owner = await env.member("owner")
            pingers = [await env.member(f"pinger{n}") for n in range(-(-3 * args.pings // 15))]
            observer = await env.member("observer")
            bot_id = env.register("coopbot")
            room = await owner.create_room(
                invite=[bot_id, observer.user_id, *(p.user_id for p in pingers)]
            )
            for member in (*pingers, observer):
                await member.join(room)
            bot = env.bot(
                "bot",
                bot_id,
                room,
                abra_dir=str(abra),
                servers={"default": {"docker_host": daemon.host}},
            )
            bot.start()
            ready = await wait_answering(owner, room, bot)
            print(f"[logs] the bot answered {ready:.1f} s after its start", flush=True)
            deadline = time.monotonic() + 120
            while "END" not in daemon.cli("service", "logs", "--tail", "1", f"{STACK}_app").stdout:
                if time.monotonic() > deadline:
                    raise RuntimeError("the service did not print its lines within 120 s")
                await asyncio.sleep(1)
            turn = iter(range(10**9))

            def pinger() -> Member:
                return pingers[next(turn) % len(pingers)]

            stop = asyncio.Event()
            watcher = asyncio.create_task(observe(observer, stop))
            try:
                idle = []
                for _ in range(args.pings):
                    idle.append(await ping(pinger(), observer, room))
                    await asyncio.sleep(0.3)
                asked = await owner.send(room, f"!logs {DOMAIN} app --tail {args.lines}")
                started = time.perf_counter()
                during: list[float] = []
                # Until the file (the second reply) is there.
                while len(observer.replies.get(asked, [])) < 2:
                    if time.perf_counter() - started > 600:
                        raise TimeoutError("!logs did not finish within 600 s")
                    during.append(await ping(pinger(), observer, room))
                    await asyncio.sleep(0.3)
                took = observer.replies[asked][-1].at - started
                first = observer.replies[asked][0]
                bot.check()
                peak = rss_mib(bot.pid, "VmHWM")
            finally:
                stop.set()
                with contextlib.suppress(Exception):
                    await watcher
            daemon.cli("stack", "rm", STACK, check=False)
    print()
    print(f"!logs --tail {args.lines} of {args.width // 1000} kB lines ({machine()})")
    print(
        f"answered in {took:.1f} s (excerpt after {first.at - started:.1f} s), "
        f"secret shown: {'hunter2' in first.body}, note: {'showing the last' in first.body}"
    )
    print(f"bot RSS peak {peak:.1f} MiB")
    print(f"{'':14} {'median ms':>10} {'p95 ms':>10} {'max ms':>10}  n")
    for name, values in (("!ping idle", idle), ("!ping !logs", during)):
        ms = [v * 1000 for v in values]
        print(f"{name:14} {median(ms):10.1f} {p95(ms):10.1f} {max(ms):10.1f}  {len(ms)}")
    ratio = median(during) / median(idle)
    print(f"{'ratio':14} {ratio:10.2f}   (target < {TARGET}×)")
    print()
    result("logs_tail_seconds", took, "-")
    result("logs_tail_peak_rss_mib", peak, "-")
    result("logs_tail_ping_median_ratio", ratio, f"<{TARGET}")
    result("logs_tail_ping_p95_ratio", p95(during) / p95(idle), "-")


if __name__ == "__main__":
    asyncio.run(main())
