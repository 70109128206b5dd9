"""Catching up on a backlog: the bot beside a bare nio echo client.

Each responder runs once (so it has joined and holds a sync token), is stopped,
and a backlog is posted to its room by a few concurrent members: 2,000 messages
of which 20, spread evenly, are `!ping`. Then the responder is started again and
the time from its process start until all 20 replies arrived is measured. Every
reply is checked: exactly one per command, none to anything else, no replay of
what it answered before the stop.

The echo client catches up the way the bot does: a since token saved to disk,
and a `limited` sync timeline (50 events per sync) filled from /messages back to
that token in pages of 100.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bench.common import (
    Member,
    Proc,
    arguments,
    bench_env,
    machine,
    result,
    wait_answering,
)

TARGET = 2.0
SENDERS = 4
CATCHUP_TIMEOUT = 300.0
LINGER = 5.0  # seconds to keep listening for stray replies after the last expected one


@dataclass
class Outcome:
    name: str
    posted_s: float
    first_reply_s: float
    all_replies_s: float
    answered: int  # distinct commands answered
    problems: list[str]


async def post_backlog(
    senders: list[Member], room_id: str, messages: int, commands: int
) -> set[str]:
    """Post the backlog; return the event ids of the commands."""
    command_at = {int((n + 0.5) * messages / commands) for n in range(commands)}
    command_ids: set[str] = set()

    async def post(first: int) -> None:
        sender = senders[first]
        for number in range(first, messages, len(senders)):
            if number in command_at:
                command_ids.add(await sender.send(room_id, "!ping"))
            else:
                await sender.send(room_id, f"chatter {number}: the backup finished, all good")

    await asyncio.gather(*(post(first) for first in range(len(senders))))
    return command_ids


async def run(
    name: str, proc: Proc, room_id: str, senders: list[Member], messages: int, commands: int
) -> Outcome:
    member = senders[0]
    proc.start()
    await wait_answering(member, room_id, proc)
    proc.stop()
    print(f"[backlog] {name} ran once and stopped; posting {messages} messages", flush=True)
    started = time.perf_counter()
    command_ids = await post_backlog(senders, room_id, messages, commands)
    posted = time.perf_counter() - started
    print(f"[backlog] posted in {posted:.0f} s; starting {name} again", flush=True)
    await member.poll(0, allow_gap=True)  # the member's token moves past the backlog
    before = {key: len(replies) for key, replies in member.replies.items()}
    proc.start()
    deadline = proc.started_at + CATCHUP_TIMEOUT
    while not command_ids <= member.replies.keys() and time.perf_counter() < deadline:
        proc.check()
        await member.poll()
    answered = command_ids & member.replies.keys()
    done = max((member.replies[key][0].at for key in answered), default=float("nan"))
    first = min((member.replies[key][0].at for key in answered), default=float("nan"))
    linger_until = time.perf_counter() + LINGER
    while time.perf_counter() < linger_until:
        await member.poll(int(LINGER * 1000))
    proc.stop()

    problems: list[str] = []
    if len(answered) < len(command_ids):
        problems.append(f"{len(command_ids) - len(answered)} commands never answered")
    for key, replies in member.replies.items():
        new = replies[before.get(key, 0) :]
        if not new:
            continue
        if key not in command_ids:
            problems.append(f"reply to a non-command or old event {key}: {new[0].body!r}")
        elif len(new) > 1:
            problems.append(f"{len(new)} replies to command {key}")
        elif "pong" not in new[0].body:
            problems.append(f"unexpected reply to {key}: {new[0].body!r}")
    if not member.gapless:
        problems.append("the member's own sync was limited: replies may have been missed")
    return Outcome(
        name, posted, first - proc.started_at, done - proc.started_at, len(answered), problems
    )


async def main() -> None:
    args = arguments(__doc__ or "", messages=2000, commands=20)
    async with bench_env("backlog", args.keep) as env:
        member = await env.member("member")
        others = [await env.member(f"sender{n}") for n in range(1, SENDERS)]
        senders = [member, *others]
        bot_id, echo_id = env.register("coopbot"), env.register("echo")
        outcomes = []
        for name, user_id, start in (("coopbot", bot_id, env.bot), ("nio echo", echo_id, env.echo)):
            room_id = await member.create_room(invite=[user_id, *(s.user_id for s in others)])
            for sender in others:
                await sender.join(room_id)
            proc = start(name.replace(" ", "-"), user_id, room_id)
            outcomes.append(await run(name, proc, room_id, senders, args.messages, args.commands))

    print()
    print(
        f"Backlog catch-up: {args.messages} messages with {args.commands} × !ping "
        f"posted while stopped ({machine()})"
    )
    print("echo catch-up: saved since token + /messages pagination of a limited sync, as the bot")
    print(f"{'':10} {'posted s':>9} {'1st reply s':>12} {'all replies s':>14} {'answered':>9}  ok")
    for o in outcomes:
        ok = "yes" if not o.problems else "NO"
        print(
            f"{o.name:10} {o.posted_s:9.1f} {o.first_reply_s:12.2f} {o.all_replies_s:14.2f} "
            f"{o.answered:>4}/{args.commands:<4}  {ok}"
        )
        for problem in o.problems[:10]:
            print(f"    {o.name}: {problem}")
    bot, echo = outcomes
    ratio = bot.all_replies_s / echo.all_replies_s
    print(f"{'ratio':10} {'':9} {'':12} {ratio:14.2f}   (target ≤ {TARGET}×)")
    print("times are from the process start (interpreter, imports and login included)")
    print()
    result("backlog_bot_all_replies_s", bot.all_replies_s, "-")
    result("backlog_bot_correct", float(not bot.problems), "=1")
    result("backlog_ratio", ratio, f"<={TARGET}")


if __name__ == "__main__":
    asyncio.run(main())
