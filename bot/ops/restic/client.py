"""restic adapter: the `restic` binary as a subprocess, its `--json` output parsed by pure
functions (`parse_backup_line`, `parse_snapshots`, `parse_ls`, `parse_forget`,
`parse_lock_message`, `classify_failure`), which the tests feed real restic 0.14 output.

How it runs restic:
- An argument list, never a shell; stdin is /dev/null. The repository and the password
  file go into the child's environment (`RESTIC_REPOSITORY`, `RESTIC_PASSWORD_FILE`),
  never onto a command line; the child gets PATH, HOME, TMPDIR, `extra_env` (S3 keys,
  `RESTIC_PROGRESS_FPS`, ...) and `RESTIC_CACHE_DIR`, nothing else of ours.
- stdout and stderr are read line by line while restic runs; only the last
  `STDERR_TAIL_LINES` stderr lines are kept.
- The child runs in its own session, so a Ctrl-C in `coopbot console` does not reach it.
  When the calling task is cancelled (or a progress callback raises), the child gets
  SIGINT, then SIGKILL (to its process group) after `STOP_GRACE` seconds; the call only
  returns once it is gone. SIGINT rather than SIGTERM: restic 0.14 removes its lock on
  SIGINT only, a SIGTERM leaves a stale lock behind (checked here).
- Errors become `ResticError` (a UserError, shown verbatim): a lock names its holder and
  age, a wrong password and a missing repository are named, anything else carries the
  end of stderr. The repository's URL credentials and secret-looking `extra_env` values
  are masked in every message; restic itself never prints the password.

Facts checked on Debian's restic 0.14.0:
- Exit codes are 0, 1, 3 (snapshot made, some files unreadable) and 130 (SIGINT). 10/11/12
  (no repository / locked / wrong password) came with 0.17: they are trusted only when
  `restic version` says >= 0.17, and stderr is read on every version.
- `backup --json`: `status` and `summary` lines on stdout; `error` lines go to *stderr*,
  as JSON whose `error` object is often useless (`{"Op":"open","Path":..,"Err":13}` or
  `{}`): the `item` is what matters. Each unreadable directory is reported twice, once
  `during: "scan"` (the size estimate, ignored here) and once `during: "archival"`.
  A backup target that does not exist is only a plain stderr warning ("X does not
  exist, skipping") with exit 0: it is turned into a warning too.
- The summary's `snapshot_id` is the 8-digit short id on 0.14 (the full id on 0.17).
- Status lines leave out zero fields (`bytes_done`, `files_done`, `seconds_elapsed`...);
  `seconds_remaining` only appears once restic can estimate it. Without a terminal, 0.14
  prints a status line at `RESTIC_PROGRESS_FPS` (default: rarely).
- `init`, `prune`, `check` and `restore` have no JSON output in 0.14. `init` on an
  existing repository fails with "config file already exists".
- `snapshots --json` prints one array; `tags` is absent when a snapshot has none.
  `--tag a,b` selects snapshots having both tags (a comma cannot be part of a tag: backup
  splits `--tag a,b` into two tags).
- `ls --json` prints the snapshot first, then one node per line (`size` only on files).
- `forget --json` prints one array of groups with `keep` and `remove` (null when empty).
  All keep values 0 prints nothing and removes nothing.
- Locks: `check`, `prune` and `forget` take an exclusive lock, `backup`, `restore`, `ls`,
  `cat` a shared one; a stale lock (dead holder) blocks like a live one until `restic
  unlock`. `list locks` and `cat lock --no-lock` work under any lock; `snapshots` runs
  with `--no-lock` here so backups can be listed while a lock is held.
- Backup paths are passed absolute, and restic stores them with their full directory
  path: `restore --target T` recreates `T/<absolute path>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.errors import UserError

log = logging.getLogger(__name__)

STDERR_TAIL_LINES = 200  # stderr lines kept per run
MESSAGE_TAIL_LINES = 15  # of those, how many go into an error message
MAX_WARNINGS = 200  # unreadable files listed in a BackupSummary
STOP_GRACE = 10.0  # seconds between SIGINT and SIGKILL when a run is cancelled

_CHUNK = 64 * 1024
_MAX_TAIL_LINE = 1000
# Variables the adapter sets itself: extra_env may not replace or bypass them.
_RESERVED_ENV = frozenset(
    {
        "RESTIC_REPOSITORY",
        "RESTIC_REPOSITORY_FILE",
        "RESTIC_PASSWORD",
        "RESTIC_PASSWORD_FILE",
        "RESTIC_PASSWORD_COMMAND",
        "RESTIC_CACHE_DIR",
    }
)
_SECRET_KEY_RE = re.compile(r"SECRET|PASSWORD|TOKEN|KEY", re.IGNORECASE)
_URL_CREDENTIALS_RE = re.compile(r"(://[^/@\s:]*:)[^/@\s]+@")
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SNAPSHOT_ID_RE = re.compile(r"^(?:[0-9a-f]{4,64}|latest)$")
_LOCK_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_GROUP_BY_RE = re.compile(r"^(?:(?:host|paths|tags)(?:,(?:host|paths|tags))*)?$")
_SUBSET_RE = re.compile(r"^(?:\d+/\d+|\d+(?:\.\d+)?%|\d+[kKmMgGtT]?)$")


class ResticError(UserError):
    """A restic operation failed; the message is shown to the room as is.

    `kind` is "locked", "wrong_password", "no_repository" or None (anything else);
    `exit_code` is restic's (None when restic did not run); `stderr_tail` holds the last
    stderr lines (masked like the message)."""

    def __init__(
        self,
        message: str,
        *,
        kind: str | None = None,
        exit_code: int | None = None,
        stderr_tail: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.exit_code = exit_code
        self.stderr_tail = list(stderr_tail)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Progress:
    percent: float  # 0..100
    bytes_done: int
    total_bytes: int
    files_done: int
    total_files: int
    seconds_elapsed: float
    seconds_remaining: float | None  # None until restic can estimate it


@dataclass(frozen=True)
class BackupSummary:
    snapshot_id: str  # 0.14: the 8-digit short id; 0.17+: the full id
    files_new: int
    files_changed: int
    files_unmodified: int
    data_added: int
    total_bytes_processed: int
    duration: float  # seconds
    # Files restic could not read (exit 3: the snapshot exists but is incomplete) and
    # targets that did not exist; "<path>: <why>", at most MAX_WARNINGS (+1 "... more").
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Snapshot:
    id: str
    short_id: str
    time: datetime  # aware, UTC
    paths: list[str]
    tags: list[str]
    hostname: str


# --------------------------------------------------------------------------- pure parsing


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


_TIME_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


def parse_time(text: str) -> datetime:
    """restic's RFC 3339 times (nanoseconds, "Z" or an offset) as aware UTC datetimes."""
    m = _TIME_RE.match(text.strip())
    if not m:
        raise ValueError(f"not a restic time: {text!r}")
    base, frac, zone = m.groups()
    micro = (frac or "").ljust(6, "0")[:6]
    zone = "+00:00" if zone in (None, "Z") else zone
    return datetime.fromisoformat(f"{base}.{micro}{zone}").astimezone(UTC)


