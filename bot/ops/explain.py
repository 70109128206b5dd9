"""What the adapters' error sentences share (matrix_errors.py, Swarm._why): the whole
chain of an exception, to find the OSError or library error that says why. Each adapter
keeps its own sentences; restic's and git's match their tools' text instead."""

from __future__ import annotations


def causes(exc: BaseException, limit: int = 20) -> list[BaseException]:
    """The exception and everything it was raised from or wraps: `__cause__`,
    `__context__`, exceptions kept in `args` (requests and urllib3 keep the socket
    error there) and aiohttp's `os_error`; each once, at most `limit`."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < limit:
        current = todo.pop()
        if current in seen:
            continue
        seen.append(current)
        os_error = getattr(current, "os_error", None)
        todo += [os_error] if isinstance(os_error, BaseException) else []
        todo += [a for a in current.args if isinstance(a, BaseException)]
        todo += [c for c in (current.__cause__, current.__context__) if c is not None]
    return seen
