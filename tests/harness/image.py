"""coopbot's image, built from the repo's Dockerfile on the private test dockerd, offline.

No image registry is reachable here, so the Dockerfile's base (`FROM python:3.11-slim-
bookworm`) is made locally: mmdebstrap builds a bookworm root file system from Debian's
packages (the apt sources this machine is configured with), shaped like the official
image where the Dockerfile relies on it (python and pip on PATH, no EXTERNALLY-MANAGED
marker, ca-certificates), and `docker import` names it exactly as the FROM line does. The
same Dockerfile pulls the real base anywhere else.

The base tarball is cached in .cache/images/ (ignored by git through its own .gitignore),
keyed by what goes into it, so only the first run pays for mmdebstrap (~40 s). The build
itself runs every time, on the host network: its RUN steps reach Debian's mirror and PyPI
the way this machine does.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path

from tests.harness.dockerd import DOCKER, Dockerd

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache"
MMDEBSTRAP = "/usr/bin/mmdebstrap"
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
TAG = "coopbot:test"


def base_name(dockerfile: Path = REPO / "Dockerfile") -> str:
    """The image of the Dockerfile's (first) FROM line."""
    match = re.search(r"^FROM\s+(\S+)", dockerfile.read_text(), re.MULTILINE)
    assert match, "no FROM line in the Dockerfile"
    return match.group(1)


_INCLUDE = ["python3", "python3-pip", "ca-certificates", "netbase", "tzdata"]
# Like the official python image: python/pip in /usr/local/bin, and pip may install
# system-wide (PEP 668's marker is Debian's; the official image has none).
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
_HOOKS = [
    'rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
    'ln -s /usr/bin/python3 "$1"/usr/local/bin/python',
    'ln -s /usr/bin/pip3 "$1"/usr/local/bin/pip',
    # The build's RUN steps reach PyPI the way this machine does, which may be through a
    # TLS-inspecting proxy whose CA only this machine trusts: the stand-in trusts what
    # the machine trusts (as a local CA, so the Dockerfile's ca-certificates keeps it).
    # The real base image is not touched by this; it only stands in for it here.
    f'cp {HOST_CA} "$1"/usr/local/share/ca-certificates/build-host.crt',
    'chroot "$1" update-ca-certificates',
]
_CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
]


def _sources() -> Path | None:
    return SOURCES if SOURCES.exists() else None


def base_tarball() -> Path:
    """The cached bookworm root file system (made by mmdebstrap on a miss)."""
    sources = _sources()
    key = hashlib.sha256(
        json.dumps(
            [_INCLUDE, _HOOKS, sources.read_text() if sources else "", HOST_CA.read_text()]
        ).encode()
    ).hexdigest()[:16]
    images = CACHE / "images"
    tarball = images / f"bookworm-python3-{key}.tar"
    if tarball.exists():
        return tarball
    images.mkdir(parents=True, exist_ok=True)
    gitignore = CACHE / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text("# made by tests/harness; never committed\n*\n")
    partial = tarball.with_suffix(".partial.tar")
    cmd = [MMDEBSTRAP, "--variant=apt", "--include=" + ",".join(_INCLUDE)]
    cmd += [f"--customize-hook={hook}" for hook in _HOOKS]
    # The machine's own apt sources (a file is read as a sources list), else Debian's default.
    cmd += ["bookworm", str(partial), *([str(sources)] if sources else [])]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if res.returncode:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"mmdebstrap exited {res.returncode}:\n{res.stderr[-3000:]}")
    partial.rename(tarball)  # atomic: a run killed halfway leaves no half tarball
    return tarball


def import_base(dockerd: Dockerd) -> str:
    """The base image, under the Dockerfile's FROM name, on `dockerd`."""
    name = base_name()
    tarball = base_tarball()
    args = [DOCKER, "-H", dockerd.host, "import"]
    for change in _CHANGES:
        args += ["--change", change]
    with open(tarball, "rb") as f:
        subprocess.run(
            [*args, "-", name],
            env=dockerd.cli_env,
            stdin=f,
            capture_output=True,
            check=True,
            timeout=300,
        )
    return name


def build(dockerd: Dockerd, tag: str = TAG) -> dict[str, float]:
    """Build the repo's Dockerfile as `tag`; returns timings (s) and the size (MB)."""
    t0 = time.monotonic()
    import_base(dockerd)
    t1 = time.monotonic()
    res = dockerd.cli(
        "build",
        "--network=host",  # the test dockerd has no bridge; RUN steps use the host's
        "--pull=false",
        "-t",
        tag,
        str(REPO),
        env={"DOCKER_BUILDKIT": "0"},  # the classic builder: no BuildKit daemon needed
        check=False,
        timeout=900,
    )
    if res.returncode:
        raise RuntimeError(
            f"docker build exited {res.returncode}:\n{res.stdout[-4000:]}\n{res.stderr}"
        )
    t2 = time.monotonic()
    size = int(dockerd.cli("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
    return {"import_base_s": t1 - t0, "build_s": t2 - t1, "size_mb": size / 1e6}
