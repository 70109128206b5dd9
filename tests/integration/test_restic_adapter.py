"""bot.ops.restic against Debian's real restic 0.14 binary on local tmp repositories.

No docker. Some tests give the adapter a small wrapper script as its `binary` instead of
adding test-only API:
- unreadable files: as root, restic reads everything (CAP_DAC_OVERRIDE), so restic runs
  under `setpriv` without the DAC capabilities (still uid 0, so it owns the repository);
- a slow backup to cancel: `restic --limit-upload=...`;
- a child that ignores SIGINT: a shell script, to see the SIGKILL after the grace time.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.ops.restic import Progress, Restic, ResticError
from bot.ops.restic import client as restic_mod

RESTIC = "/usr/bin/restic" if os.path.exists("/usr/bin/restic") else shutil.which("restic")
PASSWORD = "correct horse battery staple 4711"
TAGS = ["coopbot", "app:cloud.example.org"]


@pytest.fixture(scope="module")
def restic_bin() -> str:
    # Fail, not skip: a CI without restic must not pass silently.
    if RESTIC is None:
        pytest.fail("restic is not installed: run scripts/install-system-deps")
    return RESTIC


def make_restic(tmp_path: Path, binary: str, repo: str = "repo") -> Restic:
    """An adapter on tmp_path/<repo> with the test password; status lines at 20 per s."""
    pw = tmp_path / "password"
    if not pw.exists():
        pw.write_text(PASSWORD + "\n")
        pw.chmod(0o600)
    return Restic(
        str(tmp_path / repo),
        pw,
        binary=binary,
        extra_env={"RESTIC_PROGRESS_FPS": "20"},
        cache_dir=tmp_path / "cache",
    )


@pytest.fixture(scope="module")
def template_repo(restic_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `restic init` per module (it calibrates scrypt: ~2.5 s), copied per test."""
    base = tmp_path_factory.mktemp("restic-template")
    (base / "password").write_text(PASSWORD + "\n")
    env = {
        "PATH": os.defpath,
        "RESTIC_REPOSITORY": str(base / "repo"),
        "RESTIC_PASSWORD_FILE": str(base / "password"),
        "RESTIC_CACHE_DIR": str(base / "cache"),
    }
    subprocess.run([restic_bin, "init"], env=env, check=True, capture_output=True)
    return base / "repo"


@pytest.fixture
def repo(tmp_path: Path, restic_bin: str, template_repo: Path) -> Restic:
    shutil.copytree(template_repo, tmp_path / "repo")
    return make_restic(tmp_path, restic_bin)


def write_tree(root: Path) -> dict[str, bytes]:
    files = {
        "hello.txt": b"hello\n",
        "empty": b"",
        "data/blob.bin": bytes(range(256)) * 40 + os.urandom(5000),
        "data/deeper/still/notes.md": "# ünïcode\n".encode() * 10,
        "data/deeper/zeros": b"\0" * 100_000,
    }
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    (root / "data/link").symlink_to("blob.bin")
    (root / "data/blob.bin").chmod(0o640)
    return files


def tree_of(root: Path) -> dict[str, tuple[str, bytes | str, int]]:
    """relative path -> (kind, content or link target, mode)."""
    out: dict[str, tuple[str, bytes | str, int]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        mode = path.lstat().st_mode & 0o7777
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path), 0)
        elif path.is_dir():
            out[rel] = ("dir", b"", mode)
        else:
            out[rel] = ("file", path.read_bytes(), mode)
    return out


