"""A throwaway Synapse homeserver for integration tests and benchmarks.

Synapse runs as a child process (the interpreter of the current venv) bound to
127.0.0.1 only, with federation, stats, URL previews and key-server lookups
disabled so that it never talks to the internet, and with every rate limit
raised so tests never see M_LIMIT_EXCEEDED.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import yaml

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0

# Effectively "no limit". Shape shared by all new-style rate-limit options.
_UNLIMITED: dict[str, int] = {"per_second": 10000, "burst_count": 100000}

# Top-level rc_* options whose value is a single {per_second, burst_count}.
_FLAT_LIMITS = (
    "rc_message",
    "rc_registration",
    "rc_registration_token_validity",
    "rc_admin_redaction",
    "rc_joins_per_room",
    "rc_key_requests",
    "rc_3pid_validation",
    "rc_third_party_invite",
    "rc_media_create",
    "rc_delayed_event_mgmt",
    "rc_room_creation",
    "rc_reports",
    "rc_user_directory",
    "rc_profile",
)
# rc_* options that nest one level deeper: {sub_key: {per_second, burst_count}}.
_NESTED_LIMITS: dict[str, tuple[str, ...]] = {
    "rc_login": ("address", "account", "failed_attempts"),
    "rc_joins": ("local", "remote"),
    "rc_invites": ("per_room", "per_user", "per_issuer"),
    "rc_presence": ("per_user",),
}


def _free_port() -> int:
    # Racy by nature (the port is released before Synapse binds it); start()
    # retries with a new port if Synapse fails with "address in use".
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


def _tail(path: pathlib.Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "<no output>"


class SynapseError(RuntimeError):
    pass


class Synapse:
    """One Synapse process with its config, SQLite database and logs in `workdir`.

    `extra_config` is deep-merged into homeserver.yaml last, so it can override
    anything set here.
    """

    server_name: str = "localhost"

    def __init__(self, workdir: pathlib.Path, extra_config: dict[str, Any] | None = None) -> None:
        self.workdir = pathlib.Path(workdir)
        self.extra_config = extra_config or {}
        self.port = 0
        self.url = ""
        self.config_path = self.workdir / "homeserver.yaml"
        self.out_path = self.workdir / "synapse.out"
        self.log_path = self.workdir / "homeserver.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._shared_secret = ""
        # Safety net for an interpreter exiting without the fixture teardown.
        atexit.register(self.stop)

    # ------------------------------------------------------------------ start

    def start(self, port: int = 0) -> None:
        """Start; `port` (e.g. the previous one, for a restart) or a free one."""
        if self._proc is not None:
            raise SynapseError("already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists():
            self._generate()
        for attempt in range(3):
            self.port = port or _free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self._write_config()
            try:
                self._spawn_and_wait()
                return
            except SynapseError:
                if attempt < 2 and "Address already in use" in _tail(self.out_path):
                    continue
                raise

    def _generate(self) -> None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "synapse.app.homeserver",
                "--generate-config",
                "--server-name",
                self.server_name,
                "--config-path",
                str(self.config_path),
                "--data-directory",
                str(self.workdir / "data"),
                "--report-stats=no",
            ],
            cwd=self.workdir,
            check=True,
            capture_output=True,
        )

    def _write_config(self) -> None:
        # The generated file has no trailing newline and comments we don't
        # need, so round-trip it through yaml rather than appending text.
        config: dict[str, Any] = yaml.safe_load(self.config_path.read_text())
        log_config_path = self.workdir / "log.config.yaml"
        log_config_path.write_text(yaml.safe_dump(self._log_config()))
        config.update(
            {
                "listeners": [
                    {
                        "port": self.port,
                        "bind_addresses": ["127.0.0.1"],
                        "type": "http",
                        "tls": False,
                        "x_forwarded": False,
                        # "client" also serves /_synapse/admin.
                        "resources": [{"names": ["client"], "compress": False}],
                    }
                ],
                "log_config": str(log_config_path),
                "report_stats": False,
                "trusted_key_servers": [],
                "suppress_key_server_warning": True,
                "enable_registration": False,
                "presence": {"enabled": False},
                "url_preview_enabled": False,
                # Never federate: no allowed remote domains, and no process is
                # the federation sender (send_federation is deprecated).
                "federation_domain_whitelist": [],
                "federation_sender_instances": [],
                # Keeps the SQLite db lean and startup quick.
                "enable_metrics": False,
            }
        )
        for key in _FLAT_LIMITS:
            config[key] = dict(_UNLIMITED)
        for key, subkeys in _NESTED_LIMITS.items():
            config[key] = {sub: dict(_UNLIMITED) for sub in subkeys}
        _deep_merge(config, self.extra_config)
        self._shared_secret = str(config["registration_shared_secret"])
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def _log_config(self) -> dict[str, Any]:
        return {
            "version": 1,
            "formatters": {
                "precise": {
                    "format": "%(asctime)s - %(name)s - %(lineno)d - "
                    "%(levelname)s - %(request)s - %(message)s"
                }
            },
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "formatter": "precise",
                    "filename": str(self.log_path),
                    "encoding": "utf8",
                }
            },
            "root": {"level": "WARNING", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }

    def _spawn_and_wait(self) -> None:
        with self.out_path.open("ab") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise SynapseError(
                    f"Synapse exited with {code} during startup.\n"
                    f"--- {self.out_path} ---\n{_tail(self.out_path)}\n"
                    f"--- {self.log_path} ---\n{_tail(self.log_path)}"
                )
            try:
                with urllib.request.urlopen(
                    f"{self.url}/_matrix/client/versions", timeout=2
                ) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.stop()
        raise SynapseError(
            f"Synapse did not answer within {START_TIMEOUT}s.\n{_tail(self.out_path)}"
        )

    # ------------------------------------------------------------------- stop

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # SIGTERM to this pid only
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # ----------------------------------------------------------- registration

    def user_id(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    def register(self, localpart: str, password: str, admin: bool = False) -> str:
        """Create a user via the shared-secret admin API and return its id.

        Idempotent: if the localpart is taken, the existing id is returned (the
        password and admin flag of the existing user are left unchanged).
        """
        endpoint = f"{self.url}/_synapse/admin/v1/register"
        nonce = self._request("GET", endpoint)["nonce"]
        # The MAC covers the four fields joined by NUL (no trailing NUL).
        signed = (nonce, localpart, password, "admin" if admin else "notadmin")
        mac = hmac.new(
            self._shared_secret.encode(),
            b"\x00".join(part.encode() for part in signed),
            hashlib.sha1,
        ).hexdigest()
        body = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": mac,
        }
        try:
            return str(self._request("POST", endpoint, body)["user_id"])
        except urllib.error.HTTPError as err:
            payload = json.loads(err.read() or b"{}")
            if payload.get("errcode") == "M_USER_IN_USE":
                return self.user_id(localpart)
            raise SynapseError(f"register {localpart!r} failed: {err.code} {payload}") from err

    def _request(self, method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result
