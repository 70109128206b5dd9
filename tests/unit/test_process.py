"""bot.ops.process with real short-lived processes (sh -c, sleep): capture, streaming,
caps, timeouts and cancellation, and that no child or grandchild outlives a call."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path

import pytest

from bot.ops import process
from bot.ops.process import ProcessTimeout, read_lines, run_process

ENV = {"PATH": os.environ.get("PATH", os.defpath)}


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that is not us counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def reaped(pid: int) -> bool:
    """Gone from the process table: not even a zombie (/proc is in memory, no I/O)."""
    return not os.path.exists(f"/proc/{pid}")


async def gone(pid: int, within: float = 2.0) -> bool:
    """A grandchild is reparented and reaped by someone else: give it a moment."""
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


async def test_result_and_explicit_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COOPBOT_LEAK", "secret")
    res = await run_process(
        sh('echo "out $GREETING ${COOPBOT_LEAK:-none}"; echo err >&2; exit 3'),
        env={**ENV, "GREETING": "hi"},
    )
    assert res.returncode == 3
    assert res.stdout == "out hi none\n"
    assert res.stderr == "err\n"
    assert 0 < res.duration < 5
    assert not res.stdout_truncated
    assert not res.stderr_truncated


async def test_stdin_and_cwd(tmp_path: Path) -> None:
    res = await run_process(sh("pwd; cat"), env=ENV, cwd=tmp_path, stdin=b"fed\nlines")
    assert res.stdout == f"{os.fspath(tmp_path)}\nfed\nlines"
    # without stdin the child reads /dev/null, it does not wait for us
    assert (await run_process(["cat"], env=ENV, timeout=5)).stdout == ""
    # a child that does not read a large stdin does not hang the call
    res = await run_process(sh("exit 0"), env=ENV, stdin=b"x" * 5_000_000, timeout=5)
    assert res.returncode == 0


async def test_killed_by_a_signal_is_a_negative_code() -> None:
    res = await run_process(sh("kill -TERM $$"), env=ENV)
    assert res.returncode == -signal.SIGTERM


async def test_a_missing_program_raises_oserror() -> None:
    with pytest.raises(FileNotFoundError):
        await run_process(["/nonexistent/coopbot-tool"], env=ENV)
    with pytest.raises(ValueError, match="needs a program"):
        await run_process([], env=ENV)


async def test_lines_are_streamed_while_the_child_runs() -> None:
    seen: list[tuple[str, float]] = []
    errors: list[str] = []

    async def on_stdout(line: str) -> None:
        seen.append((line, time.monotonic()))

    t0 = time.monotonic()
    res = await run_process(
        sh("echo first; echo warn >&2; sleep 0.5; printf 'second\\r\\nno newline'"),
        env=ENV,
        on_stdout=on_stdout,
        on_stderr=errors.append,  # a sync callback works too
    )
    assert [line for line, _ in seen] == ["first", "second", "no newline"]
    assert seen[0][1] - t0 < 0.4 < seen[1][1] - t0  # "first" came before the sleep
    assert errors == ["warn"]
    # the capture still holds the raw output
    assert res.stdout == "first\nsecond\r\nno newline"
    assert res.stderr == "warn\n"


async def test_output_is_capped_to_its_last_bytes() -> None:
    script = "head -c 3000000 /dev/zero | tr '\\0' x; echo END; head -c 500000 /dev/zero >&2"
    res = await run_process(sh(script), env=ENV, stdout_limit=100_000, stderr_limit=1000)
    assert len(res.stdout) == 100_000
    assert res.stdout.endswith("xxxxEND\n")
    assert res.stdout_truncated
    assert res.stderr_truncated
    assert len(res.stderr) == 1000
    res = await run_process(sh("echo hidden"), env=ENV, stdout_limit=0)
    assert res.stdout == ""
    assert res.stdout_truncated


def test_tail_holds_at_most_limit_plus_one_chunk() -> None:
    tail = process._Tail(10)
    for _ in range(100):
        tail.add(b"abcdefg")
        assert tail._size <= 10 + 7
    assert tail.text() == "efgabcdefg"
    assert tail.truncated


async def test_a_long_line_reaches_a_callback_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process, "LINE_LIMIT", 1000)
    lines: list[str] = []
    await run_process(sh("head -c 2500 /dev/zero | tr '\\0' y; echo; echo z"), env=ENV,
                      on_stdout=lines.append)  # fmt: skip
    assert [len(x) for x in lines] == [1000, 1000, 500, 1]
    assert lines[-1] == "z"


async def test_read_lines_without_a_limit() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"a" * 200_000 + b"\nb\r\n\xff")
    reader.feed_eof()
    assert [len(x) async for x in read_lines(reader)] == [200_000, 1, 1]


async def test_timeout_kills_the_whole_group() -> None:
    t0 = time.monotonic()
    with pytest.raises(ProcessTimeout) as info:
        # sh waits for a background sleep: both are in the child's process group
        await run_process(sh("sleep 300 & echo $$ $!; wait"), env=ENV, timeout=0.5)
    assert 0.4 < time.monotonic() - t0 < 5
    assert isinstance(info.value, TimeoutError)
    assert "took more than 0.5s" in str(info.value)
    res = info.value.result
    assert res.returncode == -signal.SIGKILL
    shell, sleeper = map(int, res.stdout.split())
    assert reaped(shell)  # reaped, not a zombie
    assert await gone(sleeper)


async def test_leftover_helpers_are_killed_when_the_leader_has_exited() -> None:
    # The leader exits at once; its helper keeps stdout open, so the call waits for it.
    with pytest.raises(ProcessTimeout) as info:
        await run_process(sh("sleep 300 & echo $!"), env=ENV, timeout=0.5)
    assert await gone(int(info.value.result.stdout))


async def test_stop_signal_then_kill_after_the_grace(caplog: pytest.LogCaptureFixture) -> None:
    # A child that stops on SIGINT gets no SIGKILL...
    script = "trap 'echo stopping; exit 7' INT; echo ready; while :; do sleep 0.05; done"
    with pytest.raises(ProcessTimeout) as info:
        await run_process(sh(script), env=ENV, timeout=0.5, stop_signal=signal.SIGINT, stop_grace=5)
    assert info.value.result.returncode == 7
    assert "killing it" not in caplog.text
    # ...one that ignores it is killed once the grace is over, with a warning.
    t0 = time.monotonic()
    with pytest.raises(ProcessTimeout) as info:
        await run_process(
            sh("trap '' INT; echo $$; exec sleep 300"),
            env=ENV,
            timeout=0.3,
            stop_signal=signal.SIGINT,
            stop_grace=0.5,
            kill_note="its lock stays",
        )
    assert 0.7 < time.monotonic() - t0 < 5
    assert info.value.result.returncode == -signal.SIGKILL
    assert reaped(int(info.value.result.stdout))
    assert "ignored SIGINT for 0.5s: killing it (its lock stays)" in caplog.text


async def test_cancelling_kills_and_reaps_the_child() -> None:
    pids: list[int] = []
    started = asyncio.Event()

    def on_stdout(line: str) -> None:
        pids.extend(map(int, line.split()))
        started.set()

    task = asyncio.create_task(
        run_process(sh("sleep 300 & echo $$ $!; wait"), env=ENV, on_stdout=on_stdout)
    )
    await asyncio.wait_for(started.wait(), 5)
    shell, sleeper = pids
    assert alive(shell)
    assert alive(sleeper)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert reaped(shell)  # reaped before the call returned
    assert await gone(sleeper)


async def test_a_callback_error_stops_the_child_and_comes_through() -> None:
    pids: list[int] = []

    async def on_stdout(line: str) -> None:
        pids.append(int(line))
        raise RuntimeError("chat is down")

    with pytest.raises(RuntimeError, match="chat is down"):
        await run_process(sh("echo $$; exec sleep 300"), env=ENV, on_stdout=on_stdout)
    assert reaped(pids[0])

    # a callback's own TimeoutError is not mistaken for the call's timeout
    def slow(line: str) -> None:
        raise TimeoutError("callback")

    with pytest.raises(TimeoutError, match="callback") as info:
        await run_process(sh("echo x; sleep 300"), env=ENV, on_stderr=None, on_stdout=slow)
    assert not isinstance(info.value, ProcessTimeout)


async def test_no_log_warning_for_a_plain_kill(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ProcessTimeout):
        await run_process(["sleep", "300"], env=ENV, timeout=0.2)
    assert "killing it" not in caplog.text
