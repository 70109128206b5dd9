"""The small interfaces features and adapters are written against.

Features receive these (built in bot/app.py) instead of reaching for the core:
a deploy or a backup reports through a `ProgressSink`, whether that is a job's
progress message (bot/core/progress.py), a phase of an upgrade, or a test's list.
"""

from __future__ import annotations

from typing import Protocol


class StatusSink(Protocol):
    """Somewhere to show the newest status line of long work."""

    async def update(self, markdown: str) -> None: ...


class ProgressSink(StatusSink, Protocol):
    """A job's progress message: updated in place, ended once, details beside it."""

    @property
    def event_id(self) -> str | None: ...

    async def finish(self, markdown: str) -> None: ...

    async def detail(self, markdown: str) -> str: ...

    async def settle(self) -> None: ...
