"""A private dockerd (whichever the machine has) in single-node swarm mode, for tests.

It shares nothing with a system dockerd: own data/exec roots, socket, pidfile, config
file, containerd namespaces, cgroup parent, gateway bridge and swarm ports. Needs root
and the packages from scripts/install-system-deps.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]


def _first(candidates: Sequence[str | None], default: str) -> str:
    return next((c for c in candidates if c and os.path.exists(c)), default)


# Whatever Docker the machine has: Debian's docker.io, or docker-ce/moby from
# get.docker.com (scripts/install-system-deps never replaces one with the other).
# The client at /usr/bin/docker comes with that dockerd, so it matches the engine;
# /usr/local/bin/docker may be a newer, separately installed one.
DOCKERD = _first(
    [os.environ.get("COOPBOT_TEST_DOCKERD"), shutil.which("dockerd"), "/usr/bin/dockerd"],
    "/usr/sbin/dockerd",
)
DOCKER = _first(["/usr/bin/docker", shutil.which("docker")], "/usr/bin/docker")
# A static busybox (the image has no libc): busybox-static's, or its binary unpacked into
# .cache where the host keeps the dynamic busybox (see scripts/install-system-deps).
BUSYBOX = _first(
    [str(Path(os.environ.get("COOPBOT_CACHE", _REPO / ".cache")) / "busybox-static/bin/busybox")],
    "/bin/busybox",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")


def free_port(kind: int = socket.SOCK_STREAM, lo: int = 20000, hi: int = 32000) -> int:
    """A port on 127.0.0.1 that is free now (racy, but good enough for tests).

    The default range stays below the kernel's ephemeral range (32768+) and below
    49151, the highest port swarm accepts as --data-path-port.
    """
    for _ in range(100):
        port = random.randint(lo, hi)
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


class Dockerd:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data_root = workdir / "data"
        # Unix socket paths must stay < 108 bytes; containerd's live under exec-root,
        # so exec-root and our socket go to a short dir whatever the workdir is.
        self.short = Path(tempfile.mkdtemp(prefix="cb-", dir="/tmp"))
        self.exec_root = self.short / "x"
        self.socket = self.short / "d.sock"
        self.pidfile = self.short / "d.pid"
        self.host = f"unix://{self.socket}"
        self.log_path = workdir / "dockerd.log"
        tag = uuid.uuid4().hex[:8]
        self.bridge = f"cbgw{tag}"  # <= 15 chars (IFNAMSIZ)
        self.cgroup_parent = f"cb-{tag}"
        # The CLI gets its own config dir: no user contexts, credential helpers, etc.
        self.cli_env = {**os.environ, "DOCKER_CONFIG": str(workdir / "cli-config")}
        self.cli_env.pop("DOCKER_HOST", None)
        self.cli_env.pop("DOCKER_CONTEXT", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self._cmd: list[str] = []
        self._env: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self._turn: io.TextIOWrapper | None = None  # the machine-wide swarm lock, once started

    def start(self, timeout: float = 60) -> None:
        # One swarm-mode test dockerd per machine at a time (see the port check below):
        # a second test session waits its turn here instead of failing.
        self._turn = _wait_for_turn()
        # Swarm's gossip (service discovery) port 7946 can't be changed in 20.10: a second
        # swarm dockerd here (a system one, another test session) binds it first, and our
        # swarm would come up with service-name DNS broken. Fail clearly instead.
        with socket.socket() as s:
            # As Go does: ignore TIME_WAIT leftovers of a previous run, only a listener counts.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", 7946))
            except OSError as e:
                raise RuntimeError(
                    "port 7946 is taken: another swarm-mode dockerd runs on this machine"
                ) from e
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.short / "daemon.json"
        config.write_text("{}")  # don't read /etc/docker/daemon.json
        cmd = [
            DOCKERD,
            f"--config-file={config}",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.pidfile}",
            f"--host={self.host}",
            # No docker0 and no iptables/NAT/sysctl changes: nothing to clash with a
            # system dockerd's rules or bridge. Swarm overlay networks (VXLAN) and the
            # embedded DNS (its DNAT rules live inside each container's netns) still work.
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--ip-forward=false",
            # If a system containerd's socket exists, dockerd 20.10 uses that containerd
            # instead of starting its own; separate namespaces keep our containers apart.
            f"--containerd-namespace={self.cgroup_parent}",
            f"--containerd-plugins-namespace={self.cgroup_parent}-plugins",
            f"--cgroup-parent={self.cgroup_parent}",
            # The systemd driver (dockerd's default on cgroup v2 + systemd hosts) would
            # want a "*.slice" parent; cgroupfs works everywhere.
            "--exec-opt=native.cgroupdriver=cgroupfs",
        ]
        # Pushes/pulls to the test registry on 127.0.0.1 must not go through a proxy.
        no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY", ""), "127.0.0.1,localhost"]))
        env = {**os.environ, "NO_PROXY": no_proxy, "no_proxy": no_proxy}
        self._cmd, self._env = cmd, env  # for restart()
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            # New session: a Ctrl-C in pytest's terminal must not hit dockerd directly.
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = t0 + timeout
        while self.cli("info", "--format", "{{.ID}}", check=False, timeout=10).returncode:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited {self.proc.returncode}:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"dockerd not up after {timeout}s:\n{self._log_tail()}")
            time.sleep(0.1)
        t1 = time.monotonic()
        self.timings["dockerd_start"] = t1 - t0
        # Swarm creates the docker_gwbridge network on first use, as a host bridge named
        # "docker_gwbridge" that would clash with a system dockerd's. Pre-creating it lets
        # us choose the Linux bridge name (and delete it in stop()).
        self.cli(
            "network",
            "create",
            "--driver=bridge",
            f"--opt=com.docker.network.bridge.name={self.bridge}",
            "--opt=com.docker.network.bridge.enable_icc=false",
            "--opt=com.docker.network.bridge.enable_ip_masquerade=false",
            "docker_gwbridge",
        )
        # Loopback only (the defaults listen on 0.0.0.0), and not the default ports
        # (2377/tcp, 4789/udp VXLAN).
        self.cli(
            "swarm",
            "init",
            "--advertise-addr=127.0.0.1",
            f"--listen-addr=127.0.0.1:{free_port()}",
            f"--data-path-port={free_port(socket.SOCK_DGRAM)}",
        )
        self.timings["swarm_init"] = time.monotonic() - t1

    def restart(self, down: float = 0.0, timeout: float = 60) -> None:
        """Stop dockerd as a service manager restart does (SIGTERM: it stops the
        containers) and start it again on the same data, socket and swarm, after `down`
        seconds; the machine-wide turn stays held. Swarm then starts the tasks again."""
        assert self.proc is not None, "not started"
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        time.sleep(down)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self._cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while self.cli("info", "--format", "{{.ID}}", check=False, timeout=10).returncode:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited {self.proc.returncode}:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"dockerd not up after {timeout}s:\n{self._log_tail()}")
            time.sleep(0.1)

    def cli(
        self,
        *args: str,
        check: bool = True,
        env: dict[str, str] | None = None,
        input: str | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        """Run Debian's docker client against this daemon; text output captured."""
        res = subprocess.run(
            [DOCKER, "-H", self.host, *args],
            env={**self.cli_env, **(env or {})},
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and res.returncode:
            raise RuntimeError(
                f"docker {' '.join(args)} exited {res.returncode}:\n{res.stdout}{res.stderr}"
            )
        return res

    def import_image(
        self, ref: str = "local/busybox:1.0", cmd: Sequence[str] = ("/bin/sh",)
    ) -> str:
        """Import a busybox-only image (no registry needed); returns its id."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            # One symlink per applet at its usual place (bin/sh, usr/bin/env, sbin/ip, ...).
            applets = subprocess.run(
                [BUSYBOX, "--list-full"], capture_output=True, text=True, check=True
            ).stdout.split()
            applets = [a for a in applets if a not in ("bin/busybox", "linuxrc")]  # linuxrc: bogus
            dirs = {"bin", "etc", "root", "tmp"}
            dirs |= {str(d) for a in applets for d in Path(a).parents if str(d) != "."}
            for name in sorted(dirs):
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
                tar.addfile(info)
            tar.add(BUSYBOX, arcname="bin/busybox")
            for path in applets:
                info = tarfile.TarInfo(path)
                info.type, info.linkname = tarfile.SYMTYPE, "/bin/busybox"
                tar.addfile(info)
            files = {
                "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
                "etc/group": "root:x:0:\nnogroup:x:65534:\n",
            }
            for name, text in files.items():
                info, data = tarfile.TarInfo(name), text.encode()
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
        res = subprocess.run(
            [
                DOCKER,
                "-H",
                self.host,
                "import",
                "--change",
                f"CMD {json.dumps(list(cmd))}",
                # `docker import` sets no PATH; exec of "sleep" would fail without it.
                "--change",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "-",
                ref,
            ],
            env=self.cli_env,
            input=buf.getvalue(),
            capture_output=True,
            check=True,
            timeout=120,
        )
        return res.stdout.decode().strip()

    def stop(self, timeout: float = 20) -> None:
        """Stop dockerd (and containerd, shims, containers); idempotent."""
        if self.proc is not None and self.proc.poll() is None:
            # Kill containers first: graceful shutdown gives each one its stop grace
            # period (10s by default, and e.g. `sleep` as pid 1 ignores SIGTERM).
            with contextlib.suppress(subprocess.TimeoutExpired):  # hung: SIGKILL below
                ids = self.cli("ps", "-q", check=False, timeout=10).stdout.split()
                if ids:
                    self.cli("kill", *ids, check=False, timeout=30)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._kill_leftovers()
        self._unmount_all()
        if Path(f"/sys/class/net/{self.bridge}").exists():
            subprocess.run(["ip", "link", "delete", self.bridge], check=False)
        shutil.rmtree(self.short, ignore_errors=True)
        turn, self._turn = self._turn, None
        if turn is not None:
            turn.close()  # closing the file releases the lock

    def _kill_leftovers(self) -> None:
        """After a graceful stop nothing is left; after SIGKILL, containerd, the shims
        and the containers' processes are. All of them are ours: containers are in our
        cgroup parent; containerd and shims name our exec-root on their command line."""
        pids: set[int] = set()
        cgroups = [CGROUP_ROOT / self.cgroup_parent]  # cgroup v2
        if CGROUP_ROOT.is_dir():
            cgroups += [c / self.cgroup_parent for c in CGROUP_ROOT.iterdir()]  # v1
        cgroups = [c for c in cgroups if c.is_dir()]
        for cg in cgroups:
            for procs in cg.rglob("cgroup.procs"):
                pids.update(int(p) for p in procs.read_text().split())
        marker = str(self.exec_root).encode()
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                with contextlib.suppress(OSError):  # exited meanwhile
                    if marker in (proc / "cmdline").read_bytes():
                        pids.add(int(proc.name))
        pids.discard(os.getpid())
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if pids:
            time.sleep(0.5)
        for cg in cgroups:  # remove empty cgroup dirs, deepest first
            for d in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                _rmdir(d)
            _rmdir(cg)

    def _unmount_all(self) -> None:
        """Lazily unmount whatever is still mounted under our dirs (overlays, netns
        files), deepest first, so the directories can be removed."""
        roots = (str(self.short), str(self.data_root))
        with open("/proc/self/mounts") as f:
            # /proc/mounts escapes space, tab, newline and backslash as octal.
            points = [line.split()[1].encode().decode("unicode_escape") for line in f]
        for point in sorted(
            (p for p in points if any(p == r or p.startswith(r + "/") for r in roots)),
            key=len,
            reverse=True,
        ):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)

    def _log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _rmdir(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


TURN_LOCK = Path(tempfile.gettempdir()) / "coopbot-test-swarm.lock"
TURN_WAIT = 1800.0


def _wait_for_turn() -> io.TextIOWrapper:
    """Hold the machine-wide test-swarm lock (an flock, freed by the kernel if this
    process dies), waiting up to TURN_WAIT seconds for another test session."""
    handle = TURN_LOCK.open("a")
    deadline = time.monotonic() + TURN_WAIT
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                raise RuntimeError(f"another test swarm held {TURN_LOCK} too long") from None
            time.sleep(1)
