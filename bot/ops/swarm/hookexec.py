"""A hook's command run in a container with its output bounded in memory.

docker-py's `exec_run(stream=False)` keeps everything the command prints: a database
dump hook that writes its dump to stdout by mistake would fill the bot's memory. Here
the output is streamed and only the last `limit` bytes are kept, with a first line
saying how much was left out. Blocking (docker-py): callers run it in a thread."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

OUTPUT_LIMIT = 64 * 1024  # bytes of a hook's output kept (the last ones)
# Bytes of one service's logs `!logs` reads (the newest): as much as its file holds
# (bot/redact.py FILE_LIMIT), so a service with long lines cannot fill the bot's memory.
LOG_LIMIT = 8 * 1024 * 1024


class BoundedTail:
    """The last `limit` bytes of a stream: whole chunks go from the front, so at most
    `limit` plus one chunk is held at any moment; `dropped` counts what went."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self.dropped = 0
        self._chunks: deque[bytes] = deque()
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        while self._size - len(self._chunks[0]) >= self.limit and len(self._chunks) > 1:
            first = self._chunks.popleft()
            self._size -= len(first)
            self.dropped += len(first)

    def data(self) -> bytes:
        """The last `limit` bytes (`dropped` then counts everything before them)."""
        data = b"".join(self._chunks)
        if len(data) > self.limit:
            self.dropped += len(data) - self.limit
            data = data[len(data) - self.limit :]
        self._chunks = deque([data])
        self._size = len(data)
        return data

    def text(self) -> str:
        text = self.data().decode(errors="replace")
        if self.dropped:
            return f"[the first {self.dropped} bytes of output were left out]\n{text}"
        return text


def collect(chunks: Iterable[bytes], limit: int = OUTPUT_LIMIT) -> str:
    tail = BoundedTail(limit)
    for chunk in chunks:
        tail.feed(chunk)
    return tail.text()


def tail_text(chunks: Iterable[bytes], limit: int = LOG_LIMIT) -> str:
    """The last `limit` bytes of a log stream as text, from a whole line on: when the
    start was left out, the first (cut) line goes too."""
    tail = BoundedTail(limit)
    for chunk in chunks:
        tail.feed(chunk)
    text = tail.data().decode(errors="replace")
    return text.split("\n", 1)[-1] if tail.dropped else text


def exec_bounded(container: Any, argv: list[str], limit: int = OUTPUT_LIMIT) -> tuple[int, str]:
    """(exit code, the output's last `limit` bytes) of `argv` run in `container` (a
    docker-py Container), stdout and stderr together as they came."""
    api = container.client.api
    exec_id = api.exec_create(container.id, argv, stdout=True, stderr=True)["Id"]
    stream = api.exec_start(exec_id, stream=True, demux=False)
    try:
        output = collect(stream, limit)
    finally:
        # docker-py's stream holds the daemon's socket until its response is closed
        stream.close()
        stream._response.close()
    code = api.exec_inspect(exec_id).get("ExitCode")
    return (int(code) if code is not None else -1), output
