"""Following a swarm: docker's event stream plus snapshots of its state.

`follow()` is what `Swarm.events()` returns: one async iterator of `SwarmEvent`
(what the daemon said, as it said it) and `SwarmSnapshot` (nodes, services and
their failed tasks, read in one go). A snapshot comes shortly after each event
(events are a trigger: a container's `die` does not say whether swarm counts the
task as failed or as shut down on purpose; the task list does), every
`poll_interval` while the stream is up, and every `fallback_interval` while it is
down. So a consumer that only reads snapshots sees everything, with the stream's
latency when there is one and the poll's when there is not.

docker-py's `events()` is a blocking generator: it is read in a worker thread and
handed to the loop through an asyncio queue. A broken stream is reconnected with
exponential backoff; closing the iterator closes the stream (its HTTP response),
which ends the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from bot.labels import NAMESPACE_LABEL, namespace_filter
from bot.ops.swarm.model import FAILED_STATES
from bot.ops.swarm.parse import group, parse_ts

log = logging.getLogger(__name__)

# Only these matter to a watcher; the rest (exec_*, health checks, networks) is noise.
EVENT_FILTERS = {
    "type": ["container", "service", "node"],
    "event": ["die", "oom", "create", "update", "remove"],
}
SETTLE = 1.0  # after an event, wait this long for more before taking the snapshot
BACKOFF_START = 1.0
BACKOFF_MAX = 60.0


@dataclass(frozen=True)
class SwarmEvent:
    kind: str  # "container", "service", "node"
    action: str  # "die", "update", ...
    actor: str  # the object's id
    attributes: dict[str, str]
    at: float  # the daemon's time, seconds since the epoch
    received: float  # ours (time.time()), for latency figures


@dataclass(frozen=True)
class FailedTask:
    id: str
    at: float  # the task's status timestamp
    error: str


@dataclass(frozen=True)
class ServiceState:
    name: str  # "<stack>_<svc>"
    stack: str
    desired: int | None  # None: global
    running: int
    update_state: str | None
    update_message: str
    failed: tuple[FailedTask, ...] = ()
    # The nodes (ids) of its tasks that run or are wanted running: a node that goes
    # down keeps its tasks' last state, so the watch can say which apps ran there.
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeState:
    id: str
    hostname: str
    state: str  # "ready", "down", "unknown", "disconnected"
    availability: str  # "active", "pause", "drain"


@dataclass(frozen=True)
class SwarmSnapshot:
    at: float
    nodes: tuple[NodeState, ...]
    services: tuple[ServiceState, ...]
    streaming: bool  # whether the event stream was up when it was taken
    reason: str = "poll"  # "poll", "event", "fallback"
    after: tuple[SwarmEvent, ...] = field(default=())  # the events that asked for it


def snapshot_sync(client: Any) -> tuple[tuple[NodeState, ...], tuple[ServiceState, ...]]:
    """Nodes, and the stacks' services with their failed tasks (blocking: a thread)."""
    raw_nodes = client.api.nodes()
    raw_services = client.api.services(filters={"label": namespace_filter(None)})
    raw_tasks = client.api.tasks() if raw_services else []
    nodes = tuple(
        NodeState(
            id=n.get("ID", ""),
            hostname=(n.get("Description") or {}).get("Hostname", n.get("ID", "")),
            state=(n.get("Status") or {}).get("State", "unknown"),
            availability=(n.get("Spec") or {}).get("Availability", "active"),
        )
        for n in raw_nodes
    )
    infos, tasks = group(raw_services, raw_tasks, None)
    services = []
    for info in infos:
        failed = []
        on = set()
        for task in tasks.get(info.name, []):
            if task.node_id and "running" in (task.state, task.desired_state):
                on.add(task.node_id)
            if task.state in FAILED_STATES:
                stamp = parse_ts(task.timestamp)
                failed.append(FailedTask(task.id, stamp.timestamp() if stamp else 0.0, task.error))
        services.append(
            ServiceState(
                name=info.name,
                stack=info.labels.get(NAMESPACE_LABEL, ""),
                desired=info.replicas_desired,
                running=info.replicas_running,
                update_state=info.update_state,
                update_message=info.update_message,
                failed=tuple(sorted(failed, key=lambda f: f.at)),
                nodes=tuple(sorted(on)),
            )
        )
    return nodes, tuple(services)


