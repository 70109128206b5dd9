"""A job's one progress message: edited in place, throttled, details in its thread.

The homeserver may be away for a while (a restart, a network cut). A progress update
that fails does not fail the job: the newest text is sent again in the background
until it lands. The final text (`finish`) and details are retried before the job goes
on, so the result is delivered once the homeserver is back, never lost. Retries are
tenacity's (exponential wait up to RETRY_WAIT_MAX, for RETRY_FOR at most).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from tenacity import (
    AsyncRetrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from bot.core.chat import Chat

log = logging.getLogger(__name__)

RETRY_FOR = 900.0  # seconds: a homeserver away longer than this loses the message
RETRY_WAIT_MAX = 15.0


def _retrying() -> AsyncRetrying:
    return AsyncRetrying(
        retry=retry_if_exception_type(Exception),  # a cancel is not retried
        wait=wait_exponential(multiplier=0.5, max=RETRY_WAIT_MAX),
        stop=stop_after_delay(RETRY_FOR),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )


class Progress:
    """One message per job, edited in place at most every `interval` seconds.
    The newest text always lands: a throttled update is flushed later."""

    def __init__(
        self,
        chat: Chat,
        room_id: str,
        reply_to: str | None,
        thread_root: str | None,
        interval: float,
        on_posted: Callable[[str], None] | None = None,
    ) -> None:
        # on_posted(event_id): told once the message exists, so the store can keep where
        # the job's thread is (a crash recovery message goes there).
        self._on_posted = on_posted
        self._chat = chat
        self._room_id = room_id
        self._reply_to = reply_to
        self._thread_root = thread_root
        self._interval = interval
        self._lock = asyncio.Lock()
        self._event_id: str | None = None
        self._shown: str | None = None
        self._latest: str | None = None
        self._last_edit = 0.0
        self._pending: asyncio.Task[None] | None = None

    @property
    def event_id(self) -> str | None:
        return self._event_id

    @property
    def text(self) -> str | None:
        """The newest text given (shown or still throttled): a run's summary for the
        dead-man pings."""
        return self._latest

    async def update(self, markdown: str) -> None:
        self._latest = markdown
        if self._pending is None and (
            self._event_id is None or time.monotonic() - self._last_edit >= self._interval
        ):
            try:
                await self._flush()
            except Exception:
                # Not the job's failure: the newest text goes again until it lands.
                log.warning("a progress update failed; sending it again in the background")
                self._pending = asyncio.create_task(self._flush_later(), name="progress-retry")
                self._pending.add_done_callback(_log_failure)
        elif self._pending is None:
            # Held until it ends, and its failure logged: a flush that raised
            # would otherwise be an exception nobody retrieves.
            self._pending = asyncio.create_task(self._flush_later(), name="progress-flush")
            self._pending.add_done_callback(_log_failure)

    async def finish(self, markdown: str) -> None:
        """The final text: shown now, whatever the throttle says."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self._latest = markdown
        await self._flush(retry=True)

    async def detail(self, markdown: str) -> str:
        """Post a detail in the progress message's thread."""
        if self._event_id is None:
            await self._flush(retry=True)
        event_id = self._event_id
        assert event_id is not None
        async for attempt in _retrying():
            with attempt:
                # A thread cannot start inside another: a job already running in a thread
                # (an approved proposal's) puts its details in that thread, under it.
                if self._thread_root is not None:
                    return await self._chat.send(
                        self._room_id, markdown, reply_to=event_id, thread_root=self._thread_root
                    )
                return await self._chat.send(self._room_id, markdown, thread_root=event_id)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _flush_later(self) -> None:
        await asyncio.sleep(max(0.0, self._interval - (time.monotonic() - self._last_edit)))
        self._pending = None
        await self._flush(retry=True)

    async def _flush(self, retry: bool = False) -> None:
        if not retry:
            await self._flush_once()
            return
        async for attempt in _retrying():
            with attempt:
                await self._flush_once()

    async def _flush_once(self) -> None:
        async with self._lock:
            text = self._latest or "…"
            if text == self._shown:
                return
            if self._event_id is None:
                self._event_id = await self._chat.send(
                    self._room_id, text, reply_to=self._reply_to, thread_root=self._thread_root
                )
                if self._on_posted is not None:
                    self._on_posted(self._event_id)
            else:
                await self._chat.edit(self._room_id, self._event_id, text)
            self._shown = text
            self._last_edit = time.monotonic()

    async def settle(self) -> None:
        """Show the newest text now if a throttled update is still pending."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
            await self._flush(retry=True)

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("a progress update failed", exc_info=error)
