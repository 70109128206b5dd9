"""Stand-in images for real recipes: the exact image names and tags a recipe uses,
built offline on the test dockerd with `docker import`, so its stack converges.

No registry is reachable from the tests, and the real images (bonfire, postgis,
traefik, ...) would be gigabytes anyway. What swarm needs for a recipe's stack to
converge is only that each task starts, keeps running and, where the recipe has a
healthcheck, turns healthy. A stand-in is busybox-static plus one script:

- `/stand-in` is the image's ENTRYPOINT. Run as the container's main process (or a
  descendant of it) it prints what it stands in for and sleeps until stopped; run
  any other way (a healthcheck, `docker exec`) it exits 0 at once. The two cases
  are told apart by the process tree, not by arguments: a healthcheck is exec'd
  into the container, so its chain of parents reaches pid 0 (a parent outside the
  container's pid namespace) without passing pid 1. That is what lets one program
  (traefik) be both the main process (`traefik`) and its own healthcheck
  (`traefik healthcheck`).
- A recipe's `entrypoint:` replaces the image's ENTRYPOINT, and its `command:`
  becomes the arguments, which entrypoint scripts usually `exec "$@"`. So every
  program a recipe names there, in its healthchecks, and in the scripts it mounts
  as configs at those paths (bonfire's entrypoint.sh.tmpl, llamenos's
  minio-entrypoint.sh.tmpl) is provided as a two-line busybox-sh script that
  `exec /stand-in`. Bare names go to /usr/local/bin, first on PATH, so they also
  shadow busybox's own wget and nc: a real `wget http://localhost:8787/...` would
  fail, there is no server.
- Scripts the recipe mounts as configs are not replaced (the mount wins anyway):
  they run for real under busybox sh, reading the real secrets; only what they call
  is stood in for.

Built images are cached per dockerd (a session-scoped daemon serves several tests):
a ref is rebuilt only when a later recipe needs programs its stand-in lacks.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import subprocess
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from bot.ops.compose import load_compose
from tests.harness.compose_oracle import app_env, compose_files
from tests.harness.dockerd import BUSYBOX, DOCKER, Dockerd

# The stand-in itself. `$$` is the script's own pid; PPid is read from /proc (busybox
# has no `ps -o ppid`). The main process traps TERM so `docker stack rm` is quick
# (a pid 1 without a handler ignores TERM and waits out the grace period).
STAND_IN = """#!/bin/sh
# Stand-in for a real program (tests/harness/standins.py).
pid=$$
while [ "$pid" -gt 1 ]; do
    ppid=0
    while read -r key value; do
        [ "$key" = PPid: ] && ppid=$value && break
    done < "/proc/$pid/status"
    [ "$ppid" = 0 ] && exit 0  # exec'd into the container: a healthcheck or an exec
    pid=$ppid
done
echo "stand-in for: $*"
trap 'exit 0' TERM INT
/bin/busybox sleep 2147483647 &
wait $!
"""

# Each program the recipe names: the name it was called by goes first in the log line.
PROGRAM = '#!/bin/sh\nexec /stand-in "$0" "$@"\n'

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Words that are the shell's own (keywords and builtins of busybox ash): never programs.
_SHELL = """if then else elif fi for while until do done case esac in function { } ! [ [[ ]]
test echo printf export set unset shift exit return read local cd trap wait exec eval source
. : true false command ulimit umask"""
SHELL_WORDS = frozenset(_SHELL.split())


def _applets() -> frozenset[str]:
    names = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True)
    return frozenset(names.stdout.split())


@dataclass
class StandIn:
    """What one image ref must provide: absolute paths and bare names of programs."""

    ref: str
    paths: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)

    def files(self) -> set[str]:
        """Every program as an absolute path inside the image."""
        return self.paths | {f"/usr/local/bin/{n}" for n in self.names}


def _words(line: str) -> list[str]:
    """The first word of each simple command in a line of shell."""
    found = []
    for part in re.split(r"&&|\|\||;|\|", line):
        try:
            tokens = shlex.split(part, comments=True)
        except ValueError:  # an unbalanced quote: a line shlex cannot cut, skip it
            continue
        while tokens and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", tokens[0]):
            tokens.pop(0)  # VAR=value prefixes
        while tokens and tokens[0] in ("exec", "!", "then", "else", "do"):
            tokens.pop(0)
        if tokens:
            found.append(tokens[0])
    return found


def _script_programs(text: str) -> list[str]:
    """Programs a mounted shell script runs; template lines (`{{ ... }}`) are skipped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "{{")):
            continue
        out += _words(line)
    return out


def _healthcheck_programs(test: Any) -> list[str]:
    if isinstance(test, str):
        return _words(test)
    if not isinstance(test, list) or not test or test[0] == "NONE":
        return []
    if test[0] == "CMD-SHELL":
        return [w for arg in test[1:] for w in _words(str(arg))]
    if test[0] == "CMD":
        return [str(test[1])] if len(test) > 1 else []
    return [str(test[0])]


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


@dataclass
class _Service:
    """One service's view while its programs are collected."""

    standin: StandIn
    workdir: PurePosixPath
    mounted: dict[str, str]  # config target path -> the script's text
    applets: frozenset[str]

    def provide(self, word: str, shadow_applets: bool) -> None:
        if not word or "$" in word or word in SHELL_WORDS:
            return
        if "/" in word:
            path = word if word.startswith("/") else str(self.workdir / word)
            path = str(PurePosixPath(path.replace("/./", "/")))
            if path not in self.mounted:  # the recipe's own script is mounted there
                self.standin.paths.add(path)
        elif shadow_applets or word not in self.applets:
            self.standin.names.add(word)

    def follow(self, path: str) -> None:
        """A mounted script at an entrypoint or health path: what it calls."""
        for word in _script_programs(self.mounted.get(path, "")):
            self.provide(word, shadow_applets=False)


