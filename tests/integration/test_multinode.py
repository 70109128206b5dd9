"""A swarm of three nodes (a manager and two workers, each a dockerd in its own network
namespace, tests/harness/multinode.py): the harness itself, and the bot on it."""

from __future__ import annotations

import time

from tests.harness.fixtures_multinode import multinode  # noqa: F401
from tests.harness.multinode import HOSTNAMES, MultiNodeSwarm


def wait_running(swarm: MultiNodeSwarm, service: str, count: int, timeout: float = 60) -> list[str]:
    """The nodes of the service's running tasks, once `count` of them run."""
    deadline = time.monotonic() + timeout
    while True:
        out = swarm.manager.cli(
            "service",
            "ps",
            service,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}} {{.CurrentState}}",
        ).stdout
        nodes = [line.split()[0] for line in out.splitlines() if " Running " in line]
        if len(nodes) >= count:
            return nodes
        assert time.monotonic() < deadline, out
        time.sleep(0.5)


def test_three_nodes_and_an_overlay_between_workers(multinode: MultiNodeSwarm) -> None:  # noqa: F811
    m = multinode.manager
    out = m.cli("node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}").stdout
    assert sorted(out.splitlines()) == [
        "mn-manager Ready Leader",
        "mn-worker-1 Ready ",
        "mn-worker-2 Ready ",
    ]
    assert {n.hostname for n in multinode.nodes} == set(HOSTNAMES)
    m.cli("network", "create", "--driver=overlay", "mn-harness")
    m.cli(
        "service",
        "create",
        "--detach",
        "--name=pinger",
        "--network=mn-harness",
        "--endpoint-mode=dnsrr",
        "--replicas=2",
        "--replicas-max-per-node=1",
        "--constraint=node.role==worker",
        "local/busybox:1.0",
        "sleep",
        "3600",
    )
    try:
        assert sorted(wait_running(multinode, "pinger", 2)) == ["mn-worker-1", "mn-worker-2"]
        # Each task pings every task (itself and the one on the other worker) across
        # the overlay (VXLAN between the two namespaces).
        for worker in multinode.workers:
            (cid,) = worker.cli(
                "ps", "-q", "--filter", "label=com.docker.swarm.service.name=pinger"
            ).stdout.split()
            script = (
                "ips=$(nslookup tasks.pinger | awk '/^Address/ {print $NF}' | grep -v :53); "
                'set -- $ips; [ "$#" = 2 ] || exit 9; '
                "for ip in $ips; do ping -c1 -W3 $ip || exit 1; done"
            )
            res = worker.cli("exec", cid, "sh", "-c", script, check=False)
            assert res.returncode == 0, res.stdout + res.stderr
    finally:
        m.cli("service", "rm", "pinger")
