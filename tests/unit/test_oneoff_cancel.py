"""bot/ops/swarm/oneoff.py: a one-off cancelled (the job's time limit) while its worker
thread is still creating the service still removes that service and its secrets (the
repository's password among them). The real swarm: tests/integration/test_multinode.py."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from bot.ops.swarm.oneoff import OneOffCalls

T = TypeVar("T")


class Api:
    def __init__(self) -> None:
        self.secrets: set[str] = set()
        self.services: set[str] = set()

    def create_secret(self, name: str, data: bytes, labels: dict[str, str]) -> dict[str, str]:
        self.secrets.add(name)
        return {"ID": name}

    def remove_secret(self, secret_id: str) -> None:
        self.secrets.discard(secret_id)

    def remove_service(self, service_id: str) -> None:
        self.services.discard(service_id)


class Service:
    def __init__(self, service_id: str) -> None:
        self.id = service_id


class Client:
    def __init__(self) -> None:
        self.api = Api()
        self.services = self
        self.creating = threading.Event()
        self.release = threading.Event()
        self.created = threading.Event()

    def create(self, image: str, **spec: Any) -> Service:
        self.creating.set()
        self.release.wait(10)  # the daemon is slow to answer
        self.api.services.add(spec["name"])
        self.created.set()
        return Service(spec["name"])


class Swarmish(OneOffCalls):
    def __init__(self, client: Client) -> None:
        self.client = client

    async def _sdk(self, fn: Callable[[Any], T]) -> T:
        return await asyncio.to_thread(fn, self.client)


async def test_cancelled_while_creating_removes_what_was_made() -> None:
    client = Client()
    swarm = Swarmish(client)
    run = asyncio.create_task(
        swarm.run_oneoff(
            purpose="backup",
            node_id="n1",
            image="restic",
            command=["true"],
            secrets={"password": "hunter2"},
        )
    )
    await asyncio.to_thread(client.creating.wait, 10)
    run.cancel()
    await asyncio.sleep(0.05)
    client.release.set()  # the thread finishes creating after the cancel
    with pytest.raises(asyncio.CancelledError):
        await run
    assert client.created.wait(10)  # the service was made, after the cancel
    assert client.api.services == set()
    assert client.api.secrets == set()
