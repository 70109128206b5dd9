"""Tests of the docker harness itself: private swarm dockerd, stack deploy, local registry."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from tests.harness.dockerd import Dockerd
from tests.harness.registry import Registry

IMAGE = "local/busybox:1.0"
STACK = "teststack"
# No IPVS in the kernel here: VIP endpoints don't work, so dnsrr and no published ports.
COMPOSE = f"""\
version: "3.8"
services:
  app:
    image: {IMAGE}
    command: ["sleep", "3600"]
    stop_grace_period: 1s  # sleep as pid 1 ignores SIGTERM: don't wait the default 10s
    deploy:
      endpoint_mode: dnsrr
  db:
    image: {IMAGE}
    command: ["nc", "-ll", "-p", "5432", "-e", "echo", "pong"]
    stop_grace_period: 1s
    deploy:
      endpoint_mode: dnsrr
"""


@pytest.fixture(scope="module")
def busybox_image(dockerd: Dockerd) -> str:
    return dockerd.import_image(IMAGE, ["/bin/sh"])


def _wait(what: str, cond: Callable[[], object], timeout: float = 60) -> float:
    """Poll cond() until truthy; returns the seconds it took."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - t0


def _running(client: docker.DockerClient, service: str) -> bool:
    tasks = client.services.get(service).tasks(filters={"desired-state": "running"})
    return any(t["Status"]["State"] == "running" for t in tasks)


def test_swarm_active(dockerd: Dockerd, docker_client: docker.DockerClient) -> None:
    info = docker_client.info()
    assert info["Swarm"]["LocalNodeState"] == "active"
    assert info["Swarm"]["ControlAvailable"]
    print(f"\ntimings: {dockerd.timings}")


def test_stack_deploy_runs_service(
    dockerd: Dockerd,
    docker_client: docker.DockerClient,
    busybox_image: str,
    tmp_path: Path,
) -> None:
    compose = tmp_path / "compose.yml"
    compose.write_text(COMPOSE)
    # --resolve-image=never: the default asks docker.io for local/busybox's digest
    # (no network here: a failed lookup and a warning).
    dockerd.cli("stack", "deploy", "--resolve-image=never", "-c", str(compose), STACK)
    try:
        took = _wait(
            "services running",
            lambda: all(_running(docker_client, f"{STACK}_{s}") for s in ("app", "db")),
        )
        print(f"\nservices running after {took:.1f}s")
        # Overlay network + embedded DNS: app reaches db by its service name.
        (app,) = docker_client.containers.list(
            sparse=True,  # the non-sparse list inspects each container: races with removal
            filters={"label": f"com.docker.swarm.service.name={STACK}_app"},
        )
        out = dockerd.cli("exec", app.id, "nc", "-w", "5", "db", "5432").stdout
        assert out.strip() == "pong"
    finally:
        dockerd.cli("stack", "rm", STACK)
    label = f"com.docker.stack.namespace={STACK}"
    # api.containers(), not containers.list(): no per-container inspect to race with removal.
    took = _wait(
        "stack removed",
        lambda: (
            not (
                docker_client.services.list(filters={"label": label})
                or docker_client.api.containers(all=True, filters={"label": label})
                or docker_client.networks.list(filters={"label": label})
            )
        ),
    )
    print(f"stack removed after {took:.1f}s")


def test_push_to_registry(
    dockerd: Dockerd,
    docker_client: docker.DockerClient,
    registry: Registry,
    busybox_image: str,
) -> None:
    ref = f"{registry.host_port}/busybox:1.0"
    dockerd.cli("tag", IMAGE, ref)
    # 127.0.0.0/8 registries are insecure (plain http) by default: no daemon flag needed.
    pushed = dockerd.cli("push", ref).stdout
    match = re.search(r"digest: (sha256:[0-9a-f]{64})", pushed)
    assert match, pushed
    data = docker_client.images.get_registry_data(ref)
    assert data.id == match.group(1)
    # And back: pull from the registry after dropping the local tag.
    dockerd.cli("rmi", ref)
    pulled = docker_client.images.pull(ref)
    assert pulled.id == busybox_image
