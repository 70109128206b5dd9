"""A flood: 500 commands from 5 members in 10 s against the bot on a local Synapse,
while a sixth member measures `!ping` latency, against the same bot idle in the same
run (target: flood median < 2× idle).

The five flooders are viewers in the bot's room; each sends 100 commands (`!ping`,
`!help`, `!upgrades`, `!jobs` in turn) at an even pace over 10 s. The bot's per-member
rate limit (jobs.member_rate, default 20 a minute) answers the first 20 of each, tells
each member once to slow down, and drops the rest without a word. An observer's own
/sync records every reply; the sixth member's `!ping` latency is from its room_send
returning to the observer's sync returning the reply. Peak memory is the bot
process's VmHWM from /proc after the flood.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import nio

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

TARGET = 2.0
COMMANDS = ("!ping", "!help", "!upgrades", "!jobs")


async def observe(observer: Member, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await observer.poll(200)


async def ping(pinger: Member, observer: Member, room: str, timeout: float = 120) -> float:  # noqa: ASYNC109
    event_id = await pinger.send(room, "!ping")
    sent = time.perf_counter()
    deadline = sent + timeout
    while event_id not in observer.replies:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"no answer to !ping {event_id} within {timeout}s")
        await asyncio.sleep(0.005)
    return observer.replies[event_id][0].at - sent


def member_gapless(member: Member) -> bool:
    return member.gapless


async def observer_join(owner: Member, room: str, observer: Member) -> None:
    response = await owner.client.room_invite(room, observer.user_id)
    if not isinstance(response, nio.RoomInviteResponse):
        raise RuntimeError(f"invite: {response}")
    await observer.join(room)


async def flood(member: Member, room: str, count: int, seconds: float) -> list[str]:
    sent = []
    start = time.perf_counter()
    for n in range(count):
        delay = start + n * seconds / count - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent.append(await member.send(room, COMMANDS[n % len(COMMANDS)]))
    return sent


async def main() -> None:
    args = arguments(__doc__ or "", members=5, commands=500, seconds=10, pings=20)
    async with bench_env("flood", args.keep) as env:
        owner = await env.member("owner")
        flooders = [await env.member(f"flood{n}") for n in range(args.members)]
        # The "sixth member" is a few accounts taking turns, so that its own pings stay
        # under the per-member rate limit in both phases (15 each at most).
        pingers = [await env.member(f"pinger{n}") for n in range(-(-4 * args.pings // 15))]
        observer = await env.member("observer")
        bot_id = env.register("coopbot")
        members = [m.user_id for m in (*flooders, *pingers, observer)]
        room = await owner.create_room(invite=[bot_id, *members])
        for member in (*flooders, *pingers, observer):
            await member.join(room)
        turn = iter(range(10**9))

        def pinger() -> Member:
            return pingers[next(turn) % len(pingers)]

        bot = env.bot("bot", bot_id, room)
        bot.start()
        ready = await wait_answering(owner, room, bot)
        print(f"[flood] the bot answered {ready:.1f} s after its start", flush=True)
        # The control: a bare nio echo client in a room of its own on the same Synapse,
        # pinged the same way in both phases; what slows it is the homeserver and the
        # machine, not the bot.
        echo_id = env.register("echo")
        echo_room = await owner.create_room(invite=[echo_id, *(p.user_id for p in pingers)])
        await observer_join(owner, echo_room, observer)
        for member in pingers:
            await member.join(echo_room)
        echo = env.echo("echo", echo_id, echo_room)
        echo.start()
        await wait_answering(owner, echo_room, echo)
        stop = asyncio.Event()
        watcher = asyncio.create_task(observe(observer, stop))
        try:
            idle, echo_idle = [], []
            for _ in range(args.pings):
                idle.append(await ping(pinger(), observer, room))
                echo_idle.append(await ping(pinger(), observer, echo_room))
            per_member = args.commands // args.members
            floods = [
                asyncio.create_task(flood(m, room, per_member, args.seconds)) for m in flooders
            ]
            during: list[float] = []
            echo_during: list[float] = []
            started = time.perf_counter()
            while not all(f.done() for f in floods):
                during.append(await ping(pinger(), observer, room))
                echo_during.append(await ping(pinger(), observer, echo_room))
                await asyncio.sleep(max(0.0, args.seconds / args.pings - during[-1]))
            sent = [event for f in floods for event in await f]
            flood_took = time.perf_counter() - started
            # Let the bot finish what it took on, then count.
            await asyncio.sleep(15)
            bot.check()
            peak = rss_mib(bot.pid, "VmHWM")
            now = rss_mib(bot.pid)
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await watcher
    answered = [e for e in sent if e in observer.replies]
    refusals = [e for e in answered if "Slow down" in observer.replies[e][0].body]
    shares = [e for e in answered if observer.replies[e][0].body.startswith("Sharing the ")]
    # A shared `!upgrades` is a note and then the report: two replies by design.
    repeated = [
        e
        for e in answered
        if len([r for r in observer.replies[e] if not r.body.startswith("Sharing the ")]) > 1
    ]
    print()
    print(
        f"Flood: {len(sent)} commands from {args.members} members in {flood_took:.1f} s "
        f"({machine()})"
    )
    print(
        f"answered {len(answered) - len(refusals)} ({len(shares)} sharing a running check), "
        f"refused (slow down) {len(refusals)},"
    )
    print(
        f"dropped silently after the refusal {len(sent) - len(answered)}, answered twice "
        f"{len(repeated)}"
    )
    print(f"bot RSS: peak {peak:.1f} MiB, after {now:.1f} MiB")
    print(f"{'':14} {'median ms':>10} {'p95 ms':>10} {'max ms':>10}")
    for name, values in (
        ("!ping idle", idle),
        ("!ping flood", during),
        ("echo idle", echo_idle),
        ("echo flood", echo_during),
    ):
        ms = [v * 1000 for v in values]
        print(f"{name:14} {median(ms):10.1f} {p95(ms):10.1f} {max(ms):10.1f}")
    ratio = median(during) / median(idle)
    echo_ratio = median(echo_during) / median(echo_idle)
    print(f"{'bot ratio':14} {ratio:10.2f}   (target < {TARGET}×)")
    print(f"{'echo ratio':14} {echo_ratio:10.2f}   (the homeserver and machine alone)")
    for event in repeated[:3]:
        print("answered twice:", [r.body[:60] for r in observer.replies[event]])
    if not member_gapless(observer):
        print("WARNING: the observer's sync was limited; replies may be missing")
    print()
    result("flood_answered", len(answered) - len(refusals), "-")
    result("flood_refused", len(refusals), "-")
    result("flood_answered_twice", len(repeated), "0")
    result("flood_shared_checks", len(shares), "-")
    result("flood_peak_rss_mib", peak, "-")
    result("flood_ping_median_ratio", ratio, f"<{TARGET}")
    result("flood_ping_p95_ratio", p95(during) / p95(idle), "-")
    result("flood_echo_ping_median_ratio", echo_ratio, "-")


if __name__ == "__main__":
    asyncio.run(main())
