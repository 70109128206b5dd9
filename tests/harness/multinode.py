"""A three-node swarm on one machine: a manager and two workers, each a dockerd in its
own network namespace, for the tests of several nodes.

Layout (all names fixed, so a crashed run's leftovers are found and removed by name):
- a namespace `coopbot-mn-br` holding the Linux bridge `br0`: nothing is added to the
  root namespace's interfaces or routes;
- per node n (0 = manager, 1 and 2 = workers) a namespace `coopbot-mn-<n>` with `lo`
  and `eth0` (one end of a veth pair; the other end is on the bridge), address
  10.231.0.1<n>/24 and no default route (nothing beyond the bridge is reachable);
- per node a dockerd started with `nsenter --net` (so only the network namespace
  differs: its mounts, socket and volumes stay visible from the root namespace, where
  the tests and the bot run) and `unshare --uts` with its own hostname
  (`mn-manager`, `mn-worker-1`, `mn-worker-2`), since swarm names a node after it;
  own data-root, exec-root, socket, pidfile, containerd namespaces and cgroup parent
  (`cbmn<n>`), `--bridge=none --iptables=false`.

Swarm's fixed gossip port 7946 and the VXLAN port are per namespace, so this swarm
does not clash with the single-node test dockerd (tests/harness/dockerd.py) and may run
beside it; two multi-node runs may not, hence our own flock.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.harness.dockerd import BUSYBOX, DOCKER, DOCKERD, Dockerd

PREFIX = "coopbot-mn-"
BRIDGE_NS = PREFIX + "br"
SUBNET = "10.231.0"
LOCK = Path(tempfile.gettempdir()) / "coopbot-test-multinode.lock"
LOCK_WAIT = 1800.0
HOSTNAMES = ("mn-manager", "mn-worker-1", "mn-worker-2")
SWARM_PORT = 2377
RESTIC_IMAGE = "local/restic:1.0"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def _in_ns(ns: str, *args: str) -> None:
    _ip("netns", "exec", ns, *args)


class Node(Dockerd):
    """One dockerd of the multi-node swarm, in its own network namespace."""

    def __init__(self, index: int, workdir: Path) -> None:
        super().__init__(workdir)
        # Fixed short paths (not mkdtemp): leftovers of a crashed run are found by name.
        shutil.rmtree(self.short, ignore_errors=True)
        self.index = index
        self.name = f"cbmn{index}"
        self.short = Path(tempfile.gettempdir()) / self.name
        self.exec_root = self.short / "x"
        self.data_root = self.short / "data"  # under the fixed path too, for leftovers
        self.socket = self.short / "d.sock"
        self.pidfile = self.short / "d.pid"
        self.host = f"unix://{self.socket}"
        self.cgroup_parent = self.name
        self.bridge = f"{self.name}gw"
        self.netns = f"{PREFIX}{index}"
        self.hostname = HOSTNAMES[index]
        self.address = f"{SUBNET}.{11 + index}"
        self.node_id = ""

    @property
    def volumes_root(self) -> Path:
        return self.data_root / "volumes"

    def start_daemon(self, timeout: float = 90, *, gwbridge: bool = True) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.short.mkdir(parents=True, exist_ok=True)
        config = self.short / "daemon.json"
        config.write_text("{}")  # don't read /etc/docker/daemon.json
        cmd = [
            "nsenter",
            f"--net=/run/netns/{self.netns}",
            "--",
            "unshare",
            "--uts",
            "--",
            "sh",
            "-c",
            'hostname "$0" && exec "$@"',
            self.hostname,
            DOCKERD,
            f"--config-file={config}",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.pidfile}",
            f"--host={self.host}",
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--ip-forward=false",
            f"--containerd-namespace={self.cgroup_parent}",
            f"--containerd-plugins-namespace={self.cgroup_parent}-plugins",
            f"--cgroup-parent={self.cgroup_parent}",
            "--exec-opt=native.cgroupdriver=cgroupfs",
        ]
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = t0 + timeout
        while not self._answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited {self.proc.returncode}:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"dockerd not up after {timeout}s:\n{self._log_tail()}")
            time.sleep(0.2)
        self.timings["dockerd_start"] = time.monotonic() - t0
        if not gwbridge:  # a restart: the network is in the data-root already
            return
        # As in Dockerd.start: our own docker_gwbridge, named so it can't clash.
        self.cli(
            "network",
            "create",
            "--driver=bridge",
            f"--opt=com.docker.network.bridge.name={self.bridge}",
            "--opt=com.docker.network.bridge.enable_icc=false",
            "--opt=com.docker.network.bridge.enable_ip_masquerade=false",
            "docker_gwbridge",
        )

    def _answers(self) -> bool:
        """Whether the daemon answers `docker info`; one that accepts the connection but
        is still loading its swarm state (a revive on a busy machine) is asked again."""
        try:
            return not self.cli("info", "--format", "{{.ID}}", check=False, timeout=10).returncode
        except subprocess.TimeoutExpired:
            return False

    def kill(self) -> None:
        """Kill the node at once (dockerd, containerd, shims, containers), as a machine
        that loses power: nothing is told to stop gracefully."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._kill_leftovers()

    def revive(self) -> None:
        """After kill(): the same data-root, so it rejoins the swarm as the same node."""
        self._unmount_all()
        self.start_daemon(gwbridge=False)

    def stop(self, timeout: float = 20) -> None:
        super().stop(timeout)  # removes self.short too


