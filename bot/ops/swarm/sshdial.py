"""docker's ssh:// hosts through the system ssh client, as the docker CLI and abra do.

Each HTTP connection of the SDK is one `ssh [-l user] [-p port] -- host docker system
dial-stdio` process talking over a socketpair: the user's ~/.ssh/config, keys and agent
apply, and the remote `docker` CLI finds its daemon as it would for the CLI's own ssh://
(its DOCKER_HOST, or /var/run/docker.sock).

Why not docker-py's own `use_ssh_client=True`: its transport module imports paramiko at
import time, so without paramiko the SDK refuses every ssh:// host ("Install paramiko
package to enable ssh:// support") even though it would then use the ssh binary. The
socketpair also gives urllib3 a real socket (timeouts, streaming logs) where docker-py
wraps a pipe.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import threading
import urllib.parse
from typing import IO, Any

import docker
import requests.adapters
import urllib3.connection
import urllib3.connectionpool

# The SDK's requests go to this URL (docker-py wants a port); the adapter mounted on it
# dials ssh, so nothing ever connects to it.
BASE_URL = "tcp://docker-over-ssh:2375"


def ssh_argv(docker_host: str) -> list[str]:
    """The ssh command line the docker CLI uses for `docker_host` (ssh://[user@]host[:port])."""
    url = urllib.parse.urlsplit(docker_host)
    if url.scheme != "ssh" or not url.hostname:
        raise ValueError(f"not an ssh:// docker host: {docker_host}")
    # BatchMode: the bot has no terminal, so a password or host-key prompt must fail
    # at once with ssh's own message instead of hanging.
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=30", "-T"]
    if url.username:
        argv += ["-l", url.username]
    if url.port:
        argv += ["-p", str(url.port)]
    return [*argv, "--", url.hostname, "docker", "system", "dial-stdio"]


class _SSHConnection(urllib3.connection.HTTPConnection):
    def __init__(self, adapter: SSHDialAdapter, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._adapter = adapter
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self.said = ""  # once closed: ssh's last line if it failed

    def connect(self) -> None:
        ours, theirs = socket.socketpair()
        # ssh's messages go to a file, read when the connection closes: never a pipe
        # that could fill up and block ssh.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        try:
            self._proc = subprocess.Popen(
                self._adapter.argv,
                stdin=theirs.fileno(),
                stdout=theirs.fileno(),
                stderr=self._stderr,
                env=self._adapter.env(),
                start_new_session=True,  # a Ctrl-C of the bot's terminal is the bot's
            )
        except OSError:
            ours.close()
            self._stderr.close()
            raise
        finally:
            theirs.close()
        self._adapter.track(self)
        ours.settimeout(self._adapter.timeout)
        self.sock = ours

    def exited(self, wait: float) -> bool:
        """Has this connection's ssh exited (waiting up to `wait` seconds)?"""
        proc = self._proc
        if proc is None:
            return True
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
        return proc.returncode is not None

    def close(self) -> None:
        super().close()
        proc, self._proc = self._proc, None
        if proc is not None:
            # Our end is closed: dial-stdio sees EOF and ssh exits; don't leave a zombie.
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stderr, self._stderr = self._stderr, None
        if stderr is not None:
            with stderr:
                stderr.seek(0)
                lines = stderr.read().decode(errors="replace").strip().splitlines()
            if proc is not None and proc.returncode:
                self.said = lines[-1].strip() if lines else f"ssh exited {proc.returncode}"


class _SSHConnectionPool(urllib3.connectionpool.HTTPConnectionPool):
    def __init__(self, adapter: SSHDialAdapter, timeout: float, maxsize: int) -> None:
        super().__init__("localhost", timeout=timeout, maxsize=maxsize)
        self._adapter = adapter
        self._seconds = timeout  # self.timeout became urllib3's Timeout object

    def _new_conn(self) -> _SSHConnection:
        return _SSHConnection(self._adapter, self._seconds)


class SSHDialAdapter(requests.adapters.HTTPAdapter):
    """A requests adapter whose connections are ssh dial-stdio processes."""

    def __init__(self, docker_host: str, timeout: float = 60, max_pool_size: int = 10) -> None:
        self.argv = ssh_argv(docker_host)
        self.timeout = timeout  # per socket operation, as for docker-py's unix sockets
        self._pool = _SSHConnectionPool(self, timeout, max_pool_size)
        self._lock = threading.Lock()
        self._latest: _SSHConnection | None = None
        super().__init__()

    @staticmethod
    def env() -> dict[str, str]:
        # The remote side is chosen by the ssh config; a local DOCKER_HOST means nothing there.
        return {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}

    def track(self, conn: _SSHConnection) -> None:
        with self._lock:
            self._latest = conn

    def last_error(self) -> str:
        """What ssh (or the remote shell) said last when the newest connection failed:
        'Permission denied (publickey).', 'connect to host ... Connection refused'."""
        with self._lock:
            conn = self._latest
        # The failed request may have raced ssh's exit: give it a moment.
        if conn is None or not conn.exited(wait=2):
            return ""
        conn.close()  # its ssh is gone: reads what it said (idempotent)
        return conn.said

    def get_connection(self, url: Any, proxies: Any = None) -> _SSHConnectionPool:
        return self._pool

    def get_connection_with_tls_context(
        self, request: Any, verify: Any, proxies: Any = None, cert: Any = None
    ) -> _SSHConnectionPool:
        # requests >= 2.32.2 asks this one (as docker-py's BaseHTTPAdapter notes).
        return self._pool

    def request_url(self, request: Any, proxies: Any) -> str:
        # No proxy can sit between us and a socketpair: the path is the whole request line.
        return str(request.path_url)

    def close(self) -> None:
        super().close()
        self._pool.close()  # closes its connections, which keep what ssh said


def ssh_docker_client(adapter: SSHDialAdapter, timeout: float) -> Any:
    """A DockerClient whose requests go through `adapter` (version="auto" as for the others)."""
    # A fixed version skips the constructor's probe, which would go out before the
    # adapter is mounted; the real version is asked through the adapter right after.
    client = docker.DockerClient(base_url=BASE_URL, version="1.24", timeout=timeout)
    client.api.mount(client.api.base_url, adapter)  # "http://docker-over-ssh:2375"
    try:
        client.api._version = client.api._retrieve_server_version()
    except BaseException:
        client.close()
        raise
    return client
