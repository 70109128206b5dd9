"""Idle memory: the bot's resident set beside a bare nio echo client's.

Each process is started, joins its room, answers one `!ping`, then sits idle for
IDLE seconds (its sync long-poll open) before VmRSS is read from /proc/PID/status
(VmHWM, the peak so far, is shown too). The bot is measured twice: with the
default configuration, and with the /healthz + /metrics web server on, as
config.example.yaml has it.
"""

from __future__ import annotations

import asyncio
import socket

from bench.common import Proc, arguments, bench_env, machine, result, rss_mib, wait_answering

TARGET_MIB = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def main() -> None:
    args = arguments(__doc__ or "", idle=10)
    rows: list[tuple[str, float, float]] = []
    async with bench_env("rss", args.keep) as env:
        member = await env.member("member")
        targets: list[tuple[str, Proc, str]] = []
        for name in ("coopbot", "coopbot+web", "nio echo"):
            user_id = env.register(name.split("+")[0].replace(" ", "-"))
            room_id = await member.create_room(invite=[user_id])
            slug = name.replace(" ", "-").replace("+", "-")
            if name == "nio echo":
                proc = env.echo(slug, user_id, room_id)
            elif name == "coopbot+web":
                proc = env.bot(slug, user_id, room_id, web={"listen": f"127.0.0.1:{free_port()}"})
            else:
                proc = env.bot(slug, user_id, room_id)
            targets.append((name, proc, room_id))
        for name, proc, room_id in targets:
            proc.start()
            await wait_answering(member, room_id, proc)
            print(f"[rss] {name} answered a !ping", flush=True)
        print(f"[rss] idle for {args.idle} s", flush=True)
        await asyncio.sleep(args.idle)
        for name, proc, _ in targets:
            proc.check()
            rows.append((name, rss_mib(proc.pid), rss_mib(proc.pid, "VmHWM")))

    print()
    print(f"Idle RSS after one !ping and {args.idle} s idle ({machine()})")
    print(f"{'':12} {'VmRSS MiB':>10} {'VmHWM MiB':>10}")
    for name, rss, peak in rows:
        print(f"{name:12} {rss:10.1f} {peak:10.1f}")
    worst = max(rss for name, rss, _ in rows if name.startswith("coopbot"))
    echo = next(rss for name, rss, _ in rows if name == "nio echo")
    print(f"bot / echo: {worst / echo:.2f}×   (target: bot < {TARGET_MIB:.0f} MiB)")
    print()
    result("idle_rss_echo_mib", echo, "-")
    result("idle_rss_bot_mib", worst, f"<{TARGET_MIB:.0f}")


if __name__ == "__main__":
    asyncio.run(main())