class MultiNodeSwarm:
    """The manager and two workers; start() builds everything, stop() removes it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.nodes = [Node(i, workdir / f"node{i}") for i in range(3)]
        self.timings: dict[str, float] = {}
        self._lock: io.TextIOWrapper | None = None

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> list[Node]:
        return self.nodes[1:]

    def node(self, hostname: str) -> Node:
        return next(n for n in self.nodes if n.hostname == hostname)

    def start(self) -> None:
        self._lock = _hold_lock()
        t0 = time.monotonic()
        remove_leftovers()
        self._network()
        self.timings["network"] = time.monotonic() - t0
        for node in self.nodes:
            node.start_daemon()
        self.timings["dockerd_start"] = time.monotonic() - t0
        m = self.manager
        m.cli(
            "swarm",
            "init",
            f"--advertise-addr={m.address}",
            f"--listen-addr={m.address}:{SWARM_PORT}",
        )
        token = m.cli("swarm", "join-token", "-q", "worker").stdout.strip()
        for w in self.workers:
            w.cli(
                "swarm",
                "join",
                f"--token={token}",
                f"--advertise-addr={w.address}",
                f"--listen-addr={w.address}:{SWARM_PORT}",
                f"{m.address}:{SWARM_PORT}",
            )
        self.wait_ready()
        for node in self.nodes:
            node.node_id = node.cli("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()
            m.cli(
                "node", "update", "--label-add", f"coopbot.test.name={node.hostname}", node.node_id
            )
        m.cli("node", "update", "--label-add", "coopbot.test.disk=ssd", self.workers[0].node_id)
        self.timings["swarm"] = time.monotonic() - t0

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the manager sees all three nodes Ready."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.manager.cli("node", "ls", "--format", "{{.Hostname}} {{.Status}}").stdout
            ready = {line.split()[0] for line in out.splitlines() if line.endswith(" Ready")}
            if ready >= set(HOSTNAMES):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes not ready after {timeout}s:\n{out}")
            time.sleep(0.5)

    def import_image(self, ref: str = "local/busybox:1.0") -> None:
        for node in self.nodes:
            node.import_image(ref)

    def import_restic_image(self, ref: str = RESTIC_IMAGE) -> None:
        """busybox plus the host's restic (and the libc it links) on every node: what
        the bot's own image offers a one-off backup task (restic and sh)."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name in ("bin", "lib", "lib64", "tmp", "root", "etc", "usr", "usr/bin"):
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
                tar.addfile(info)
            tar.add(BUSYBOX, arcname="bin/busybox")
            for applet in ("sh", "cat", "ls", "sleep", "echo"):
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "/bin/busybox"
                tar.addfile(info)
            restic = shutil.which("restic") or "/usr/bin/restic"
            tar.add(restic, arcname="usr/bin/restic")
            # ldd's "=> /path" and bare "/path" lines: the libraries and the loader.
            ldd = subprocess.run(["ldd", restic], capture_output=True, text=True).stdout
            for word in ldd.split():
                if word.startswith("/") and Path(word).exists():
                    tar.add(str(Path(word).resolve()), arcname=word.lstrip("/"))
        for node in self.nodes:
            subprocess.run(
                [
                    DOCKER,
                    "-H",
                    node.host,
                    "import",
                    "--change",
                    'CMD ["/bin/sh"]',
                    "--change",
                    "ENV PATH=/usr/bin:/bin",
                    "-",
                    ref,
                ],
                env=node.cli_env,
                input=buf.getvalue(),
                capture_output=True,
                check=True,
                timeout=120,
            )

    def stop(self) -> None:
        try:
            for node in reversed(self.nodes):
                with contextlib.suppress(Exception):
                    node.stop()
            remove_leftovers()
        finally:
            lock, self._lock = self._lock, None
            if lock is not None:
                lock.close()

    def _network(self) -> None:
        _ip("netns", "add", BRIDGE_NS)
        _in_ns(BRIDGE_NS, "ip", "link", "add", "br0", "type", "bridge")
        _in_ns(BRIDGE_NS, "ip", "link", "set", "br0", "up")
        for node in self.nodes:
            _ip("netns", "add", node.netns)
            peer = f"p{node.index}"
            # Created in the bridge's namespace, one end moved: never in the root one.
            _in_ns(BRIDGE_NS, "ip", "link", "add", peer, "type", "veth", "peer", "name", "eth0")
            _in_ns(BRIDGE_NS, "ip", "link", "set", "eth0", "netns", node.netns)
            _in_ns(BRIDGE_NS, "ip", "link", "set", peer, "master", "br0")
            _in_ns(BRIDGE_NS, "ip", "link", "set", peer, "up")
            _in_ns(node.netns, "ip", "link", "set", "lo", "up")
            _in_ns(node.netns, "ip", "addr", "add", f"{node.address}/24", "dev", "eth0")
            _in_ns(node.netns, "ip", "link", "set", "eth0", "up")


def remove_leftovers() -> None:
    """Whatever a crashed run left behind, found by its fixed names: processes in our
    namespaces, cgroups and exec-roots; mounts under our dirs; the namespaces."""
    for index in range(3):
        leftover = Node(index, Path(tempfile.gettempdir()) / f"cbmn{index}-none")
        leftover._kill_leftovers()
        leftover._unmount_all()
        shutil.rmtree(leftover.short, ignore_errors=True)
    names = [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line]
    for ns in (n for n in names if n.startswith(PREFIX)):
        pids = _ip("netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            subprocess.run(["kill", "-9", pid], check=False)
        _ip("netns", "delete", ns, check=False)


def _hold_lock() -> io.TextIOWrapper:
    handle = LOCK.open("a")
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                raise RuntimeError(f"another multi-node swarm held {LOCK} too long") from None
            time.sleep(1)


@contextlib.contextmanager
def multinode_swarm(workdir: Path) -> Iterator[MultiNodeSwarm]:
    swarm = MultiNodeSwarm(workdir)
    try:
        swarm.start()
        yield swarm
    finally:
        swarm.stop()
