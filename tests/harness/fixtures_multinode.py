"""Session-scoped pytest fixture: the three-node swarm (tests/harness/multinode.py).

Registered once, in tests/conftest.py: a test module that imported it itself would
get a second instance, which waits for the first one's lock.
Torn down by pid and by namespace name at session end, even when tests fail.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.harness.dockerd import DOCKERD
from tests.harness.fixtures_docker import _require
from tests.harness.multinode import MultiNodeSwarm


@pytest.fixture(scope="session")
def multinode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiNodeSwarm]:
    _require(DOCKERD, *(shutil.which(t) or t for t in ("ip", "nsenter", "unshare")))
    swarm = MultiNodeSwarm(tmp_path_factory.mktemp("multinode"))
    try:
        swarm.start()
        swarm.import_image("local/busybox:1.0")
        swarm.import_restic_image()
        yield swarm
    finally:
        swarm.stop()
