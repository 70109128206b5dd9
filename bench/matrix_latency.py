"""Command acknowledgement latency on a local Synapse: the bot beside a bare nio echo client.

One member sends `!ping` to the bot's room and to the echo client's room, in
turns, one command at a time. Latency is the time from the member's room_send
returning to the member's own /sync (long-poll) returning the reply whose
m.in_reply_to is that command. Both responders run in their own process; the
bot with the default configuration (encryption on, 30 s sync long-poll).
"""

from __future__ import annotations

import asyncio
import time

from bench.common import (
    Member,
    Proc,
    arguments,
    bench_env,
    machine,
    median,
    p95,
    result,
    wait_answering,
)

TARGET = 1.3
WARMUP = 10


async def measure(member: Member, room_id: str) -> float:
    event_id = await member.send(room_id, "!ping")
    sent = time.perf_counter()
    reply = await member.wait_reply(event_id, timeout=30)
    return reply.at - sent


async def main() -> None:
    args = arguments(__doc__ or "", commands=200)
    async with bench_env("latency", args.keep) as env:
        member = await env.member("member")
        bot_id, echo_id = env.register("coopbot"), env.register("echo")
        bot_room = await member.create_room(invite=[bot_id])
        echo_room = await member.create_room(invite=[echo_id])
        targets: list[tuple[str, Proc, str]] = [
            ("coopbot", env.bot("bot", bot_id, bot_room), bot_room),
            ("nio echo", env.echo("echo", echo_id, echo_room), echo_room),
        ]
        for name, proc, room_id in targets:
            proc.start()
            ready = await wait_answering(member, room_id, proc)
            print(f"[latency] {name} answered {ready:.1f} s after its start", flush=True)
        samples: dict[str, list[float]] = {name: [] for name, _, _ in targets}
        for number in range(WARMUP + args.commands):
            # Alternate who goes first, so neither always follows the other.
            order = targets if number % 2 == 0 else targets[::-1]
            for name, proc, room_id in order:
                proc.check()
                latency = await measure(member, room_id)
                if number >= WARMUP:
                    samples[name].append(latency)
        if not member.gapless:
            print("[latency] WARNING: the member's sync was limited; replies may be missing")

    bot, echo = samples["coopbot"], samples["nio echo"]
    print()
    print(f"Command acknowledgement latency, {args.commands} × !ping each ({machine()})")
    print(f"{'':12} {'median ms':>10} {'p95 ms':>10} {'min ms':>10} {'max ms':>10}")
    for name, values in samples.items():
        ms = [v * 1000 for v in values]
        print(f"{name:12} {median(ms):10.1f} {p95(ms):10.1f} {min(ms):10.1f} {max(ms):10.1f}")
    ratio_median, ratio_p95 = median(bot) / median(echo), p95(bot) / p95(echo)
    print(f"{'ratio':12} {ratio_median:10.2f} {ratio_p95:10.2f}   (target ≤ {TARGET}×)")
    print()
    result("ack_latency_bot_median_ms", median(bot) * 1000, "-")
    result("ack_latency_bot_p95_ms", p95(bot) * 1000, "-")
    result("ack_latency_p95_ratio", ratio_p95, f"<={TARGET}")
    result("ack_latency_median_ratio", ratio_median, f"<={TARGET}")


if __name__ == "__main__":
    asyncio.run(main())
