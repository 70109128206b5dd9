"""restic adapter: the `restic` binary run through `bot.ops.process`, its output read by
the pure functions of `bot.ops.restic.json`.

How it runs restic:
- An argument list, never a shell; stdin is /dev/null. The repository and the password
  file go into the child's environment (`RESTIC_REPOSITORY`, `RESTIC_PASSWORD_FILE`),
  never onto a command line; the child gets PATH, HOME, TMPDIR, `extra_env` (S3 keys,
  `RESTIC_PROGRESS_FPS`, ...) and `RESTIC_CACHE_DIR`, nothing else of ours.
- stdout and stderr are read line by line while restic runs; only the last
  `STDERR_TAIL_LINES` stderr lines are kept, and stdout up to `STDOUT_LIMIT` bytes.
- The child runs in its own session, so a Ctrl-C in `coopbot console` does not reach it.
  When the calling task is cancelled (or a progress callback raises), the child gets
  SIGINT, then SIGKILL (to its process group) after `STOP_GRACE` seconds; the call only
  returns once it is gone. SIGINT rather than SIGTERM: restic 0.14 removes its lock on
  SIGINT only, a SIGTERM leaves a stale lock behind (checked here).
- Errors become `ResticError` (a UserError, shown verbatim): a lock names its holder and
  age, a wrong password and a missing repository are named, anything else carries the
  end of stderr. The repository's URL credentials and secret-looking `extra_env` values
  are masked in every message; restic itself never prints the password.

Facts checked on Debian's restic 0.14.0 (those about its output: `json.py`):
- Without a terminal, 0.14 prints a status line at `RESTIC_PROGRESS_FPS` (default:
  rarely).
- `init`, `prune`, `check` and `restore` have no JSON output in 0.14. `init` on an
  existing repository fails with "config file already exists".
- `--tag a,b` selects snapshots having both tags (a comma cannot be part of a tag: backup
  splits `--tag a,b` into two tags).
- Locks: `check`, `prune` and `forget` take an exclusive lock, `backup`, `restore`, `ls`,
  `cat` a shared one; a stale lock (dead holder) blocks like a live one until `restic
  unlock`. `list locks` and `cat lock --no-lock` work under any lock; `snapshots` runs
  with `--no-lock` here so backups can be listed while a lock is held.
- Backup paths are passed absolute, and restic stores them with their full directory
  path: `restore --target T` recreates `T/<absolute path>`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.incident import note, report
from bot.ops.process import run_process
from bot.ops.restic.errors import explain
from bot.ops.restic.json import (
    BackupSummary,
    Progress,
    ResticError,
    Snapshot,
    classify_failure,
    is_json_object,
    locked_message,
    parse_backup_line,
    parse_forget,
    parse_lock,
    parse_lock_message,
    parse_ls_line,
    parse_snapshots,
    parse_stats,
    parse_version,
)
from bot.redact import redact_url, scrub_credentials

log = logging.getLogger(__name__)

STDERR_TAIL_LINES = 200  # stderr lines kept per run
MESSAGE_TAIL_LINES = 15  # of those, how many go into an error message
MAX_WARNINGS = 200  # unreadable files listed in a BackupSummary
STOP_GRACE = 10.0  # seconds between SIGINT and SIGKILL when a run is cancelled
# stdout kept when it is read whole (`snapshots --json` is one line, ~300 bytes a
# snapshot); more than this is an error rather than a silently cut listing.
STDOUT_LIMIT = 64 * 1024 * 1024

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
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SNAPSHOT_ID_RE = re.compile(r"^(?:[0-9a-f]{4,64}|latest)$")
_LOCK_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_GROUP_BY_RE = re.compile(r"^(?:(?:host|paths|tags)(?:,(?:host|paths|tags))*)?$")
_SUBSET_RE = re.compile(r"^(?:\d+/\d+|\d+(?:\.\d+)?%|\d+[kKmMgGtT]?)$")


# --------------------------------------------------------------------------- arguments


def mask_url(text: str) -> str:
    """Hide the password in `scheme://user:password@host` (rest:, s3 endpoints, ...)
    anywhere in `text`: the one scrubber of bot/redact.py."""
    return scrub_credentials(text)


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


# --------------------------------------------------------------------------- runs


@dataclass
class _Result:
    code: int
    stdout: list[str]  # only when no stdout callback was given
    stderr: list[str]  # the tail, ANSI codes and blank lines removed


def _split_lines(text: str) -> list[str]:
    """As the lines came from the pipe: "\\n" ends a line, a "\\r" before it is dropped."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


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
        """The repository as it may be shown (rooms, logs, audit, check): its password
        and secret query parameters removed (bot.redact.redact_url)."""
        return redact_url(self.repository)

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
        tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

        def stderr_line(line: str) -> None:
            if on_stderr is not None and on_stderr(line):
                return
            clean = _ANSI_RE.sub("", line).strip()
            if clean:
                tail.append(clean[:_MAX_TAIL_LINE])

        try:
            res = await run_process(
                [self.binary, *args],
                env=self._env(),
                on_stdout=on_stdout,
                on_stderr=stderr_line,
                # streamed stdout is the callback's; only the stderr tail above is used
                stdout_limit=0 if on_stdout is not None else STDOUT_LIMIT,
                stderr_limit=0,
                stop_signal=signal.SIGINT,
                stop_grace=STOP_GRACE,  # read per call: tests shorten it
                kill_note="its lock stays until `restic unlock`",
            )
        except OSError as e:
            raise ResticError(f"cannot run restic ({self.binary}): {e.strerror or e}") from e
        log.debug("restic %s exited %s", args[0] if args else "", res.returncode)
        if on_stdout is None and res.stdout_truncated:
            raise ResticError(
                f"restic {args[0] if args else ''} printed more than "
                f"{STDOUT_LIMIT // (1024 * 1024)} MiB: not read"
            )
        stdout = [] if on_stdout is not None else _split_lines(res.stdout)
        return _Result(res.returncode, stdout, [self._mask(line) for line in tail])

    async def _failure(self, what: str, res: _Result, extra: Iterable[str] = ()) -> ResticError:
        """The ResticError for a failed run of `restic <what>`."""
        stderr = "\n".join(res.stderr)
        known = explain(stderr, self.display) if res.code > 0 else None
        if known is not None:  # before classify_failure: "Is there a repository…" misleads
            ident = report(log, f"restic {what} failed (exit {res.code})", stderr)
            return ResticError(
                f"restic {what}: {known[1]} ({note(ident)})",
                kind=known[0],
                exit_code=res.code,
                stderr_tail=res.stderr,
            )
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
            return is_json_object(line)  # scan errors: reported again as archival

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

    async def stats(self, tags: list[str]) -> int:
        """Bytes of repository data the snapshots having all `tags` reference, each blob
        once (`--mode raw-data`): what those snapshots cost in the repository."""
        if not tags:
            raise ValueError("stats needs tags: this is a per-app figure")
        args = ["stats", "--json", "--no-lock", "--mode=raw-data"]
        res = await self._run([*args, "--tag=" + ",".join(check_tag(t) for t in tags)])
        if res.code != 0:
            raise await self._failure("stats", res)
        return parse_stats("\n".join(res.stdout))

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
                result.append(parse_lock(lock_id, "\n".join(one.stdout)))
            except (ValueError, KeyError, AttributeError) as e:
                log.warning("restic lock %s: unreadable (%s)", lock_id[:8], e)
        return result
