"""A throwaway sshd on 127.0.0.1 in front of the private test dockerd: an ssh:// server.

Debian's openssh-server (scripts/install-system-deps), run in the foreground on a free
port with its own host key, config, pidfile and authorized_keys; nothing of the system's
sshd (/etc/ssh) is read. The docker CLI and the bot reach a daemon over ssh by running
`docker system dial-stdio` on the remote side, so the key's authorized_keys line sets
DOCKER_HOST to the test dockerd's socket (`environment=`, with PermitUserEnvironment).

The client side is a throwaway ssh config too. OpenSSH reads ~/.ssh/config from the
passwd home directory, not from $HOME, so `client_env()` puts a `ssh` wrapper first on
PATH that adds `-F <config>`: the docker CLI and the bot call `ssh` by name, as on an
admin's machine whose ~/.ssh/config names the servers.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import signal
import subprocess
import time
from pathlib import Path

from tests.harness.dockerd import free_port

SSHD = "/usr/sbin/sshd"
SSH = "/usr/bin/ssh"
SSH_KEYGEN = "/usr/bin/ssh-keygen"


def _keygen(path: Path) -> None:
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        capture_output=True,
    )


class Sshd:
    """`alias` reaches the server with the authorised key; `refused_alias` offers a key
    the server does not know; `closed_alias` points at a port nobody listens on."""

    def __init__(self, workdir: Path, docker_host: str, alias: str = "coop-server") -> None:
        self.workdir = workdir
        self.docker_host = docker_host  # what `docker` on the "remote" side talks to
        self.alias = alias
        self.refused_alias = f"{alias}-refused"
        self.closed_alias = f"{alias}-closed"
        self.port = 0
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.config = workdir / "ssh_config"
        self.bin = workdir / "bin"  # the ssh wrapper
        self.log_path = workdir / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name in ("host_key", "client_key", "stranger_key"):
            if not (self.workdir / name).exists():
                _keygen(self.workdir / name)
        pub = (self.workdir / "client_key.pub").read_text().strip()
        (self.workdir / "authorized_keys").write_text(
            f'environment="DOCKER_HOST={self.docker_host}" {pub}\n'
        )
        # sshd refuses to start without its privilege-separation directory; the package
        # makes it only when its service starts, which install-system-deps never does.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.port = free_port()
        sshd_config = self.workdir / "sshd_config"
        sshd_config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.workdir / 'host_key'}",
                    f"PidFile {self.workdir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}",
                    "AuthenticationMethods publickey",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "PermitUserEnvironment yes",
                    # The key files live in pytest's tmp dirs, whose modes sshd would
                    # otherwise judge as for a home directory.
                    "StrictModes no",
                    "UsePAM no",
                    "X11Forwarding no",
                    "PrintMotd no",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(sshd_config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._write_client_config()
        deadline = time.monotonic() + timeout
        while True:
            res = self.ssh(self.alias, "true", check=False)
            if res.returncode == 0:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"sshd not up ({res.stderr.strip()}):\n{self.log_path.read_text()[-2000:]}"
                )
            time.sleep(0.1)

    def _write_client_config(self) -> None:
        common = [
            "  HostName 127.0.0.1",
            f"  User {self.user}",
            "  IdentitiesOnly yes",
            # The host key is made anew for every run.
            "  StrictHostKeyChecking no",
            "  UserKnownHostsFile /dev/null",
            "  LogLevel ERROR",
            "  BatchMode yes",
        ]
        hosts = [
            (self.alias, self.port, "client_key"),
            (self.refused_alias, self.port, "stranger_key"),
            (self.closed_alias, free_port(), "client_key"),
        ]
        lines: list[str] = []
        for alias, port, key in hosts:
            lines += [f"Host {alias}", f"  Port {port}", f"  IdentityFile {self.workdir / key}"]
            lines += common
        self.config.write_text("\n".join(lines) + "\n")
        self.bin.mkdir(exist_ok=True)
        wrapper = self.bin / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec {SSH} -F {shlex.quote(str(self.config))} "$@"\n')
        wrapper.chmod(0o755)

    def client_env(self) -> dict[str, str]:
        """os.environ with the ssh wrapper first on PATH (for monkeypatch or a subprocess)."""
        env = dict(os.environ)
        env["PATH"] = f"{self.bin}:{env.get('PATH', os.defpath)}"
        return env

    def url(self, alias: str | None = None) -> str:
        return f"ssh://{alias or self.alias}"

    def ssh(
        self, alias: str, *command: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SSH, "-F", str(self.config), alias, *command],
            capture_output=True,
            text=True,
            timeout=30,
            check=check,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Each connection has an sshd child of its own, in the listener's process group
        # (its own session, started above): end them too.
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
