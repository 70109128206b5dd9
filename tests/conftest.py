"""Fixtures shared by the tests that talk to real components (tests/integration and
tests/faults), defined once here so one pytest run starts one Synapse and one swarm
(the test dockerd and the three-node swarm each hold a machine-wide lock: a second
fixture instance, as a test module importing the fixture itself makes, would wait for
the first until its lock wait ends).

Synapse is session-scoped and synchronous (started once, stopped by pid at
teardown even when tests fail). Members are function-scoped: create them with
the async `make_member` factory; they are all closed after the test.
"""

from __future__ import annotations

import itertools
import pathlib
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.harness.fixtures_docker import docker_client, dockerd, registry  # noqa: F401
from tests.harness.fixtures_multinode import multinode  # noqa: F401
from tests.harness.member import DEFAULT_PASSWORD, Member, MemberFactory
from tests.harness.synapse import Synapse


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    server = Synapse(tmp_path_factory.mktemp("synapse"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
async def make_member(synapse: Synapse, tmp_path: pathlib.Path) -> AsyncIterator[MemberFactory]:
    """Async factory: register (idempotently), log in and return a Member.

    Without `localpart` a unique one is generated. Re-using a localpart
    requires the same password it was first registered with. `encrypted=True`
    gives the member its own E2EE store under this test's tmp_path.
    """
    members: list[Member] = []
    counter = itertools.count()

    async def make(
        localpart: str | None = None,
        *,
        encrypted: bool = False,
        admin: bool = False,
        password: str = DEFAULT_PASSWORD,
    ) -> Member:
        localpart = localpart or f"member-{uuid.uuid4().hex[:10]}"
        user_id = synapse.register(localpart, password, admin=admin)
        store = tmp_path / f"store-{localpart}-{next(counter)}" if encrypted else None
        member = Member(synapse.url, user_id, password, store_dir=store)
        members.append(member)  # before login, so a failed login still closes
        await member.login()
        return member

    yield make
    for member in members:
        await member.close()
