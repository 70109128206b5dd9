"""The one async subprocess runner of the bot (restic, git and the docker CLI use it).

What every caller gets, so no adapter has to get it right on its own:
- An argument list, never a shell, and an explicit environment: the child sees only the
  variables the caller passes (`env` has no default), never the bot's own secrets.
- stdin is /dev/null unless `stdin` bytes are given (written while the output is read,
  so a child that writes before it reads cannot deadlock with us).
- stdout and stderr are read as they come. `on_stdout` / `on_stderr` get every line
  (restic's `--json` status lines arrive while it runs); a line callback may be sync or
  async. Each stream's capture keeps only its last `*_limit` bytes, so a chatty child
  cannot fill the bot's memory; the result says when something was cut.
- The child runs in its own session (a Ctrl-C in `coopbot console` does not reach it)
  and is stopped as a process group: wrapper scripts, and the ssh/rclone helpers restic
  starts, go with it. On timeout, cancellation or an exception from a callback the
  group gets `stop_signal` (SIGKILL unless the caller asks otherwise: restic wants
  SIGINT, on which it removes its lock), then SIGKILL after `stop_grace` seconds; the
  call only returns (or raises) once the child is reaped.
- A child that cannot be started raises the OSError of `create_subprocess_exec`
  (FileNotFoundError, PermissionError); a timeout raises ProcessTimeout, which carries
  what was captured until then. No retries: whether a run may be repeated is the
  caller's call.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

STDOUT_LIMIT = 1024 * 1024  # bytes of stdout kept by default (the last ones)
STDERR_LIMIT = 64 * 1024  # bytes of stderr kept by default
# A "line" longer than this is handed to a line callback in pieces: a child printing
# megabytes without a newline must not grow one buffer without end.
LINE_LIMIT = 16 * 1024 * 1024

_CHUNK = 64 * 1024

LineCallback = Callable[[str], Awaitable[None] | None]


@dataclass(frozen=True)
class ProcessResult:
    returncode: int  # negative: killed by that signal (asyncio's convention)
    stdout: str  # the last `stdout_limit` bytes, decoded (invalid UTF-8 replaced)
    stderr: str  # the last `stderr_limit` bytes, decoded
    duration: float  # seconds, start to reaping
    stdout_truncated: bool = False  # True when more was printed than was kept
    stderr_truncated: bool = False


class ProcessTimeout(TimeoutError):
    """The child ran longer than `timeout` seconds and was stopped; `result` holds
    what it printed until then (its returncode is the stopped child's)."""

    def __init__(self, argv: Sequence[str], timeout: float, result: ProcessResult) -> None:
        super().__init__(f"{os.path.basename(argv[0])} took more than {timeout:g}s")
        self.argv = list(argv)
        self.timeout = timeout
        self.result = result


class _Tail:
    """The last `limit` bytes written: whole chunks are dropped from the front, so at
    most `limit` plus one chunk is held at any time."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self.truncated = False

    def add(self, data: bytes) -> None:
        if self.limit == 0:
            self.truncated = self.truncated or bool(data)
            return
        self._chunks.append(data)
        self._size += len(data)
        while self._chunks and self._size - len(self._chunks[0]) >= self.limit:
            self._size -= len(self._chunks.popleft())
            self.truncated = True

    def text(self) -> str:
        data = b"".join(self._chunks)
        if len(data) > self.limit:
            data = data[-self.limit :]
            self.truncated = True
        return data.decode(errors="replace")


async def read_lines(
    stream: asyncio.StreamReader, *, max_line: int | None = None
) -> AsyncGenerator[str, None]:
    """Lines as they come, without StreamReader.readline's 64 KiB limit (restic's
    `snapshots --json` is one line); "\\r\\n" counts as a line end and invalid UTF-8 is
    replaced. With `max_line`, a longer stretch without a newline comes in pieces."""
    async with contextlib.aclosing(_chunks_as_lines(stream, None, max_line)) as lines:
        async for line in lines:
            yield line


async def _chunks_as_lines(
    stream: asyncio.StreamReader, tail: _Tail | None, max_line: int | None
) -> AsyncGenerator[str, None]:
    buf = bytearray()
    while chunk := await stream.read(_CHUNK):
        if tail is not None:
            tail.add(chunk)
        buf += chunk
        start = 0
        while (nl := buf.find(b"\n", start)) >= 0:
            # A long line that arrived whole comes in pieces too, as one that
            # arrived over several chunks does.
            while max_line is not None and nl - start > max_line:
                yield buf[start : start + max_line].decode(errors="replace")
                start += max_line
            yield buf[start:nl].decode(errors="replace").rstrip("\r")
            start = nl + 1
        del buf[:start]
        while max_line is not None and len(buf) > max_line:
            yield buf[:max_line].decode(errors="replace")
            del buf[:max_line]
    if buf:
        yield buf.decode(errors="replace").rstrip("\r")


async def _pump(stream: asyncio.StreamReader, tail: _Tail, on_line: LineCallback | None) -> None:
    if on_line is None:  # nobody wants lines: just keep the tail
        while chunk := await stream.read(_CHUNK):
            tail.add(chunk)
        return
    async with contextlib.aclosing(_chunks_as_lines(stream, tail, LINE_LIMIT)) as lines:
        async for line in lines:
            result = on_line(line)
            if inspect.isawaitable(result):
                await result


async def _feed(writer: asyncio.StreamWriter, data: bytes) -> None:
    # A child may exit (or close stdin) without reading it all: that is its business.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        writer.write(data)
        await writer.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        writer.close()
        await writer.wait_closed()


def signal_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """Signal the child's process group (it leads one: start_new_session), or at least
    the child. Safe after the leader has exited: Linux does not hand out a pid again
    while a process group of that id has members."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)


