"""Swarm.events()'s machinery (bot/ops/swarm/events.py) against a stand-in SDK client:
a stream that fails is reconnected with backoff while snapshots keep coming (the
poll fallback); an event brings a snapshot soon after it; failed tasks are read."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from bot.ops.swarm import events as ev
from bot.ops.swarm.events import SwarmEvent, SwarmSnapshot, follow

SERVICE = {
    "ID": "s1",
    "Spec": {
        "Name": "demo_app",
        "Labels": {"com.docker.stack.namespace": "demo"},
        "Mode": {"Replicated": {"Replicas": 1}},
    },
}
FAILED = {
    "ID": "t1",
    "ServiceID": "s1",
    "Slot": 1,
    "DesiredState": "shutdown",
    "Status": {"State": "failed", "Err": "task: non-zero exit (3)",
               "Timestamp": "2026-01-01T00:00:00.000000000Z"},
    "Spec": {"ContainerSpec": {"Image": "x"}},
}  # fmt: skip
NODE = {"ID": "n1", "Description": {"Hostname": "vm"}, "Status": {"State": "ready"},
        "Spec": {"Availability": "drain"}}  # fmt: skip


class Stream:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.closed = threading.Event()

    def __iter__(self) -> Any:
        yield from self.items
        self.closed.wait(5)  # an open stream: blocks until closed

    def close(self) -> None:
        self.closed.set()


class Api:
    def nodes(self) -> list[dict[str, Any]]:
        return [NODE]

    def services(self, filters: Any = None) -> list[dict[str, Any]]:
        return [SERVICE]

    def tasks(self, filters: Any = None) -> list[dict[str, Any]]:
        return [FAILED]


class Client:
    def __init__(self) -> None:
        self.api = Api()
        self.connects = 0
        self.streams: list[Stream] = []

    def events(self, decode: bool, filters: Any) -> Stream:
        self.connects += 1
        if self.connects == 1:
            raise ConnectionError("daemon restarting")
        die = {"Type": "container", "Action": "die", "Actor": {"ID": "c1", "Attributes":
               {"exitCode": "3"}}, "timeNano": 1_700_000_000_000_000_000}  # fmt: skip
        stream = Stream([die])
        self.streams.append(stream)
        return stream


async def test_fallback_polls_then_reconnects_and_events_bring_snapshots(monkeypatch: Any) -> None:
    monkeypatch.setattr(ev, "BACKOFF_START", 0.3)
    client = Client()
    seen: list[SwarmEvent | SwarmSnapshot] = []
    iterator = follow(lambda: client, poll_interval=30, fallback_interval=0.1, settle=0.1)
    async with asyncio.timeout(10):
        async for item in iterator:
            seen.append(item)
            if any(isinstance(i, SwarmSnapshot) and i.reason == "event" for i in seen):
                break
    await iterator.aclose()  # type: ignore[attr-defined]
    snaps = [i for i in seen if isinstance(i, SwarmSnapshot)]
    assert any(s.reason == "fallback" and not s.streaming for s in snaps)
    (event,) = [i for i in seen if isinstance(i, SwarmEvent)]
    assert (event.kind, event.action, event.attributes["exitCode"]) == ("container", "die", "3")
    assert event.at == 1_700_000_000.0
    last = snaps[-1]
    assert last.streaming
    assert last.after == (event,)
    (service,) = last.services
    assert (service.name, service.stack, service.desired, service.running) == (
        "demo_app",
        "demo",
        1,
        0,
    )
    assert service.failed[0].id == "t1"
    assert "exit (3)" in service.failed[0].error
    assert last.nodes[0].availability == "drain"
    assert client.connects == 2
    assert client.streams[0].closed.wait(2)  # closing the iterator closed the stream
