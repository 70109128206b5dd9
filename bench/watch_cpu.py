"""Watch CPU: the bot's CPU use while its swarm watch follows 50 idle stacks for a
minute, beside the CPU of a plain `docker events` client idle in the same run.

One private swarm dockerd with `--stacks` stacks of one busybox service each
(dnsrr, no ports, `sleep`), all running before anything is measured. The watch
runs in this process (the real `Swarm` adapter with its event stream and poll
fallback, the rules, the reporter, a SQLite store; an in-memory chat), so this
process's CPU time is what the watch costs. Beside it, `docker events` (the CLI,
as an operator would leave it open) runs as a child process. After a warm-up (the
watch's first snapshot), both processes' CPU time (utime + stime, threads and
waited-for children included, from /proc/<pid>/stat) is read at the start and the end of
`--seconds`, and compared.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from datetime import UTC
from pathlib import Path

from bench.common import arguments, machine, result
from bench.inproc import dockerd
from bench.watch_latency import Chat
from bot.config import WatchConfig
from bot.core.store import Store
from bot.features.watch import Reporter, Watch
from bot.ops.swarm import Swarm
from bot.ops.swarm.events import SwarmSnapshot
from tests.harness.dockerd import DOCKER, Dockerd

IMAGE = "local/busybox:1.0"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str = "self") -> float:
    """utime + stime of a process (all its threads) and of its children it waited for
    (a docker CLI the adapter ran, if any), from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # after the command name
    return sum(int(f) for f in fields[11:15]) / TICK  # fields 14-17 of proc(5)


def running(daemon: Dockerd) -> int:
    """Services whose one task runs."""
    out = daemon.cli("service", "ls", "--format", "{{.Replicas}}").stdout
    return sum(1 for line in out.split() if line == "1/1")


async def main() -> None:
    args = arguments(__doc__ or "", stacks=50, seconds=60)
    with dockerd("watch-cpu", args.keep) as daemon:
        daemon.import_image(IMAGE)
        started = time.monotonic()
        for i in range(args.stacks):
            daemon.cli(
                "service", "create", "--detach", "--quiet", "--name", f"idle{i:02d}_app",
                "--label", f"com.docker.stack.namespace=idle{i:02d}",
                "--endpoint-mode", "dnsrr", IMAGE, "sleep", "1d",
            )  # fmt: skip
        while (up := running(daemon)) < args.stacks:
            if time.monotonic() - started > 600:
                raise RuntimeError(f"only {up} of {args.stacks} services running after 10 min")
            await asyncio.sleep(2)
        print(f"[watch-cpu] {args.stacks} stacks running after "
              f"{time.monotonic() - started:.0f} s", flush=True)  # fmt: skip

        events = await asyncio.create_subprocess_exec(
            DOCKER, "-H", daemon.host, "events", env=daemon.cli_env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        chat = Chat()
        store = Store(Path(daemon.workdir.parent) / "watch.sqlite")
        swarm = Swarm(daemon.host)
        reporter = Reporter(chat, store, [], zone=UTC)  # type: ignore[arg-type]
        watch = Watch(WatchConfig(), {"bench": swarm}, reporter)
        snapshots = 0
        take = watch.snapshot

        async def counted(server: str, snap: SwarmSnapshot) -> None:
            nonlocal snapshots
            snapshots += 1
            await take(server, snap)

        watch.snapshot = counted  # type: ignore[method-assign]
        task = asyncio.create_task(watch.run())
        try:
            await asyncio.sleep(10)  # warm-up: the first snapshot, the event stream open
            bot0, ev0, wall0 = cpu_seconds(), cpu_seconds(events.pid), time.monotonic()
            seen = snapshots
            await asyncio.sleep(args.seconds)
            bot1, ev1, wall1 = cpu_seconds(), cpu_seconds(events.pid), time.monotonic()
            seen = snapshots - seen
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            events.terminate()  # our own child, by its pid
            await asyncio.wait_for(events.wait(), 15)
            await swarm.close()
            store.close()

    wall = wall1 - wall0
    bot_cpu, ev_cpu = bot1 - bot0, ev1 - ev0
    print()
    print(f"Watching {args.stacks} idle stacks for {wall:.0f} s ({machine()})")
    print(f"bot (watch in-process): {bot_cpu:.2f} s CPU = {100 * bot_cpu / wall:.3f} % of a core")
    print(f"docker events (CLI):    {ev_cpu:.2f} s CPU = {100 * ev_cpu / wall:.3f} % of a core")
    poll = WatchConfig().poll_interval
    print(f"snapshots the watch took meanwhile: {seen} (poll_interval {poll:.0f} s)")
    print(f"messages the idle watch sent: {len(chat.sent)}")
    result("watch_cpu_percent", 100 * bot_cpu / wall, "-")
    result("docker_events_cpu_percent", 100 * ev_cpu / wall, "-")


if __name__ == "__main__":
    asyncio.run(main())
