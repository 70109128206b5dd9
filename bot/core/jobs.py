"""Tracked jobs: every command that does work runs as a named, time-limited task.

Per-app locks make two jobs on one app run one after the other (the second
says it is waiting). Each job has at most one progress message, edited in place
and throttled; details go into that message's thread.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

from bot.config import JobsConfig
from bot.core.access import SCHEDULER
from bot.core.approvals import State
from bot.core.context import CommandContext
from bot.core.metrics import Metrics
from bot.core.records import JobState
from bot.core.store import Store
from bot.errors import StalePlan, UserError
from bot.fmt import code, human_age

log = logging.getLogger(__name__)


@dataclass
class Job:
    id: int
    ctx: CommandContext
    app: str | None
    state: JobState = JobState.WAITING
    created_at: float = field(default_factory=time.time)
    task: asyncio.Task[None] | None = None
    cancelled_by: str | None = None

    @property
    def text(self) -> str:
        return self.ctx.spec.recorded(self.ctx.message.body)


Reauthorise = Callable[[CommandContext], Awaitable[None]]


class AppLocks:
    """One lock per app (or per word such as `all`), shared by the jobs and by the
    features that work on several apps in one job (`!backup all` takes each app's
    lock in turn). Re-entrant for the task that holds it: a job holding its app's
    lock may call code that asks for the same lock again."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._owners: dict[str, asyncio.Task[object] | None] = {}
        self._depth: dict[str, int] = {}

    def locked(self, name: str) -> bool:
        lock = self._locks.get(name)
        return lock is not None and lock.locked()

    async def acquire(self, name: str) -> None:
        me = asyncio.current_task()
        if self._depth.get(name) and self._owners.get(name) is me:
            self._depth[name] += 1
            return
        await self._locks.setdefault(name, asyncio.Lock()).acquire()
        self._owners[name], self._depth[name] = me, 1

    def release(self, name: str) -> None:
        self._depth[name] -= 1
        if self._depth[name] == 0:
            self._owners.pop(name, None)
            self._locks[name].release()

    @asynccontextmanager
    async def app(self, name: str) -> AsyncIterator[None]:
        await self.acquire(name)
        try:
            yield
        finally:
            self.release(name)