def _json_object(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _error_detail(error: Any) -> str:
    if isinstance(error, str) and error:
        return error
    if isinstance(error, dict):
        if error.get("message"):  # 0.17+: {"message": "..."}
            return str(error["message"])
        errno = error.get("Err")  # 0.14: a serialised *os.PathError
        if isinstance(errno, int) and errno > 0:
            op = error.get("Op")
            reason = os.strerror(errno)
            return f"{op}: {reason}" if op else reason
    return "could not be read"


_MISSING_TARGET_RE = re.compile(r"^(.+) does not exist, skipping$")


def parse_backup_line(line: str) -> Progress | BackupSummary | str | None:
    """One line of `restic backup --json` output (stdout or stderr).

    A `status` line gives a Progress, the `summary` a BackupSummary (without warnings), an
    `error` line about an unreadable file the warning text "<path>: <why>", and so does
    0.14's plain "X does not exist, skipping". Everything else (scan errors, which the
    archival reports again; verbose lines; restic's closing "Warning: ..."; garbage) is
    None."""
    data = _json_object(line)
    if data is None:
        m = _MISSING_TARGET_RE.match(line.strip())
        return f"{m.group(1)}: does not exist, skipped" if m else None
    kind = data.get("message_type")
    if kind == "status":
        remaining = data.get("seconds_remaining")
        return Progress(
            percent=_float(data.get("percent_done")) * 100,
            bytes_done=_int(data.get("bytes_done")),
            total_bytes=_int(data.get("total_bytes")),
            files_done=_int(data.get("files_done")),
            total_files=_int(data.get("total_files")),
            seconds_elapsed=_float(data.get("seconds_elapsed")),
            seconds_remaining=None if remaining is None else _float(remaining),
        )
    if kind == "summary":
        return BackupSummary(
            snapshot_id=str(data.get("snapshot_id") or ""),
            files_new=_int(data.get("files_new")),
            files_changed=_int(data.get("files_changed")),
            files_unmodified=_int(data.get("files_unmodified")),
            data_added=_int(data.get("data_added")),
            total_bytes_processed=_int(data.get("total_bytes_processed")),
            duration=_float(data.get("total_duration")),
            warnings=[],
        )
    if kind == "error":
        if data.get("during") == "scan":
            return None
        detail = _error_detail(data.get("error"))
        item = data.get("item")
        return f"{item}: {detail}" if item else detail
    return None


def _snapshot(data: dict[str, Any]) -> Snapshot:
    snap_id = str(data["id"])
    return Snapshot(
        id=snap_id,
        short_id=str(data.get("short_id") or snap_id[:8]),
        time=parse_time(str(data["time"])),
        paths=[str(p) for p in data.get("paths") or []],
        tags=[str(t) for t in data.get("tags") or []],
        hostname=str(data.get("hostname") or ""),
    )


def parse_snapshots(text: str) -> list[Snapshot]:
    """`restic snapshots --json` (one JSON array, `null` or nothing when empty)."""
    text = text.strip()
    if not text:
        return []
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ResticError(f"restic snapshots printed something that is not JSON: {e}") from e
    if data is None:
        return []
    if not isinstance(data, list):
        raise ResticError("restic snapshots did not print a JSON array")
    try:
        return [_snapshot(item) for item in data]
    except (KeyError, TypeError, ValueError) as e:
        raise ResticError(f"restic snapshots printed an unexpected snapshot: {e}") from e


def parse_ls_line(line: str) -> tuple[str, str, int] | None:
    """One line of `restic ls --json`: (path, type, size) for a node, None for the
    leading snapshot line and anything else."""
    data = _json_object(line)
    if data is None or "path" not in data:
        return None
    if "snapshot" in (data.get("struct_type"), data.get("message_type")):
        return None
    return str(data["path"]), str(data.get("type") or ""), _int(data.get("size"))


def parse_ls(text: str) -> list[tuple[str, str, int]]:
    return [node for line in text.splitlines() if (node := parse_ls_line(line)) is not None]


def parse_forget(text: str) -> list[str]:
    """The ids `restic forget --json` removed, over all groups (0.14 prints nothing when
    no keep policy was given)."""
    removed: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("["):
            continue
        try:
            groups = json.loads(line)
        except ValueError as e:
            raise ResticError(f"restic forget printed something that is not JSON: {e}") from e
        for group in groups or []:
            for snap in group.get("remove") or []:
                removed.append(str(snap["id"]))
    return removed


def parse_version(text: str) -> tuple[int, int, int]:
    """`restic 0.14.0 compiled with go1.19.8 on linux/amd64` -> (0, 14, 0)."""
    m = re.search(r"restic (\d+)\.(\d+)\.(\d+)", text)
    if not m:
        raise ResticError(f"cannot read restic's version from {text.strip()[:200]!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


_GO_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(h|ms|µs|us|ns|m|s)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}


def parse_go_duration(text: str) -> float | None:
    """Go's `time.Duration` text ("1h2m3.5s", "4.03s", "350ms") in seconds."""
    parts = _GO_DURATION_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return None
    return sum(float(n) * _GO_UNITS[u] for n, u in parts)


def human_age(seconds: float) -> str:
    """3s, 12m, 2h 5m, 3d 4h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h}h {m}m" if m else f"{h}h"
    d, h = divmod(s // 3600, 24)
    return f"{d}d {h}h" if h else f"{d}d"


_LOCKED_RE = re.compile(
    r"repository is already locked(?P<exclusive> exclusively)? by PID (?P<pid>\d+)"
    r" on (?P<hostname>\S+) by (?P<username>[^\n(]*?)\s*"
    r"(?:\(UID (?P<uid>\d+), GID (?P<gid>\d+)\))?\s*\n"
    r"\s*lock was created at (?P<time>[^\n(]+?) \((?P<age>[^\n)]+) ago\)"
    r"(?:\s*\n\s*storage ID (?P<id>[0-9a-f]+))?"
)


def parse_lock_message(stderr: str) -> dict[str, Any] | None:
    """restic's "repository is already locked ..." text -> hostname, pid, username,
    exclusive, time (as printed: the holder's local time, no zone), age (seconds or
    None), id (the lock's short storage id, "" if absent); None when it is not there."""
    m = _LOCKED_RE.search(stderr)
    if not m:
        return None
    return {
        "hostname": m.group("hostname"),
        "pid": int(m.group("pid")),
        "username": m.group("username"),
        "exclusive": bool(m.group("exclusive")),
        "time": m.group("time").strip(),
        "age": parse_go_duration(m.group("age")),
        "id": m.group("id") or "",
    }


def locked_message(hostname: str, pid: int, since: str, age: float | None) -> str:
    ago = f" ({human_age(age)} ago)" if age is not None else ""
    return (
        f"repository is locked by {hostname} pid {pid} since {since}{ago}: not unlocked "
        "automatically; run `restic unlock` after checking nobody uses it"
    )


def classify_failure(code: int, stderr: str, version: tuple[int, int, int] | None) -> str | None:
    """ "locked", "wrong_password", "no_repository" or None, from restic's exit code (0.17+
    only: `version` must say so) or else from its stderr."""
    if version is not None and version >= (0, 17, 0):
        by_code = {10: "no_repository", 11: "locked", 12: "wrong_password"}.get(code)
        if by_code:
            return by_code
    if "repository is already locked" in stderr or "unable to create lock" in stderr:
        return "locked"
    if "wrong password or no key found" in stderr:
        return "wrong_password"
    if (
        "Is there a repository at the following location?" in stderr
        or "unable to open config file" in stderr
    ):
        return "no_repository"
    return None


def mask_url(text: str) -> str:
    """Hide the password in `scheme://user:password@host` (rest:, s3 endpoints, ...)."""
    return _URL_CREDENTIALS_RE.sub(r"\1***@", text)


def check_tag(tag: str) -> str:
    if not tag or "," in tag or tag != tag.strip() or any(c in tag for c in "\n\r\0"):
        raise ResticError(f"invalid restic tag {tag!r}: not empty, no commas or spaces around")
    return tag


def check_snapshot_id(snapshot_id: str) -> str:
    if not _SNAPSHOT_ID_RE.match(snapshot_id):
        raise ResticError(
            f"invalid snapshot id {snapshot_id[:80]!r}: 4 to 64 hex digits, or `latest`"
        )
    return snapshot_id


# --------------------------------------------------------------------------- subprocess


async def _lines(stream: asyncio.StreamReader) -> AsyncGenerator[str, None]:
    """Lines as they come, without the 64 KiB line limit of StreamReader.readline
    (`snapshots --json` is one line)."""
    buf = bytearray()
    while chunk := await stream.read(_CHUNK):
        buf += chunk
        start = 0
        while (nl := buf.find(b"\n", start)) >= 0:
            yield buf[start:nl].decode(errors="replace").rstrip("\r")
            start = nl + 1
        del buf[:start]
    if buf:
        yield buf.decode(errors="replace").rstrip("\r")


def _signal_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """The child runs in its own session: signal its process group (a wrapper script and
    restic alike; restic starts ssh/rclone backends in groups of their own), or at least
    the child."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGINT (restic then removes its lock), SIGKILL after STOP_GRACE seconds."""
    try:
        _signal_group(proc, signal.SIGINT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
    finally:
        if proc.returncode is None:
            log.warning(
                "restic pid %s ignored SIGINT for %gs: killing it (its lock stays until "
                "`restic unlock`)",
                proc.pid,
                STOP_GRACE,
            )
            _signal_group(proc, signal.SIGKILL)
            await proc.wait()


@dataclass
class _Result:
    code: int
    stdout: list[str]  # only when no stdout callback was given
    stderr: list[str]  # the tail, ANSI codes and blank lines removed


class Restic:
    """One restic repository. Every method runs the binary once or a few times."""

    def __init__(
        self,
        repository: str,
        password_file: Path,
        *,
        binary: str = "restic",
        extra_env: dict[str, str] | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        reserved = sorted(_RESERVED_ENV & set(extra_env or {}))
        if reserved:
            raise ValueError(f"extra_env may not set {', '.join(reserved)}")
        self.repository = repository
        self.password_file = Path(password_file)
        self.binary = binary
        self.extra_env = dict(extra_env or {})
        self.cache_dir = cache_dir
        self._version: tuple[int, int, int] | None = None
        self._secrets = [
            v for k, v in self.extra_env.items() if _SECRET_KEY_RE.search(k) and len(v) >= 4
        ]

    # -- plumbing

    @property
    def display(self) -> str:
        """The repository as it may be shown: URL credentials masked."""
        return mask_url(self.repository)

    def _mask(self, text: str) -> str:
        text = mask_url(text.replace(self.repository, self.display))
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _env(self) -> dict[str, str]:
        env = {k: os.environ[k] for k in ("PATH", "HOME", "TMPDIR") if k in os.environ}
        env.setdefault("PATH", os.defpath)
        env.update(self.extra_env)
        if self.cache_dir is not None:
            env["RESTIC_CACHE_DIR"] = str(self.cache_dir)
        env["RESTIC_REPOSITORY"] = self.repository
        env["RESTIC_PASSWORD_FILE"] = str(self.password_file)
        return env

    async def _run(
        self,
        args: list[str],
        *,
        on_stdout: Callable[[str], Awaitable[None]] | None = None,
        on_stderr: Callable[[str], bool] | None = None,
    ) -> _Result:
        """Run restic to its end. `on_stdout` gets every stdout line (else they are
        collected); `on_stderr` may claim a stderr line by returning True (else it goes to
        the tail). Cancellation or an exception from a callback stops the child first."""
        log.info("restic %s (repository %s)", " ".join(args), self.display)
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary,
                *args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._env(),
                start_new_session=True,
            )
        except OSError as e:
            raise ResticError(f"cannot run restic ({self.binary}): {e.strerror or e}") from e
        assert proc.stdout is not None and proc.stderr is not None
        stdout, stderr = proc.stdout, proc.stderr
        tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        collected: list[str] = []

        async def drain_stderr() -> None:
            async with contextlib.aclosing(_lines(stderr)) as lines:
                async for line in lines:
                    if on_stderr is not None and on_stderr(line):
                        continue
                    clean = _ANSI_RE.sub("", line).strip()
                    if clean:
                        tail.append(clean[:_MAX_TAIL_LINE])

        err_task = asyncio.create_task(drain_stderr(), name=f"restic-stderr-{proc.pid}")
        try:
            async with contextlib.aclosing(_lines(stdout)) as lines:
                async for line in lines:
                    if on_stdout is not None:
                        await on_stdout(line)
                    else:
                        collected.append(line)
            code = await proc.wait()
            await err_task
        finally:
            if proc.returncode is None:
                await _stop(proc)
            if not err_task.done():
                err_task.cancel()
                await asyncio.wait([err_task])
        log.debug("restic %s exited %s", args[0] if args else "", code)
        return _Result(code, collected, [self._mask(line) for line in tail])

    async def _failure(self, what: str, res: _Result, extra: Iterable[str] = ()) -> ResticError:
        """The ResticError for a failed run of `restic <what>`."""
        stderr = "\n".join(res.stderr)
        version = None
        if res.code in (10, 11, 12):
            with contextlib.suppress(ResticError):
                version = await self.version()
        kind = classify_failure(res.code, stderr, version)
        if kind == "locked":
            message = await self._locked_message(stderr)
        elif kind == "wrong_password":
            message = (
                f"wrong password or no key: the password in {self.password_file} does not "
                f"open the repository at {self.display}"
            )
        elif kind == "no_repository":
            message = f"no repository at {self.display} (not initialised, or the wrong location)"
        else:
            lines = [*res.stderr, *(self._mask(x) for x in extra)][-MESSAGE_TAIL_LINES:]
            if res.code == 130 or res.code == -signal.SIGINT:
                head = f"restic {what} was interrupted"
            elif res.code < 0:
                head = f"restic {what} was killed by signal {-res.code}"
            else:
                head = f"restic {what} failed (exit {res.code})"
            message = head + (":\n" + "\n".join(lines) if lines else "")
        return ResticError(message, kind=kind, exit_code=res.code, stderr_tail=res.stderr)

    async def _locked_message(self, stderr: str) -> str:
        info = parse_lock_message(stderr)
        if info is not None:
            return locked_message(info["hostname"], info["pid"], info["time"], info["age"])
        try:  # another wording (a later restic): ask the repository
            held = await self.locks()
        except ResticError:
            held = []
        if held:
            lock = min(held, key=lambda x: x["time"])
            return locked_message(
                lock["hostname"],
                lock["pid"],
                lock["time"].strftime("%Y-%m-%d %H:%M:%S UTC"),
                (datetime.now(UTC) - lock["time"]).total_seconds(),
            )
        return (
            "repository is locked (holder unknown): not unlocked automatically; run "
            "`restic unlock` after checking nobody uses it"
        )

    # -- operations

    async def version(self) -> tuple[int, int, int]:
        """`restic version`, asked once per adapter."""
        if self._version is None:
            res = await self._run(["version"])
            if res.code != 0:
                raise await self._failure("version", res)
            self._version = parse_version("\n".join(res.stdout))
        return self._version

    async def init(self) -> None:
        """Create the repository; an existing one is fine if the password opens it."""
        res = await self._run(["init"])
        if res.code == 0:
            return
        stderr = "\n".join(res.stderr)
        if "config file already exists" not in stderr and "already initialized" not in stderr:
            raise await self._failure("init", res)
        check = await self._run(["cat", "config", "--no-lock"])
        if check.code != 0:
            raise await self._failure("init", check)

    async def backup(
        self,
        paths: list[Path],
        tags: list[str],
        on_progress: Callable[[Progress], Awaitable[None]] | None = None,
        excludes: Sequence[str] = (),
        host: str | None = None,
    ) -> BackupSummary:
        """Back `paths` up (absolute ones) as one snapshot. `on_progress` gets every
        status line (the caller throttles). Exit 3 (some files unreadable) still returns
        the summary, with the unreadable files in `warnings`."""
        if not paths:
            raise ValueError("backup needs at least one path")
        args = ["backup", "--json", *(f"--tag={check_tag(t)}" for t in tags)]
        args += [f"--exclude={e}" for e in excludes]
        if host is not None:
            args.append(f"--host={host}")
        relative = [str(p) for p in paths if not Path(p).is_absolute()]
        if relative:
            raise ValueError(f"backup paths must be absolute: {', '.join(relative)}")
        args += ["--", *(str(p) for p in paths)]

        summary: BackupSummary | None = None
        warnings: list[str] = []
        dropped = 0

        def warn(text: str) -> None:
            nonlocal dropped
            text = self._mask(text)
            if text in warnings:
                return
            if len(warnings) < MAX_WARNINGS:
                warnings.append(text)
            else:
                dropped += 1

        async def on_stdout(line: str) -> None:
            nonlocal summary
            item = parse_backup_line(line)
            if isinstance(item, Progress):
                if on_progress is not None:
                    await on_progress(item)
            elif isinstance(item, BackupSummary):
                summary = item
            elif isinstance(item, str):
                warn(item)

        def on_stderr(line: str) -> bool:
            item = parse_backup_line(line)
            if isinstance(item, str):
                warn(item)
                return True
            return _json_object(line) is not None  # scan errors: reported again as archival

        res = await self._run(args, on_stdout=on_stdout, on_stderr=on_stderr)
        if res.code not in (0, 3):
            raise await self._failure("backup", res)
        if summary is None:
            lines = res.stderr[-MESSAGE_TAIL_LINES:]
            raise ResticError(
                "restic backup ended without a summary"
                + (":\n" + "\n".join(lines) if lines else ""),
                exit_code=res.code,
                stderr_tail=res.stderr,
            )
        if res.code == 3 and not warnings:
            warnings.append("some source files could not be read (restic exit 3)")
        if dropped:
            warnings.append(f"… and {dropped} more")
        return replace(summary, warnings=warnings)

    async def snapshots(self, tags: list[str] | None = None) -> list[Snapshot]:
        """The repository's snapshots, oldest first; with `tags`, those having all of
        them. Runs with `--no-lock`: listing works while a lock is held."""
        args = ["snapshots", "--json", "--no-lock"]
        if tags:
            args.append("--tag=" + ",".join(check_tag(t) for t in tags))
        res = await self._run(args)
        if res.code != 0:
            raise await self._failure("snapshots", res)
        return parse_snapshots("\n".join(res.stdout))

    async def restore(self, snapshot_id: str, target: Path, include: Sequence[str] = ()) -> None:
        """Restore a snapshot (id, short id or `latest`) under `target`: a path P backed
        up lands at `target/P`. `include` limits it to these paths (as in the snapshot)."""
        args = ["restore", f"--target={target}", *(f"--include={i}" for i in include)]
        args += ["--", check_snapshot_id(snapshot_id)]
        res = await self._run(args)
        if res.code != 0:
            raise await self._failure("restore", res)

    async def ls(self, snapshot_id: str) -> list[tuple[str, str, int]]:
        """(path, type, size) of every node in a snapshot; type is file, dir, symlink, ..."""
        nodes: list[tuple[str, str, int]] = []

        async def on_stdout(line: str) -> None:
            node = parse_ls_line(line)
            if node is not None:
                nodes.append(node)

        res = await self._run(
            ["ls", "--json", "--", check_snapshot_id(snapshot_id)], on_stdout=on_stdout
        )
        if res.code != 0:
            raise await self._failure("ls", res)
        return nodes

    async def forget(
        self,
        tags: list[str],
        keep_daily: int,
        keep_weekly: int,
        keep_monthly: int,
        group_by: str = "tags",
    ) -> list[str]:
        """Forget the snapshots having all `tags` that the policy does not keep; the
        removed ids. Data stays until `prune`."""
        if not tags:
            raise ValueError("forget needs tags: it would apply to the whole repository")
        if not _GROUP_BY_RE.match(group_by):
            raise ValueError(f"invalid group_by {group_by!r}")
        policy = {"daily": keep_daily, "weekly": keep_weekly, "monthly": keep_monthly}
        if any(n < 0 for n in policy.values()) or not any(policy.values()):
            raise ResticError("a retention policy needs at least one keep value above 0")
        args = ["forget", "--json", f"--group-by={group_by}"]
        args.append("--tag=" + ",".join(check_tag(t) for t in tags))
        args += [f"--keep-{name}={n}" for name, n in policy.items() if n]
        res = await self._run(args)
        if res.code != 0:
            raise await self._failure("forget", res)
        return parse_forget("\n".join(res.stdout))

    async def prune(self) -> None:
        """Delete the data no snapshot uses any more (takes an exclusive lock)."""
        res = await self._run(["prune"])
        if res.code != 0:
            raise await self._failure("prune", res, res.stdout[-5:])
        log.info("restic prune: %s", " | ".join(x.strip() for x in res.stdout[-6:] if x.strip()))

    async def check(self, read_data_subset: str | None = None) -> str:
        """`restic check` (structure; with `read_data_subset` like "1/5", "10%" or "2G",
        also that part of the data); restic's report. Errors raise ResticError."""
        args = ["check"]
        if read_data_subset is not None:
            if not _SUBSET_RE.match(read_data_subset):
                raise ResticError(f"invalid read-data subset {read_data_subset!r}")
            args.append(f"--read-data-subset={read_data_subset}")
        res = await self._run(args)
        if res.code != 0:
            raise await self._failure("check", res, res.stdout[-MESSAGE_TAIL_LINES:])
        return self._mask("\n".join(res.stdout).strip())

    async def locks(self) -> list[dict[str, Any]]:
        """The repository's locks (works under any lock): id, hostname, username, pid,
        exclusive, time (aware UTC datetime), uid, gid. Locks removed meanwhile are left
        out."""
        res = await self._run(["list", "locks", "--no-lock"])
        if res.code != 0:
            raise await self._failure("list locks", res)
        result: list[dict[str, Any]] = []
        for lock_id in (x.strip() for x in res.stdout):
            if not _LOCK_ID_RE.match(lock_id):
                continue
            one = await self._run(["cat", "lock", "--no-lock", lock_id])
            if one.code != 0:
                continue
            try:
                data = json.loads("\n".join(one.stdout))
                result.append(
                    {
                        "id": lock_id,
                        "hostname": str(data.get("hostname") or ""),
                        "username": str(data.get("username") or ""),
                        "pid": _int(data.get("pid")),
                        "exclusive": bool(data.get("exclusive")),
                        "time": parse_time(str(data["time"])),
                        "uid": _int(data.get("uid")),
                        "gid": _int(data.get("gid")),
                    }
                )
            except (ValueError, KeyError, AttributeError) as e:
                log.warning("restic lock %s: unreadable (%s)", lock_id[:8], e)
        return result