def plan(config: Mapping[str, Any]) -> dict[str, StandIn]:
    """The stand-ins a rendered compose config needs, by image ref."""
    applets = _applets()
    top_configs = config.get("configs") or {}
    plans: dict[str, StandIn] = {}
    for svc in (config.get("services") or {}).values():
        ref = str(svc["image"])
        # Scripts the recipe mounts as configs, by target path: they run for real.
        mounted: dict[str, str] = {}
        for item in svc.get("configs") or []:
            spec = top_configs.get(item["source"]) or {}
            target = item.get("target") or f"/{item['source']}"
            if spec.get("file") and Path(spec["file"]).is_file():
                mounted[target] = Path(spec["file"]).read_text(errors="replace")
        one = _Service(
            plans.setdefault(ref, StandIn(ref)),
            PurePosixPath(svc.get("working_dir") or "/"),
            mounted,
            applets,
        )
        entrypoint, command = _as_list(svc.get("entrypoint")), _as_list(svc.get("command"))
        # What the container runs is entrypoint + command. Busybox's own programs
        # (sh, sleep) stay real: the stand-in sleeps with them. command[0] is provided
        # even when the image's ENTRYPOINT (the stand-in) ignores it: harmless.
        argv = entrypoint + command
        for first in filter(None, (entrypoint[:1], command[:1])):
            one.provide(first[0], shadow_applets=False)
            one.follow(first[0])
        # A mounted entrypoint script that runs "$@" (bonfire's: `exec "$@"` of
        # `./bin/bonfire start`) runs the next word as a program.
        if len(argv) > 1 and '"$@"' in mounted.get(argv[0], ""):
            one.provide(argv[1], shadow_applets=False)
        health = svc.get("healthcheck") or {}
        if not health.get("disable"):
            for word in _healthcheck_programs(health.get("test")):
                # Health tools must answer yes even when busybox has one (wget, nc).
                one.provide(word, shadow_applets=word not in ("sh", "sleep"))
                one.follow(word)
    return plans


def _tar(standin: StandIn) -> bytes:
    """busybox-static with every applet at its usual place, /stand-in, the programs."""
    applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True)
    links = [a for a in applets.stdout.split() if a not in ("bin/busybox", "linuxrc")]
    programs = {p.lstrip("/") for p in standin.files()}
    links = [a for a in links if a not in programs]  # a stand-in replaces that applet
    files = {
        "stand-in": (STAND_IN, 0o755),
        "etc/passwd": (
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
            0o644,
        ),
        "etc/group": ("root:x:0:\nnogroup:x:65534:\n", 0o644),
        **{p: (PROGRAM, 0o755) for p in programs},
    }  # fmt: skip
    dirs = {"bin", "etc", "root", "tmp", "usr/local/bin", "run", "var"}
    dirs |= {str(d) for a in [*links, *files] for d in PurePosixPath(a).parents if str(d) != "."}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in sorted(dirs):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for path in links:
            info = tarfile.TarInfo(path)
            info.type, info.linkname = tarfile.SYMTYPE, "/bin/busybox"
            tar.addfile(info)
        for name, (text, mode) in files.items():
            info, data = tarfile.TarInfo(name), text.encode()
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# dockerd host -> image ref -> the programs its stand-in provides
_BUILT: dict[str, dict[str, frozenset[str]]] = {}


def build(dockerd: Dockerd, plans: Iterable[StandIn]) -> list[str]:
    """Import each stand-in under its exact ref (cached per dockerd); returns the refs."""
    built = _BUILT.setdefault(dockerd.host, {})
    refs = []
    for standin in plans:
        refs.append(standin.ref)
        have = built.get(standin.ref)
        if have is not None and standin.files() <= have:
            continue
        if have:  # a later recipe needs more programs under the same ref: provide both
            standin = StandIn(standin.ref, standin.paths | set(have), standin.names)
        changes = [
            f"ENTRYPOINT {json.dumps(['/stand-in'])}",
            # `docker import` sets no PATH; exec of a bare name would fail without it.
            f"ENV PATH={PATH}",
            "WORKDIR /",
        ]
        args = [DOCKER, "-H", dockerd.host, "import"]
        for change in changes:
            args += ["--change", change]
        subprocess.run(
            [*args, "-", standin.ref],
            env=dockerd.cli_env,
            input=_tar(standin),
            capture_output=True,
            check=True,
            timeout=120,
        )
        built[standin.ref] = frozenset(standin.files())
    return refs


def render(recipe: Path, env_text: str, domain: str) -> dict[str, Any]:
    """The recipe's stack for an app .env (`env_text`) at `domain`, as the bot renders it."""
    env = app_env(recipe, env_text, domain)
    return load_compose([recipe / f for f in compose_files(env)], env, allow_missing=True)


def ensure(dockerd: Dockerd, recipe: Path, env_text: str, domain: str) -> list[str]:
    """Stand-ins for every image of the recipe's stack (overlays from `env_text`)."""
    return build(dockerd, plan(render(recipe, env_text, domain)).values())