class JobManager:
    def __init__(
        self,
        store: Store,
        config: JobsConfig,
        metrics: Metrics,
        reauthorise: Reauthorise,
    ) -> None:
        self._store = store
        self._config = config
        self._metrics = metrics
        self._reauthorise = reauthorise
        self._jobs: dict[int, Job] = {}
        self.locks = AppLocks()
        # Who works on an app, as the waiting job's message names it: a job, or the
        # crash recovery finishing one (app_lock with a holder).
        self._holders: dict[str, str] = {}

    def start(self, ctx: CommandContext) -> Job:
        spec = ctx.spec
        if len(self._jobs) >= self._config.max_active:
            # A cap, not a queue that grows without end: the member is told at once.
            raise UserError(
                f"🐢 The bot is busy: {len(self._jobs)} jobs are running or queued (the "
                f"limit is {self._config.max_active}). Nothing was started; try again in a "
                f"minute. `{ctx.prefix}jobs` lists them."
            )
        app = (
            str(ctx.args[spec.lock_arg]) if spec.lock_arg and ctx.args.get(spec.lock_arg) else None
        )
        message = ctx.message
        job_id = self._store.add_job(
            spec.name,
            spec.recorded(message.body),
            app,
            message.sender,
            message.room_id,
            message.event_id,
        )
        job = Job(job_id, ctx, app)
        ctx.job = job
        self._jobs[job_id] = job
        self._metrics.jobs_active.inc()
        job.task = asyncio.create_task(self._run(job), name=f"job-{job_id}-{spec.name}")
        return job

    def app_lock(self, app: str, holder: str | None = None) -> AbstractAsyncContextManager[None]:
        """The lock jobs on `app` take, for code that works on several apps in one
        job (each app's lock in turn, never two at once but in sorted order), and for
        the crash recovery finishing an interrupted job. With `holder`, a job that
        waits for it says what it waits for."""
        return self._held(app, holder)

    @asynccontextmanager
    async def _held(self, app: str, holder: str | None) -> AsyncIterator[None]:
        await self.locks.acquire(app)
        before = self._holders.get(app)
        if holder is not None:
            self._holders[app] = holder
        try:
            yield
        finally:
            if holder is not None:
                if before is None:
                    self._holders.pop(app, None)
                else:
                    self._holders[app] = before
            self.locks.release(app)

    def get(self, job_id: int) -> Job | None:
        return self._jobs.get(job_id)

    def active(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda job: job.id)

    def cancel(self, job_id: int, by: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or job.task is None or job.task.done():
            return None
        job.cancelled_by = by
        job.task.cancel()
        return job

    async def shutdown(self) -> None:
        tasks = [job.task for job in self._jobs.values() if job.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, job: Job) -> None:
        ctx = job.ctx
        timeout = ctx.spec.timeout or self._config.timeout
        state, result = JobState.FAILED, ""
        acquired = False
        deadline: asyncio.Timeout | None = None
        try:
            if job.app is not None:
                holder = self._holders.get(job.app)
                if self.locks.locked(job.app) and holder is not None:
                    await ctx.reply(f"⏳ Job #{job.id} waits: {holder} is working on {job.app}.")
                try:
                    async with asyncio.timeout(self._config.lock_wait):
                        await self.locks.acquire(job.app)
                except TimeoutError:
                    raise UserError(
                        f"Gave up after waiting {self._config.lock_wait:.0f}s for "
                        f"{job.app} to be free; nothing was done."
                    ) from None
                acquired = True
                self._holders[job.app] = _holder(job)
            # The member's role, and the app, may have changed while the job waited.
            await self._reauthorise(ctx)
            await ctx.recheck()
            job.state = JobState.RUNNING
            self._store.set_job_state(job.id, JobState.RUNNING)
            deadline = asyncio.timeout(timeout)
            async with deadline:
                await ctx.spec.handler(ctx)
                await ctx.settle()
            state, result = JobState.DONE, "ok"
        except asyncio.CancelledError:
            state = JobState.CANCELLED
            who = job.cancelled_by or "shutdown"
            result = f"cancelled by {who}"
            if job.cancelled_by:
                await _shielded(ctx.report_failure(f"🛑 Job #{job.id} cancelled by {who}."))
            else:
                raise
        except TimeoutError:
            if deadline is None or not deadline.expired():
                # The handler's own TimeoutError (HTTP, docker): unexpected, not ours.
                result = await self._incident(job)
            else:
                state, result = JobState.TIMEOUT, f"timed out after {timeout:.0f}s"
                await ctx.report_failure(f"⌛ Job #{job.id} timed out after {timeout:.0f}s.")
        except UserError as exc:
            result = str(exc)
            if isinstance(exc, StalePlan) and ctx.proposal_id is not None:
                # Voted, but the world moved while the job waited: the vote is spent.
                self._store.set_proposal_state(ctx.proposal_id, State.STALE, time.time())
                self._store.audit(
                    "coopbot", "stale", f"{ctx.proposal_id}: {job.text} (at run time)"
                )
            await ctx.report_failure(f"❌ {exc}")
        except Exception:
            result = await self._incident(job)
        finally:
            await _shielded(self._tell_the_end(job, state, result))
            if acquired and job.app is not None:
                if self._holders.get(job.app) == _holder(job):
                    self._holders.pop(job.app, None)
                self.locks.release(job.app)
            ctx.close()
            job.state = state
            self._store.set_job_state(job.id, state, result)
            self._store.audit(
                ctx.message.sender,
                f"job.{state}",
                f"#{job.id} {job.text} → {result}",
                app=job.app,
                room_id=ctx.message.room_id,
                event_id=ctx.message.event_id,
            )
            self._metrics.jobs.labels(ctx.spec.name, state).inc()
            self._metrics.jobs_active.dec()
            del self._jobs[job.id]

    async def _tell_the_end(self, job: Job, state: JobState, result: str) -> None:
        """A job whose progress message is out there ends with one short reply in its
        thread that pings the requester (or the admins, for scheduled work that
        failed): the final edit of the progress message notifies nobody (MSC3958)."""
        progress = job.ctx._progress
        if progress is None or progress.event_id is None or state is JobState.CANCELLED:
            return
        ctx = job.ctx
        elapsed = time.time() - job.created_at
        if elapsed < self._config.notify_after:
            return
        took = human_age(elapsed)
        if state is JobState.DONE:
            text = f"✅ Job #{job.id} (`{job.ctx.spec.name}`) done in {took}."
        else:
            first = result.strip().splitlines()[0] if result.strip() else str(state)
            text = f"❌ Job #{job.id} (`{job.ctx.spec.name}`) {state}: {first}"
        if ctx.sender == SCHEDULER:
            if state is JobState.DONE:
                return  # scheduled reports speak for themselves; only failures ping
            mentions = list(ctx.services.config.access.admins)
        else:
            mentions = [ctx.sender]
        thread = ctx.message.thread_root or progress.event_id
        await ctx.services.chat.send(
            ctx.message.room_id,
            text,
            reply_to=progress.event_id if ctx.message.thread_root else None,
            thread_root=thread,
            mentions=mentions,
            notify=True,
        )

    async def _incident(self, job: Job) -> str:
        """Log the exception being handled with an incident id; tell the room the id."""
        incident = secrets.token_hex(4)
        log.exception("job #%s (%s) failed: incident %s", job.id, job.text, incident)
        self._metrics.failures.inc()
        await job.ctx.report_failure(
            f"💥 Job #{job.id} failed unexpectedly (incident `{incident}`); "
            "the bot's log has the details."
        )
        return f"incident {incident}"


def _holder(job: Job) -> str:
    """A job as a waiting job's message names it (member text inert, as code)."""
    return f"job #{job.id} ({code(job.text)})"


async def _shielded(coro: Awaitable[object]) -> None:
    """Report even though the task is being cancelled."""
    try:
        await asyncio.shield(coro)
    except Exception:
        log.exception("could not report a cancelled job")