def _event(raw: dict[str, Any]) -> SwarmEvent:
    actor = raw.get("Actor") or {}
    nanos = raw.get("timeNano")
    at = nanos / 1e9 if isinstance(nanos, int) else float(raw.get("time") or time.time())
    return SwarmEvent(
        kind=str(raw.get("Type", "")),
        action=str(raw.get("Action", "")),
        actor=str(actor.get("ID", "")),
        attributes={str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()},
        at=at,
        received=time.time(),
    )


class _Stream:
    """docker-py's event generator read in a thread; items (or the error that ended
    it, or None at its end) go to `queue` through the loop."""

    def __init__(self, client: Any, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]):
        self._client = client
        self._loop = loop
        self._queue = queue
        self._stream: Any = None
        self._closed = threading.Event()
        self.thread = threading.Thread(target=self._read, name="docker-events", daemon=True)

    def _put(self, item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _read(self) -> None:
        try:
            self._stream = self._client.events(decode=True, filters=EVENT_FILTERS)
            self._put(("connected", None))
            if self._closed.is_set():
                self._stream.close()
            for raw in self._stream:
                self._put(("event", raw))
            self._put(("ended", None))
        except Exception as e:  # the stream failed: the iterator reconnects
            if not self._closed.is_set():
                self._put(("ended", e))

    def close(self) -> None:
        self._closed.set()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()


async def follow(
    client_factory: Callable[[], Any],
    *,
    poll_interval: float = 60.0,
    fallback_interval: float = 15.0,
    settle: float = SETTLE,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[SwarmEvent | SwarmSnapshot]:
    """Events and snapshots of one swarm until the consumer stops iterating."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    stream: _Stream | None = None
    streaming = False
    backoff = BACKOFF_START
    reconnect_at = 0.0
    next_poll = 0.0  # a first snapshot at once: the state as it is
    pending: list[SwarmEvent] = []
    pending_at: float | None = None  # when the events waiting for a snapshot allow it
    try:
        while True:
            now = time.monotonic()
            if stream is None and now >= reconnect_at:
                try:
                    client = await asyncio.to_thread(client_factory)
                except Exception as e:  # unreachable: poll (which fails too) and retry
                    log.warning("docker events: cannot connect (%s); again in %gs", e, backoff)
                    reconnect_at = time.monotonic() + backoff
                    backoff = min(backoff * 2, BACKOFF_MAX)
                else:
                    stream = _Stream(client, loop, queue)
                    stream.thread.start()
            if (pending_at is not None and now >= pending_at) or now >= next_poll:
                try:
                    nodes, services = await asyncio.to_thread(
                        lambda: snapshot_sync(client_factory())
                    )
                except Exception as e:
                    log.warning("swarm snapshot failed: %s", e)
                else:
                    reason = "event" if pending else ("poll" if streaming else "fallback")
                    yield SwarmSnapshot(clock(), nodes, services, streaming, reason, tuple(pending))
                pending, pending_at = [], None
                next_poll = time.monotonic() + (poll_interval if streaming else fallback_interval)
                continue
            deadlines = [next_poll] + ([pending_at] if pending_at is not None else [])
            if stream is None:
                deadlines.append(reconnect_at)
            wait = max(0.0, min(deadlines) - time.monotonic())
            try:
                what, item = await asyncio.wait_for(queue.get(), timeout=wait)
            except TimeoutError:
                continue
            if what == "connected":
                if not streaming:
                    log.info("docker events: following")
                streaming, backoff = True, BACKOFF_START
                next_poll = min(next_poll, time.monotonic() + poll_interval)
            elif what == "event":
                event = _event(item)
                yield event
                pending.append(event)
                if pending_at is None:
                    pending_at = time.monotonic() + settle
            elif what == "ended":
                if stream is not None:
                    stream.close()
                stream, streaming = None, False
                log.warning(
                    "docker events stream ended (%s); polling every %gs, reconnecting in %gs",
                    item or "closed",
                    fallback_interval,
                    backoff,
                )
                reconnect_at = time.monotonic() + backoff
                backoff = min(backoff * 2, BACKOFF_MAX)
                next_poll = min(next_poll, time.monotonic() + fallback_interval)
    finally:
        if stream is not None:
            stream.close()
