"""A private Docker registry (Debian's docker-registry, distribution 2.8) on 127.0.0.1.

Plain http, no auth. dockerd treats registries on 127.0.0.0/8 as insecure by default,
so `docker push 127.0.0.1:PORT/name:tag` works without --insecure-registry.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.harness.dockerd import free_port

REGISTRY = "/usr/bin/docker-registry"


class Registry:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.host_port = ""  # "127.0.0.1:PORT": prefix for image refs
        self.url = ""  # "http://127.0.0.1:PORT"
        self.log_path = workdir / "registry.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host_port = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host_port}"
        config = {  # JSON is valid YAML
            "version": 0.1,
            "log": {"level": "info"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.workdir / "storage")},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host_port},
        }
        config_path = self.workdir / "config.yml"
        config_path.write_text(json.dumps(config))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [REGISTRY, "serve", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore *_PROXY
        deadline = time.monotonic() + timeout
        while True:
            try:
                with opener.open(f"{self.url}/v2/", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"registry exited {self.proc.returncode}: see {self.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"registry not up after {timeout}s: see {self.log_path}")
            time.sleep(0.1)

    def stop(self, timeout: float = 10) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
