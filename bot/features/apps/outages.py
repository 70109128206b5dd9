"""Waiting for convergence through a swarm outage (dockerd restarted, the managers
electing a leader): swarm carries an update on once it is back, so the wait goes on."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from bot.ops.swarm import Convergence, Swarm, SwarmError


async def wait_through_outages(
    swarm: Swarm,
    stack: str,
    timeout: float,  # noqa: ASYNC109 - a budget for the whole wait, not a cancel scope
    on_progress: Callable[[str], Awaitable[None]],
) -> Convergence:
    """`wait_converged`, but a swarm that stops answering meanwhile (dockerd restarted,
    the managers electing a leader) is waited for again within the same time budget:
    swarm carries the update on once it is back, so the job's verdict still stands.
    If it does not answer again in time, the error says the outcome is unknown."""
    deadline = time.monotonic() + timeout
    told = False
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(SwarmError),
            wait=wait_exponential(multiplier=1, max=10),
            stop=stop_after_delay(timeout),
            reraise=True,
        ):
            with attempt:
                try:
                    left = max(1.0, deadline - time.monotonic())
                    return await swarm.wait_converged(stack, left, on_progress=on_progress)
                except SwarmError as exc:
                    if not told:
                        told = True
                        await on_progress(
                            f"⚠ The swarm stopped answering ({exc}); waiting for it to come back."
                        )
                    raise
    except SwarmError as exc:
        raise SwarmError(
            f"{exc}\nThe swarm did not answer again within {timeout:g}s, so whether {stack} "
            "converged is unknown; `status` tells once it answers."
        ) from exc
    raise AssertionError("unreachable: tenacity re-raises the last error")
