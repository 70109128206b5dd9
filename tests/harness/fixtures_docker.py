"""Session-scoped pytest fixtures: a private swarm dockerd and a local registry.

Import them into a conftest.py or test module:
    from tests.harness.fixtures_docker import docker_client, dockerd, registry  # noqa: F401
Both are stopped by pid at session end, even when tests fail. Needs root and
scripts/install-system-deps.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import docker
import pytest

from tests.harness.dockerd import DOCKERD, Dockerd
from tests.harness.registry import REGISTRY, Registry


def _require(*paths: str) -> None:
    # Fail, not skip: a CI without the packages must not pass silently.
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        pytest.fail(f"missing {missing}: run scripts/install-system-deps")
    if os.geteuid() != 0:
        pytest.fail("the docker harness needs root")


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    _require(DOCKERD)
    daemon = Dockerd(tmp_path_factory.mktemp("dockerd"))
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def docker_client(dockerd: Dockerd) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=dockerd.host, version="auto")
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    _require(REGISTRY)
    reg = Registry(tmp_path_factory.mktemp("registry"))
    try:
        reg.start()
        yield reg
    finally:
        reg.stop()
