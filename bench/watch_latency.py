"""Watch latency: from a service's task failing to the incident message in the room,
beside the time `docker events` itself takes to report that failure, in one run.

One private swarm dockerd. The bot's swarm watch runs in-process (the real `Swarm`
adapter, rules, reporter and SQLite store) behind an in-memory chat that notes
when each message is sent; `watch.failures` is 1, so the first failed task opens
the incident. Beside it, a plain docker SDK client follows `docker events` in a
thread, as any tool would. Each run creates a service whose only task exits 3
(restart condition none), takes the container's `die` event time (the daemon's
own `timeNano`) as the moment of failure, and measures:
- events: when the plain client received that `die` event;
- bot: when the chat was handed the incident message (the event, the settle
  delay of the adapter's snapshot, the snapshot itself, the rules, the store).
Then the service is removed and the incident closes before the next run.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC
from pathlib import Path

import docker

from bench.common import arguments, machine, median, result
from bench.inproc import dockerd
from bot.config import WatchConfig
from bot.core.chat import Membership, Reaction
from bot.core.store import Store
from bot.features.watch import Reporter, Watch
from bot.ops.swarm import Swarm

IMAGE = "local/busybox:1.0"
ROOM = "!bench:local"


class Chat:
    """Only what the reporter uses; every send noted with its wall-clock time."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, str]] = []
        self.changed = asyncio.Event()

    async def send(self, room_id: str, markdown: str, **_: object) -> str:
        self.sent.append((time.time(), markdown))
        self.changed.set()
        return f"$m{len(self.sent)}"

    async def edit(self, room_id: str, event_id: str, markdown: str) -> None:
        return None

    async def home_room(self) -> str | None:
        return ROOM

    async def membership(self, room_id: str, user_id: str) -> Membership:
        return Membership(True, 100)

    async def reactions(self, room_id: str, event_id: str) -> list[Reaction]:
        return []

    async def wait(self, text: str, after: int, timeout: float = 60) -> float:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while True:
                for at, body in self.sent[after:]:
                    if text in body:
                        return at
                self.changed.clear()
                await self.changed.wait()


def follow_events(host: str, dies: dict[str, tuple[float, float]], stop: threading.Event) -> None:
    """The baseline: docker events read by a plain SDK client (service name -> (event
    time, received time))."""
    client = docker.DockerClient(base_url=host, version="auto")
    stream = client.events(decode=True, filters={"type": "container", "event": "die"})

    def closer() -> None:
        stop.wait()
        stream.close()

    threading.Thread(target=closer, daemon=True).start()
    try:
        for event in stream:
            name = (
                (event.get("Actor") or {})
                .get("Attributes", {})
                .get("com.docker.swarm.service.name", "")
            )
            dies.setdefault(name, (event["timeNano"] / 1e9, time.time()))
    except Exception:
        pass  # closed
    finally:
        client.close()


async def main() -> None:
    args = arguments(__doc__ or "", runs=5)
    bot_s: list[float] = []
    events_s: list[float] = []
    with dockerd("watch", args.keep) as daemon:
        daemon.import_image(IMAGE)
        workdir = daemon.workdir.parent
        dies: dict[str, tuple[float, float]] = {}
        stop = threading.Event()
        baseline = threading.Thread(
            target=follow_events, args=(daemon.host, dies, stop), daemon=True
        )
        baseline.start()
        chat = Chat()
        store = Store(Path(workdir) / "watch.sqlite")
        swarm = Swarm(daemon.host)
        config = WatchConfig(failures=1, recover_after=1.0, poll_interval=30.0)
        reporter = Reporter(chat, store, [], zone=UTC)  # type: ignore[arg-type]
        watch = Watch(config, {"bench": swarm}, reporter)
        task = asyncio.create_task(watch.run())
        try:
            await asyncio.sleep(2)  # the first snapshot
            for run in range(1, args.runs + 1):
                name = f"crash{run}"
                before = len(chat.sent)
                daemon.cli(
                    "service", "create", "--detach", "--name", f"{name}_app",
                    "--label", f"com.docker.stack.namespace={name}",
                    "--restart-condition", "none", "--endpoint-mode", "dnsrr",
                    IMAGE, "sh", "-c", "sleep 1; exit 3",
                )  # fmt: skip
                sent = await chat.wait(f"{name}_app", before)
                died, received = dies[f"{name}_app"]
                bot_s.append(sent - died)
                events_s.append(received - died)
                print(
                    f"[watch] run {run}: docker events {events_s[-1]:.3f} s, "
                    f"incident message {bot_s[-1]:.3f} s",
                    flush=True,
                )
                daemon.cli("service", "rm", f"{name}_app")
                await chat.wait("Recovered", len(chat.sent) - 1, timeout=120)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            stop.set()
            await swarm.close()
            store.close()

    bot_med, ev_med = median(bot_s), median(events_s)
    print()
    print(f"Task failure to incident message ({machine()}), {args.runs} runs")
    print(f"docker events:    {', '.join(f'{v:.3f}' for v in events_s)}  median {ev_med:.3f} s")
    print(f"incident message: {', '.join(f'{v:.3f}' for v in bot_s)}  median {bot_med:.3f} s")
    print(f"the bot adds {bot_med - ev_med:+.3f} s (of which the adapter's settle delay is 1 s)")
    result("watch_events_median_s", ev_med, "-")
    result("watch_incident_median_s", bot_med, "-")


if __name__ == "__main__":
    asyncio.run(main())
