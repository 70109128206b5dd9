"""Dead-man pings around scheduled runs, and the bot's own heartbeat.

The scheduler only starts a run: `run_scheduled` hands the command to the
dispatcher, which starts a job and returns. The outcome is known when the job
ends, so the success/fail ping waits for the job in a tracked task of its own
(the scheduler goes on at once). A job that ends other than `done`, or whose
final report carries a ❌ (how `!backup all` reports an app it could not back
up), is a failure. Pings never change what a run does or how it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter

from bot.core.access import SCHEDULER
from bot.core.jobs import Job, JobManager
from bot.core.records import JobState
from bot.core.scheduler import Task
from bot.core.store import Store
from bot.ops.pings import Pings

log = logging.getLogger(__name__)

Run = Callable[[str], Awaitable[None]]


class DeadMan:
    def __init__(
        self,
        pings: Pings,
        run: Run,
        jobs: JobManager,
        store: Store,
        tasks: Iterable[Task],
        prefix: str,
    ) -> None:
        self._pings = pings
        self._run = run
        self._jobs = jobs
        self._store = store
        self._names = {task.command: task.name for task in tasks}
        self._prefix = prefix
        self._waiting: set[asyncio.Task[None]] = set()

    async def run(self, command: str) -> None:
        """What the scheduler calls instead of the dispatcher's run_scheduled."""
        name = self._names.get(command, "")
        if not self._pings.knows(name):
            await self._run(command)
            return
        await self._pings.ping(name, "start", f"{self._prefix}{command}")
        before = {job.id for job in self._jobs.active()}
        try:
            await self._run(command)
        except Exception as e:
            await self._pings.ping(name, "fail", f"{self._prefix}{command}: not started: {e}")
            raise
        body = self._prefix + command
        started = [
            job
            for job in self._jobs.active()
            if job.id not in before and job.ctx.sender == SCHEDULER and job.text == body
        ]
        if not started:  # answered at once (or refused): nothing runs on
            await self._pings.ping(name, "success", f"{body}: done")
            return
        waiter = asyncio.create_task(self._outcome(name, started[0]), name=f"ping-{name}")
        self._waiting.add(waiter)
        waiter.add_done_callback(self._waiting.discard)

    async def _outcome(self, name: str, job: Job) -> None:
        if job.task is not None:
            await asyncio.gather(job.task, return_exceptions=True)
        row = self._store.job(job.id)
        state = row.state if row is not None else JobState.FAILED
        result = (row.result if row is not None else None) or ""
        progress = job.ctx._progress  # the job's one report, if it made one
        summary = (progress.text if progress is not None else None) or ""
        failed = state != JobState.DONE or "❌" in summary
        body = f"job #{job.id} {job.text}: {state} ({result})"
        if summary:
            body += "\n\n" + summary
        await self._pings.ping(name, "fail" if failed else "success", body)

    async def heartbeat(self, interval: float) -> None:
        """The bot's own ping: a success every `interval` while it runs."""
        while True:
            await self._pings.ping("bot", "success", "coopbot is running")
            await asyncio.sleep(interval)

    async def close(self) -> None:
        for waiter in list(self._waiting):
            waiter.cancel()
        await asyncio.gather(*self._waiting, return_exceptions=True)
        await self._pings.close()


def ping_counter(registry: CollectorRegistry) -> Counter:
    """coopbot_pings{task, kind, outcome}: outcome "sent" or "failed"."""
    return Counter(
        "coopbot_pings",
        "Dead-man pings, by task, kind (start, success, fail) and outcome (sent, failed)",
        ["task", "kind", "outcome"],
        registry=registry,
    )