def restic_pids(repository: str) -> list[int]:
    """Processes whose environment names this repository (our children only)."""
    needle = f"RESTIC_REPOSITORY={repository}\0".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def wrapper(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


# --------------------------------------------------------------------------- basics


async def test_version_is_asked_once(tmp_path: Path, restic_bin: str) -> None:
    r = make_restic(tmp_path, restic_bin)
    version = await r.version()
    assert version >= (0, 14, 0)
    r.binary = str(tmp_path / "no-such-restic")  # a second run would fail
    assert await r.version() == version


async def test_init_is_idempotent_and_checks_the_password(repo: Restic, tmp_path: Path) -> None:
    fresh = make_restic(tmp_path, repo.binary, repo="fresh")
    await fresh.init()
    assert (tmp_path / "fresh" / "config").exists()
    await fresh.init()  # "config file already exists" is fine
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    other = Restic(repo.repository, wrong, binary=repo.binary, cache_dir=repo.cache_dir)
    with pytest.raises(ResticError) as e:
        await other.init()
    assert e.value.kind == "wrong_password"


async def test_missing_binary(tmp_path: Path) -> None:
    r = make_restic(tmp_path, str(tmp_path / "nope"))
    with pytest.raises(ResticError, match="cannot run restic"):
        await r.snapshots()


# --------------------------------------------------------------------------- round trip


async def test_backup_snapshots_ls_restore_round_trip(repo: Restic, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = write_tree(src)
    summary = await repo.backup([src], TAGS)
    assert summary.files_new == len(files)
    assert (summary.files_changed, summary.files_unmodified) == (0, 0)
    assert summary.total_bytes_processed == sum(len(c) for c in files.values())
    assert summary.data_added > 0
    assert summary.duration > 0
    assert summary.warnings == []

    (snap,) = await repo.snapshots()
    assert snap.id.startswith(summary.snapshot_id)  # 0.14 reports the short id
    assert snap.short_id == snap.id[:8]
    assert snap.paths == [str(src)]
    assert snap.tags == TAGS
    assert snap.hostname == socket.gethostname()
    assert abs(time.time() - snap.time.timestamp()) < 60
    assert snap.time.utcoffset() is not None

    nodes = {path: (kind, size) for path, kind, size in await repo.ls(snap.short_id)}
    assert nodes[f"{src}/hello.txt"] == ("file", 6)
    assert nodes[f"{src}/data/deeper/zeros"] == ("file", 100_000)
    assert nodes[f"{src}/data/deeper/still"] == ("dir", 0)
    assert nodes[f"{src}/data/link"][0] == "symlink"

    target = tmp_path / "restored"
    await repo.restore(snap.id, target)
    assert tree_of(target / str(src).lstrip("/")) == tree_of(src)  # bytes, modes, links

    # A second backup of the unchanged tree adds (almost) nothing.
    again = await repo.backup([src], TAGS)
    assert again.files_unmodified == len(files)
    assert again.files_new == 0
    assert again.snapshot_id != summary.snapshot_id

    # include: just one file, by its path in the snapshot.
    only = tmp_path / "only"
    await repo.restore("latest", only, include=[f"{src}/data/deeper/still/notes.md"])
    restored = [p for p in only.rglob("*") if p.is_file()]
    assert [p.name for p in restored] == ["notes.md"]
    assert restored[0].read_bytes() == files["data/deeper/still/notes.md"]


async def test_tags_host_and_excludes(repo: Restic, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src)
    a = await repo.backup([src], ["coopbot", "app:a"], excludes=["*.bin"], host="node-a")
    await repo.backup([src / "data"], ["coopbot", "app:b"])
    assert a.files_new == 4  # not blob.bin

    assert len(await repo.snapshots()) == 2
    assert len(await repo.snapshots(["coopbot"])) == 2
    (only_a,) = await repo.snapshots(["coopbot", "app:a"])  # all tags must match
    assert only_a.hostname == "node-a"
    assert only_a.tags == ["coopbot", "app:a"]
    assert await repo.snapshots(["app:a", "app:b"]) == []

    with pytest.raises(ResticError, match="invalid restic tag"):
        await repo.backup([src], ["a,b"])
    with pytest.raises(ResticError, match="invalid snapshot id"):
        await repo.restore("--help", tmp_path / "x")
    with pytest.raises(ValueError, match="absolute"):
        await repo.backup([Path("relative/dir")], TAGS)


async def test_progress_callback_gets_status_lines(repo: Restic, tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}").write_bytes(os.urandom(10 * 1024 * 1024))
    seen: list[Progress] = []

    async def on_progress(p: Progress) -> None:
        seen.append(p)

    summary = await repo.backup([src], TAGS, on_progress=on_progress)
    assert summary.files_new == 3
    assert summary.total_bytes_processed == 30 * 1024 * 1024
    assert len(seen) >= 2, seen
    assert all(0 <= p.percent <= 100 for p in seen)
    assert [p.bytes_done for p in seen] == sorted(p.bytes_done for p in seen)
    assert any(p.total_bytes == 30 * 1024 * 1024 and p.total_files == 3 for p in seen)
    assert any(p.bytes_done > 0 for p in seen)


# --------------------------------------------------------------------------- exit 3


async def test_unreadable_files_give_a_summary_with_warnings(repo: Restic, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src)
    secret = src / "secret.txt"
    secret.write_text("nobody reads this\n")
    secret.chmod(0)
    closed = src / "closed"
    closed.mkdir()
    (closed / "inside").write_text("x")
    closed.chmod(0)
    binary = repo.binary
    if os.geteuid() == 0:  # root reads anything: drop the DAC capabilities for restic
        caps = "-dac_override,-dac_read_search"
        binary = wrapper(
            tmp_path,
            "restic-nodac",
            f'exec setpriv --bounding-set={caps} --inh-caps={caps} -- {repo.binary} "$@"',
        )
    weak = Restic(repo.repository, repo.password_file, binary=binary, cache_dir=repo.cache_dir)
    missing = tmp_path / "gone"

    summary = await weak.backup([src, missing], TAGS)  # exit 3: snapshot made, incomplete
    assert sorted(summary.warnings) == sorted(
        [
            f"{secret}: open: Permission denied",
            f"{closed}: could not be read",  # 0.14 serialises this error as {}
            f"{missing}: does not exist, skipped",
        ]
    ), summary.warnings
    (snap,) = await repo.snapshots()
    assert snap.id.startswith(summary.snapshot_id)
    names = [p for p, _, _ in await repo.ls(snap.id)]
    assert f"{src}/hello.txt" in names
    assert str(secret) not in names


# --------------------------------------------------------------------------- failures


async def test_wrong_password(repo: Restic, tmp_path: Path) -> None:
    write_tree(tmp_path / "src")
    await repo.backup([tmp_path / "src"], TAGS)
    wrong = tmp_path / "wrong"
    wrong.write_text("hunter2-wrong\n")
    other = Restic(repo.repository, wrong, binary=repo.binary, cache_dir=repo.cache_dir)
    for call in (other.snapshots(), other.backup([tmp_path / "src"], TAGS)):
        with pytest.raises(ResticError) as e:
            await call
        assert e.value.kind == "wrong_password"
        assert e.value.exit_code == 1
        assert str(e.value).startswith("wrong password or no key")
        assert "hunter2" not in str(e.value)
        assert PASSWORD not in str(e.value)


async def test_no_repository(tmp_path: Path, restic_bin: str) -> None:
    r = make_restic(tmp_path, restic_bin, repo="missing")
    for call in (r.snapshots(), r.backup([tmp_path], TAGS), r.check()):
        with pytest.raises(ResticError) as e:
            await call
        assert e.value.kind == "no_repository"
        assert str(e.value).startswith(f"no repository at {tmp_path / 'missing'}")


async def test_other_failures_carry_the_stderr_tail(repo: Restic, tmp_path: Path) -> None:
    with pytest.raises(ResticError) as e:
        await repo.restore("deadbeef", tmp_path / "x")
    assert e.value.kind is None
    assert e.value.exit_code == 1
    assert str(e.value).startswith("restic restore failed (exit 1):")
    assert 'no matching ID found for prefix "deadbeef"' in str(e.value)


@pytest.fixture
def lock_holder(repo: Restic) -> Iterator[subprocess.Popen[bytes]]:
    """`restic key passwd` waiting for the new password on a pipe we never write to:
    a real restic process holding an exclusive lock for as long as we like."""
    proc = subprocess.Popen(
        [repo.binary, "key", "passwd"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=repo._env(),
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()  # the pipe never written to; left open it is a ResourceWarning


async def test_locked_repository_names_holder_and_age(
    repo: Restic, lock_holder: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    src = tmp_path / "src"
    write_tree(src)
    for _ in range(100):
        held = await repo.locks()
        if held:
            break
        await asyncio.sleep(0.1)
    (lock,) = held
    assert lock["pid"] == lock_holder.pid
    assert lock["exclusive"] is True
    assert lock["hostname"] == socket.gethostname()
    assert lock["username"]

    with pytest.raises(ResticError) as e:
        await repo.backup([src], TAGS)
    message = str(e.value)
    assert e.value.kind == "locked"
    assert message.startswith(
        f"repository is locked by {socket.gethostname()} pid {lock_holder.pid} since "
        f"{lock['time'].astimezone().strftime('%Y-%m-%d %H:%M')}"
    ), message
    assert re.search(r" \(\ds ago\): not unlocked automatically; ", message), message
    assert message.endswith("run `restic unlock` after checking nobody uses it")

    # Listing still works (--no-lock); a stale lock (holder killed) still blocks.
    assert await repo.snapshots() == []
    lock_holder.kill()
    lock_holder.wait()
    for call in (repo.forget(TAGS, 1, 0, 0), repo.prune(), repo.check()):
        with pytest.raises(ResticError) as e:
            await call
        assert e.value.kind == "locked"
        assert f"pid {lock_holder.pid}" in str(e.value)
    assert [x["id"] for x in await repo.locks()] == [lock["id"]]
    # Another wording (a later restic): the holder comes from `list locks` + `cat lock`.
    message = await repo._locked_message("Fatal: repo locked, in other words")
    assert message.startswith(
        f"repository is locked by {socket.gethostname()} pid {lock_holder.pid} since "
        f"{lock['time']:%Y-%m-%d %H:%M:%S} UTC ("
    ), message


# --------------------------------------------------------------------------- maintenance


async def test_forget_prune_check(repo: Restic, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src)
    ids = []
    for i in range(3):
        (src / "counter").write_text(str(i))
        ids.append((await repo.backup([src], TAGS)).snapshot_id)
    await repo.backup([src], ["coopbot", "app:other"])

    removed = await repo.forget(TAGS, keep_daily=1, keep_weekly=0, keep_monthly=0)
    assert sorted(x[:8] for x in removed) == sorted(ids[:2])  # same day: the newest is kept
    assert all(len(x) == 64 for x in removed)
    left = await repo.snapshots()
    assert sorted(s.short_id for s in left) == sorted([ids[2], left[-1].short_id])
    assert left[-1].tags == ["coopbot", "app:other"]  # the other app's is untouched
    assert await repo.forget(TAGS, 1, 1, 1) == []

    with pytest.raises(ValueError, match="forget needs tags"):
        await repo.forget([], 1, 0, 0)
    with pytest.raises(ResticError, match="at least one keep value"):
        await repo.forget(TAGS, 0, 0, 0)

    await repo.prune()
    report = await repo.check(read_data_subset="1/2")
    assert "no errors were found" in report
    assert "in 2 groups)" in report
    with pytest.raises(ResticError, match="invalid read-data subset"):
        await repo.check("--all")


# --------------------------------------------------------------------------- cancellation


async def test_cancelling_a_backup_stops_restic_and_its_lock(
    repo: Restic, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "big"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(60 * 1024 * 1024))  # 7.5 s at 8000 KiB/s
    # Slow uploads, but not too slow: on SIGINT restic waits for the packs in flight
    # before it removes its lock (at 200 KiB/s that took 25 s).
    slow = wrapper(tmp_path, "restic-slow", f'exec {repo.binary} --limit-upload=8000 "$@"')
    r = Restic(repo.repository, repo.password_file, binary=slow, cache_dir=repo.cache_dir)
    started = asyncio.Event()

    async def on_progress(p: Progress) -> None:
        started.set()

    task = asyncio.create_task(r.backup([src], TAGS, on_progress=on_progress))
    await asyncio.wait_for(started.wait(), 20)
    await asyncio.sleep(0.5)
    (pid,) = restic_pids(repo.repository)
    assert alive(pid)  # running, holding its lock
    assert await repo.locks()
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - t0 < restic_mod.STOP_GRACE
    assert "killing it" not in caplog.text  # SIGINT was enough
    assert not alive(pid)
    assert restic_pids(repo.repository) == []
    assert await repo.locks() == []  # restic removed its lock on SIGINT
    assert await repo.snapshots() == []


async def test_a_child_ignoring_sigint_is_killed(
    repo: Restic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(restic_mod, "STOP_GRACE", 0.5)
    stubborn = wrapper(
        tmp_path,
        "restic-stubborn",
        'trap \'\' INT TERM\necho \'{"message_type":"status","percent_done":0.5}\'\nexec sleep 300',
    )
    r = Restic(repo.repository, repo.password_file, binary=stubborn)

    # 1. cancelled: SIGINT is ignored, SIGKILL follows after STOP_GRACE.
    started = asyncio.Event()

    async def on_progress(p: Progress) -> None:
        assert p.percent == 50
        started.set()

    task = asyncio.create_task(r.backup([tmp_path], TAGS, on_progress=on_progress))
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.sleep(0.2)  # let the shell exec sleep
    (pid,) = restic_pids(repo.repository)
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert 0.4 < time.monotonic() - t0 < 5
    assert not alive(pid)

    # 2. the progress callback raises: same clean-up, the error comes through.
    async def failing(p: Progress) -> None:
        raise RuntimeError("chat is down")

    with pytest.raises(RuntimeError, match="chat is down"):
        await r.backup([tmp_path], TAGS, on_progress=failing)
    assert restic_pids(repo.repository) == []


@pytest.fixture(autouse=True)
async def no_restic_left(tmp_path: Path) -> AsyncIterator[None]:
    yield
    left = restic_pids(str(tmp_path / "repo"))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "a restic child outlived its test"