async def _stop(
    proc: asyncio.subprocess.Process,
    stop_signal: signal.Signals,
    grace: float,
    label: str,
    kill_note: str,
) -> None:
    """`stop_signal` to the group, SIGKILL after `grace` seconds; returns once reaped.
    A second cancellation meanwhile cuts the grace short, not the reaping."""
    try:
        if proc.returncode is None and stop_signal != signal.SIGKILL:
            signal_group(proc, stop_signal)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), grace)
    finally:
        if proc.returncode is None:
            if stop_signal != signal.SIGKILL:
                log.warning(
                    "%s pid %s ignored %s for %gs: killing it%s",
                    label,
                    proc.pid,
                    stop_signal.name,
                    grace,
                    f" ({kill_note})" if kill_note else "",
                )
            signal_group(proc, signal.SIGKILL)
            await proc.wait()
        # Helpers left in the group (the leader has gone) would hold the pipes open.
        signal_group(proc, signal.SIGKILL)


async def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | str | None = None,
    stdin: bytes | None = None,
    # Not just asyncio.timeout around the call (which works too: it cancels, and the
    # child is stopped): this way the caller also gets what the child printed.
    timeout: float | None = None,  # noqa: ASYNC109
    on_stdout: LineCallback | None = None,
    on_stderr: LineCallback | None = None,
    stdout_limit: int = STDOUT_LIMIT,
    stderr_limit: int = STDERR_LIMIT,
    stop_signal: signal.Signals = signal.SIGKILL,
    stop_grace: float = 0.0,
    kill_note: str = "",
) -> ProcessResult:
    """Run `argv` to its end (see the module docstring). `kill_note` is added to the
    warning logged when the child ignores `stop_signal` and has to be killed."""
    if not argv:
        raise ValueError("run_process needs a program to run")
    label = os.path.basename(argv[0])
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out, err = _Tail(stdout_limit), _Tail(stderr_limit)
    tasks = [
        asyncio.create_task(_pump(proc.stdout, out, on_stdout), name=f"{label}-stdout-{proc.pid}"),
        asyncio.create_task(_pump(proc.stderr, err, on_stderr), name=f"{label}-stderr-{proc.pid}"),
    ]
    if stdin is not None:
        assert proc.stdin is not None
        tasks.append(asyncio.create_task(_feed(proc.stdin, stdin), name=f"{label}-stdin"))

    def result() -> ProcessResult:
        return ProcessResult(
            returncode=proc.returncode if proc.returncode is not None else -signal.SIGKILL,
            stdout=out.text(),
            stderr=err.text(),
            duration=time.monotonic() - started,
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
        )

    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a callback's exception (or a read error) comes through
            await proc.wait()
    except BaseException as e:
        # Timed out, cancelled or a callback raised: nothing of the child outlives the
        # call (helpers left in its group included, even when the leader has exited).
        await _stop(proc, stop_signal, stop_grace, label, kill_note)
        await _finish(tasks)
        if isinstance(e, TimeoutError) and deadline.expired():
            raise ProcessTimeout(argv, timeout or 0.0, result()) from e
        raise
    log.debug("%s pid %s exited %s", label, proc.pid, proc.returncode)
    return result()


async def _finish(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the readers/writer still running and wait for them (their pipes close
    once the child's group is gone, so this does not hang)."""
    for task in tasks:
        if not task.done():
            task.cancel()
    if tasks:
        await asyncio.wait(tasks)
    for task in tasks:  # retrieved, so asyncio does not log "exception never retrieved"
        if not task.cancelled():
            task.exception()
