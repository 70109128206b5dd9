"""The pure parts of bot.ops.restic, fed output captured from Debian's restic 0.14.0."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.fmt import parse_rfc3339 as parse_time
from bot.ops.process import read_lines as _lines
from bot.ops.restic import (
    BackupSummary,
    Progress,
    Restic,
    ResticError,
    check_snapshot_id,
    check_tag,
    classify_failure,
    human_age,
    locked_message,
    mask_url,
    parse_backup_line,
    parse_forget,
    parse_go_duration,
    parse_lock_message,
    parse_ls,
    parse_snapshots,
    parse_version,
)

# --------------------------------------------------------------------------- backup --json

# stdout of `RESTIC_PROGRESS_FPS=2 restic backup --json big5` (40 x 3 MiB).
STATUS_FIRST = '{"message_type":"status","percent_done":0,"total_files":1,"total_bytes":3145728}'
STATUS_RUNNING = (
    '{"message_type":"status","seconds_elapsed":1,"percent_done":0.5687868118286132,'
    '"total_files":40,"files_done":21,"total_bytes":125829120,"bytes_done":71569944,'
    '"current_files":["/big5/f29","/big5/f3"]}'
)
STATUS_WITH_ETA = (
    '{"message_type":"status","seconds_elapsed":2,"seconds_remaining":1,'
    '"percent_done":0.7479491233825684,"total_files":40,"files_done":29,'
    '"total_bytes":125829120,"bytes_done":94113780,"current_files":["/big5/f36","/big5/f37"]}'
)
# `restic backup --json src` run as root without CAP_DAC_OVERRIDE: a status line with
# an error count, the summary (exit 3), and on stderr the errors and a closing warning.
STATUS_ERRORS = '{"message_type":"status","percent_done":0,"error_count":1}'
SUMMARY = (
    '{"message_type":"summary","files_new":1,"files_changed":0,"files_unmodified":0,'
    '"dirs_new":2,"dirs_changed":0,"dirs_unmodified":0,"data_blobs":1,"tree_blobs":3,'
    '"data_added":1062,"total_files_processed":1,"total_bytes_processed":3,'
    '"total_duration":0.211957328,"snapshot_id":"ac7cdd03"}'
)
ERROR_OPEN = (
    '{"message_type":"error","error":{"Op":"open","Path":"src2/d/secret.txt","Err":13},'
    '"during":"archival","item":"/tmp/rx/src2/d/secret.txt"}'
)
ERROR_DIR = '{"message_type":"error","error":{},"during":"archival","item":"/tmp/rx/src2/locked"}'
ERROR_SCAN = '{"message_type":"error","error":{},"during":"scan","item":"/tmp/rx/src2/locked"}'
STDERR_WARNING = "Warning: at least one source file could not be read"
# stderr of `restic backup --json src /tmp/rx/doesnotexist` (exit 0!)
STDERR_MISSING = "/tmp/rx/doesnotexist does not exist, skipping"


def test_status_lines() -> None:
    assert parse_backup_line(STATUS_FIRST) == Progress(
        percent=0.0,
        bytes_done=0,
        total_bytes=3145728,
        files_done=0,
        total_files=1,
        seconds_elapsed=0.0,
        seconds_remaining=None,
    )
    running = parse_backup_line(STATUS_RUNNING)
    assert isinstance(running, Progress)
    assert running.percent == pytest.approx(56.87868118286132)
    assert (running.bytes_done, running.total_bytes) == (71569944, 125829120)
    assert (running.files_done, running.total_files) == (21, 40)
    assert (running.seconds_elapsed, running.seconds_remaining) == (1.0, None)
    eta = parse_backup_line(STATUS_WITH_ETA)
    assert isinstance(eta, Progress)
    assert eta.seconds_remaining == 1.0
    assert parse_backup_line(STATUS_ERRORS) == Progress(0.0, 0, 0, 0, 0, 0.0, None)


def test_summary_line() -> None:
    assert parse_backup_line(SUMMARY) == BackupSummary(
        snapshot_id="ac7cdd03",
        files_new=1,
        files_changed=0,
        files_unmodified=0,
        data_added=1062,
        total_bytes_processed=3,
        duration=0.211957328,
        warnings=[],
    )


def test_error_lines_name_the_item() -> None:
    assert parse_backup_line(ERROR_OPEN) == "/tmp/rx/src2/d/secret.txt: open: Permission denied"
    assert parse_backup_line(ERROR_DIR) == "/tmp/rx/src2/locked: could not be read"
    assert parse_backup_line(ERROR_SCAN) is None  # the archival reports it again
    assert parse_backup_line(STDERR_MISSING) == "/tmp/rx/doesnotexist: does not exist, skipped"
    # restic >= 0.17 writes {"message": ...}; a plain string is taken as is.
    newer = '{"message_type":"error","error":{"message":"open /x: permission denied"},'
    newer += '"during":"archival","item":"/x"}'
    assert parse_backup_line(newer) == "/x: open /x: permission denied"
    plain = '{"message_type":"error","error":"boom","during":"archival"}'
    assert parse_backup_line(plain) == "boom"


@pytest.mark.parametrize(
    "line",
    [
        STDERR_WARNING,
        "",
        "   ",
        "{not json",
        "[1, 2]",
        '{"message_type":"verbose_status","action":"new","item":"/x"}',
        "\x1b[2Ksignal interrupt received, cleaning up",
    ],
)
def test_other_lines_are_none(line: str) -> None:
    assert parse_backup_line(line) is None


def test_missing_and_odd_fields_do_not_raise() -> None:
    line = '{"message_type":"summary","files_new":"x","total_duration":null}'
    summary = parse_backup_line(line)
    assert isinstance(summary, BackupSummary)
    assert (summary.snapshot_id, summary.files_new, summary.duration) == ("", 0, 0.0)


# --------------------------------------------------------------------------- snapshots

# `restic snapshots --json`: the second snapshot has no tags (the key is absent).
SNAPSHOTS = (
    '[{"time":"2026-11-22T06:07:49.667800266Z","tree":"2a6a0458e77e49c1b93ce6603947a762c17'
    '82effaff55c9e92634d30a0dddff5","paths":["/tmp/rx/src"],"hostname":"vm","username":"root",'
    '"tags":["t1"],"id":"1c8fecc045fa4aaa421e126d89dfdff7586eb34c17124856d7af26b6451427c4",'
    '"short_id":"1c8fecc0"},{"time":"2026-11-22T06:07:56.061931017Z","tree":"2a6a0458e77e49'
    'c1b93ce6603947a762c1782effaff55c9e92634d30a0dddff5","paths":["/tmp/rx/src"],"hostname":'
    '"myhost","username":"root","id":"cbb90a20b331b0d5cff64f05e969ad9b666ef8939ffa71fb5486f9'
    '9c8266bbf8","short_id":"cbb90a20"}]'
)


def test_parse_snapshots() -> None:
    first, second = parse_snapshots(SNAPSHOTS + "\n")
    assert first.id == "1c8fecc045fa4aaa421e126d89dfdff7586eb34c17124856d7af26b6451427c4"
    assert first.short_id == "1c8fecc0"
    assert first.time == datetime(2026, 11, 22, 6, 7, 49, 667800, tzinfo=UTC)
    assert (first.paths, first.tags, first.hostname) == (["/tmp/rx/src"], ["t1"], "vm")
    assert (second.tags, second.hostname, second.short_id) == ([], "myhost", "cbb90a20")


@pytest.mark.parametrize("text", ["[]", "[]\n", "", "null"])
def test_parse_no_snapshots(text: str) -> None:
    assert parse_snapshots(text) == []


@pytest.mark.parametrize("text", ["Fatal: nope", "{}", '[{"time": "x"}]'])
def test_parse_snapshots_rejects_garbage(text: str) -> None:
    with pytest.raises(ResticError):
        parse_snapshots(text)


def test_parse_time() -> None:
    assert parse_time("2026-11-22T06:08:43.65884818Z") == datetime(
        2026, 11, 22, 6, 8, 43, 658848, tzinfo=UTC
    )
    # a snapshot made on a host with another zone
    assert parse_time("2024-03-01T10:00:00.5+01:00") == datetime(
        2024, 3, 1, 9, 0, 0, 500000, tzinfo=UTC
    )
    assert parse_time("2024-03-01T10:00:00Z").tzinfo is UTC
    with pytest.raises(ValueError, match="not an RFC 3339 time"):
        parse_time("yesterday")


# --------------------------------------------------------------------------- ls, forget

# `restic ls --json latest`: the snapshot, then the nodes
LS = """\
{"time":"2026-11-22T06:08:32.801921597Z","tree":"eb8d13edbb8b4e15fa6fdf896db72a5b4c7517abe83366f03051ce9afa2fe309","paths":["/tmp/rx/src2"],"hostname":"vm","username":"root","id":"ac7cdd034c344d9f6ae87ba8db13ff123e55a7c16905ba2455062338de9f243f","short_id":"ac7cdd03","struct_type":"snapshot"}
{"name":"src2","type":"dir","path":"/src2","uid":0,"gid":0,"mode":2147484141,"permissions":"drwxr-xr-x","mtime":"2026-11-22T06:08:32.787136974Z","atime":"2026-11-22T06:08:32.787136974Z","ctime":"2026-11-22T06:08:32.787136974Z","struct_type":"node"}
{"name":"ok.txt","type":"file","path":"/src2/ok.txt","uid":0,"gid":0,"size":3,"mode":420,"permissions":"-rw-r--r--","mtime":"2026-11-22T06:08:32.782779269Z","atime":"2026-11-22T06:08:32.782779269Z","ctime":"2026-11-22T06:08:32.782779269Z","struct_type":"node"}
"""

# `restic forget --json --keep-daily 1 --group-by tags`: two groups, one with nothing to remove
FORGET = (
    '[{"tags":null,"host":"","paths":null,"keep":[{"time":"2026-11-22T06:08:32.801921597Z",'
    '"tree":"eb8d13ed","paths":["/tmp/rx/src2"],"hostname":"vm","username":"root","id":"ac7cdd'
    '034c344d9f6ae87ba8db13ff123e55a7c16905ba2455062338de9f243f","short_id":"ac7cdd03"}],'
    '"remove":[{"time":"2026-11-22T06:08:29.568361705Z","parent":"1c8fecc0","tree":"2a6a0458",'
    '"paths":["/tmp/rx/src"],"hostname":"vm","username":"root","id":"d65f4ce97389b081453a26310'
    '72fd09a39fca55971a4c43b6abd3731313e5d7a","short_id":"d65f4ce9"},{"time":"2026-11-22T06:07'
    ':56.061931017Z","tree":"2a6a0458","paths":["/tmp/rx/src"],"hostname":"myhost","username":'
    '"root","id":"cbb90a20b331b0d5cff64f05e969ad9b666ef8939ffa71fb5486f99c8266bbf8","short_id"'
    ':"cbb90a20"}],"reasons":[]},{"tags":["t1"],"host":"","paths":null,"keep":[],"remove":null,'
    '"reasons":[]}]'
)


def test_parse_ls() -> None:
    assert parse_ls(LS) == [("/src2", "dir", 0), ("/src2/ok.txt", "file", 3)]


def test_parse_forget() -> None:
    assert parse_forget(FORGET + "\n") == [
        "d65f4ce97389b081453a2631072fd09a39fca55971a4c43b6abd3731313e5d7a",
        "cbb90a20b331b0d5cff64f05e969ad9b666ef8939ffa71fb5486f99c8266bbf8",
    ]
    assert parse_forget("") == []  # 0.14 with no keep policy prints nothing
    with pytest.raises(ResticError):
        parse_forget("[oops")


def test_parse_version() -> None:
    assert parse_version("restic 0.14.0 compiled with go1.19.8 on linux/amd64\n") == (0, 14, 0)
    assert parse_version("restic 0.17.3 compiled with go1.23.2 on linux/arm64") == (0, 17, 3)
    with pytest.raises(ResticError):
        parse_version("bash: restic: command not found")


# --------------------------------------------------------------------------- failures

# stderr of `restic forget` while a `restic backup --stdin` ran (shared lock) ...
LOCKED_SHARED = """\
unable to create lock in backend: repository is already locked by PID 28502 on vm by root (UID 0, GID 0)
lock was created at 2026-11-22 06:08:43 (4.037914013s ago)
storage ID faeda65d
the `unlock` command can be used to remove stale locks
"""  # noqa: E501
# ... and of `restic backup` while `restic key passwd` waited (exclusive lock)
LOCKED_EXCLUSIVE = """\
unable to create lock in backend: repository is already locked exclusively by PID 28834 on vm by root (UID 0, GID 0)
lock was created at 2026-11-22 06:08:59 (3.455143581s ago)
storage ID 1456daba
the `unlock` command can be used to remove stale locks
"""  # noqa: E501
WRONG_PASSWORD = "Fatal: wrong password or no key found\n"
NO_REPOSITORY = """\
Fatal: unable to open config file: stat /tmp/rx/nope/config: no such file or directory
Is there a repository at the following location?
/tmp/rx/nope
"""
CONFIG_EXISTS = "Fatal: create repository at /tmp/rx/repo failed: config file already exists\n"


def test_parse_lock_message() -> None:
    assert parse_lock_message(LOCKED_SHARED) == {
        "hostname": "vm",
        "pid": 28502,
        "username": "root",
        "exclusive": False,
        "time": "2026-11-22 06:08:43",
        "age": pytest.approx(4.037914013),
        "id": "faeda65d",
    }
    info = parse_lock_message(LOCKED_EXCLUSIVE)
    assert info is not None
    assert (info["pid"], info["exclusive"], info["id"]) == (28834, True, "1456daba")
    old = LOCKED_SHARED.replace("(4.037914013s ago)", "(49h3m12.5s ago)")
    assert parse_lock_message(old)["age"] == pytest.approx(49 * 3600 + 192.5)  # type: ignore[index]
    assert parse_lock_message(WRONG_PASSWORD) is None


def test_locked_message() -> None:
    info = parse_lock_message(LOCKED_EXCLUSIVE)
    assert info is not None
    assert locked_message(info["hostname"], info["pid"], info["time"], info["age"]) == (
        "repository is locked by vm pid 28834 since 2026-11-22 06:08:59 (3s ago): not unlocked"
        " automatically; run `restic unlock` after checking nobody uses it"
    )
    assert "ago" not in locked_message("h", 1, "then", None)


@pytest.mark.parametrize(
    ("code", "stderr", "version", "kind"),
    [
        (1, LOCKED_SHARED, (0, 14, 0), "locked"),
        (1, LOCKED_EXCLUSIVE, None, "locked"),
        (1, WRONG_PASSWORD, (0, 14, 0), "wrong_password"),
        (1, NO_REPOSITORY, (0, 14, 0), "no_repository"),
        (1, CONFIG_EXISTS, (0, 14, 0), None),
        (1, "Fatal: invalid id", (0, 14, 0), None),
        (3, "", (0, 14, 0), None),
        # 0.17+ exit codes, trusted only from 0.17 on
        (10, "", (0, 17, 0), "no_repository"),
        (11, "", (0, 18, 1), "locked"),
        (12, "", (1, 0, 0), "wrong_password"),
        (12, "", (0, 14, 0), None),
        (11, "", None, None),
    ],
)
def test_classify_failure(
    code: int, stderr: str, version: tuple[int, int, int] | None, kind: str | None
) -> None:
    assert classify_failure(code, stderr, version) == kind


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("4.037914013s", 4.037914013),
        ("350ms", 0.35),
        ("1h2m3s", 3723.0),
        ("2m0.5s", 120.5),
        ("12µs", 12e-6),
        ("soon", None),
        ("5s later", None),
        ("", None),
    ],
)
def test_parse_go_duration(text: str, seconds: float | None) -> None:
    assert parse_go_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.9, "59s"), (61, "1m"), (3600, "1h"), (3660 * 2, "2h 2m"), (90000, "1d 1h")],
)
def test_human_age(seconds: float, text: str) -> None:
    assert human_age(seconds) == text


# --------------------------------------------------------------------------- inputs


def test_mask_url() -> None:
    assert mask_url("rest:https://bot:s3cr3t@backup.example.org/repo") == (
        "rest:https://bot:***@backup.example.org/repo"
    )
    assert mask_url("s3:https://s3.example.org/bucket") == "s3:https://s3.example.org/bucket"
    assert mask_url("/srv/restic") == "/srv/restic"


@pytest.mark.parametrize("tag", ["", "a,b", " a", "a\n", "x\0"])
def test_bad_tags(tag: str) -> None:
    with pytest.raises(ResticError):
        check_tag(tag)


def test_good_tags_and_ids() -> None:
    assert check_tag("app:cloud.example.org") == "app:cloud.example.org"
    for snap_id in ("latest", "1c8fecc0", "abcd", "a" * 64):
        assert check_snapshot_id(snap_id) == snap_id
    for bad in ("--help", "abc", "1C8FECC0", "a" * 65, "latest~1", ""):
        with pytest.raises(ResticError):
            check_snapshot_id(bad)


def test_child_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/bot")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/leak")
    r = Restic(
        "s3:https://s3.example.org/bucket",
        Path("/run/secrets/restic"),
        extra_env={"AWS_ACCESS_KEY_ID": "AKIA1234", "AWS_SECRET_ACCESS_KEY": "verysecret"},
        cache_dir=Path("/var/cache/restic"),
    )
    env = r._env()
    assert env["RESTIC_REPOSITORY"] == "s3:https://s3.example.org/bucket"
    assert env["RESTIC_PASSWORD_FILE"] == "/run/secrets/restic"
    assert env["RESTIC_CACHE_DIR"] == "/var/cache/restic"
    assert env["AWS_SECRET_ACCESS_KEY"] == "verysecret"
    assert env["HOME"] == "/home/bot"
    assert "PATH" in env
    assert "AWS_SHARED_CREDENTIALS_FILE" not in env
    assert r._mask("key verysecret AKIA1234") == "key *** ***"
    with pytest.raises(ValueError, match="RESTIC_PASSWORD"):
        Restic("/r", Path("/p"), extra_env={"RESTIC_PASSWORD": "x"})


def test_display_masks_url_credentials() -> None:
    r = Restic("rest:https://bot:pw123@host/repo", Path("/p"))
    assert r.display == "rest:https://bot:***@host/repo"
    assert r._mask("Fatal: at rest:https://bot:pw123@host/repo") == (
        "Fatal: at rest:https://bot:***@host/repo"
    )


async def test_lines_have_no_length_limit() -> None:
    reader = asyncio.StreamReader()
    long_line = "x" * 300_000
    reader.feed_data(f"{long_line}\nshort\r\n".encode())
    reader.feed_data(b"\xff broken \nno newline at the end")
    reader.feed_eof()
    lines = [line async for line in _lines(reader)]
    assert lines == [long_line, "short", "\ufffd broken ", "no newline at the end"]
