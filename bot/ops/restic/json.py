"""Pure parsing of restic's output (`--json` and the plain text it prints instead):
no I/O, so the tests feed it output captured from real restic runs.

Facts checked on Debian's restic 0.14.0:
- Exit codes are 0, 1, 3 (snapshot made, some files unreadable) and 130 (SIGINT). 10/11/12
  (no repository / locked / wrong password) came with 0.17: `classify_failure` trusts
  them only when `restic version` says >= 0.17, and reads stderr on every version.
- `backup --json`: `status` and `summary` lines on stdout; `error` lines go to *stderr*,
  as JSON whose `error` object is often useless (`{"Op":"open","Path":..,"Err":13}` or
  `{}`): the `item` is what matters. Each unreadable directory is reported twice, once
  `during: "scan"` (the size estimate, ignored here) and once `during: "archival"`.
  A backup target that does not exist is only a plain stderr warning ("X does not
  exist, skipping") with exit 0: it is turned into a warning too.
- The summary's `snapshot_id` is the 8-digit short id on 0.14 (the full id on 0.17).
- Status lines leave out zero fields (`bytes_done`, `files_done`, `seconds_elapsed`...);
  `seconds_remaining` only appears once restic can estimate it.
- `snapshots --json` prints one array; `tags` is absent when a snapshot has none.
- `ls --json` prints the snapshot first, then one node per line (`size` only on files).
- `stats --json --mode raw-data --tag T` prints one object; `total_size` is the size of
  the blobs those snapshots reference, each counted once (0 and exit 0 when none match).
- `forget --json` prints one array of groups with `keep` and `remove` (null when empty).
  All keep values 0 prints nothing and removes nothing.
- A lock held elsewhere: "repository is already locked ... by PID n on host by user",
  then "lock was created at <local time> (<Go duration> ago)"; `cat lock` prints the
  lock as JSON (time in RFC 3339).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.errors import UserError
from bot.fmt import human_age, parse_rfc3339


class ResticError(UserError):
    """A restic operation failed; the message is shown to the room as is.

    `kind` is "locked", "wrong_password", "no_repository", or (errors.py) "no_space",
    "unreachable", "refused", or None (anything else);
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


def _json_object(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def is_json_object(line: str) -> bool:
    """Whether a line is one JSON object (restic's `--json` messages are)."""
    return _json_object(line) is not None


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
        time=parse_rfc3339(str(data["time"])),
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


def parse_stats(text: str) -> int:
    """`restic stats --json` -> `total_size` in bytes (0 when no snapshot matched)."""
    data = _json_object(text.strip().splitlines()[-1] if text.strip() else "")
    if data is None:
        raise ResticError("restic stats printed something that is not a JSON object")
    return _int(data.get("total_size"))


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


def parse_lock(lock_id: str, text: str) -> dict[str, Any]:
    """`restic cat lock <id>` (one JSON object) -> id, hostname, username, pid,
    exclusive, time (aware UTC datetime), uid, gid. ValueError (KeyError,
    AttributeError) when it is not a lock."""
    data = json.loads(text)
    return {
        "id": lock_id,
        "hostname": str(data.get("hostname") or ""),
        "username": str(data.get("username") or ""),
        "pid": _int(data.get("pid")),
        "exclusive": bool(data.get("exclusive")),
        "time": parse_rfc3339(str(data["time"])),
        "uid": _int(data.get("uid")),
        "gid": _int(data.get("gid")),
    }
