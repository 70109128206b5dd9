"""restic's failures as sentences, produced with the real restic 0.14: a wrong
password, no repository, a `rest:` server that is down (not "no repository": the bot
would otherwise try to create one), a server that refuses the credentials, a restore
onto a full disk (a real 1 MiB tmpfs). restic's own lines go to the log under the id."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bot.ops.restic import Restic, ResticError
from tests.harness.restserver import rest_server


def _restic() -> str:
    found = "/usr/bin/restic" if os.path.exists("/usr/bin/restic") else shutil.which("restic")
    if found is None:  # fail, not skip: a CI without restic must not pass silently
        pytest.fail("restic is not installed: run scripts/install-system-deps")
    return found


RESTIC = _restic()


def adapter(tmp_path: Path, repository: str, password: str = "right horse") -> Restic:
    pw = tmp_path / f"pw-{len(password)}"
    pw.write_text(password + "\n")
    return Restic(repository, pw, binary=RESTIC, cache_dir=tmp_path / "cache")


async def failure(restic: Restic) -> ResticError:
    with pytest.raises(ResticError) as e:
        await restic.snapshots()
    return e.value


async def test_wrong_password_and_no_repository(tmp_path: Path) -> None:
    await adapter(tmp_path, str(tmp_path / "repo")).init()
    wrong = await failure(adapter(tmp_path, str(tmp_path / "repo"), "wrong"))
    assert wrong.kind == "wrong_password"
    assert "does not open the repository" in str(wrong)
    missing = await failure(adapter(tmp_path, str(tmp_path / "missing")))
    assert missing.kind == "no_repository"


async def test_a_server_that_is_down_is_unreachable_not_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.ops.restic.client"):
        error = await failure(adapter(tmp_path, "rest:http://coop:sekrit@127.0.0.1:1/"))
    assert error.kind == "unreachable"
    message = str(error)
    assert message.startswith(
        "restic snapshots: the repository at rest:http://coop:***@127.0.0.1:1/ cannot be "
        "reached (the server refused or did not answer): is it up, and reachable from the "
        "bot? `coopbot check` tests it (details in the log, id "
    )
    ident = message.rsplit("id ", 1)[1].rstrip(")")
    (record,) = [r for r in caplog.records if ident in r.getMessage()]
    assert "connect: connection refused" in record.getMessage()  # restic's words, logged
    assert "sekrit" not in message + record.getMessage()


async def test_a_server_that_refuses_the_credentials(tmp_path: Path) -> None:
    async with rest_server(tmp_path / "served", "coop", "right") as port:
        await adapter(tmp_path, f"rest:http://coop:right@127.0.0.1:{port}/").init()
        error = await failure(adapter(tmp_path, f"rest:http://coop:wrong@127.0.0.1:{port}/"))
    assert error.kind == "refused", error.stderr_tail
    assert f"the server of rest:http://coop:***@127.0.0.1:{port}/ refused" in str(error)
    assert "wrong" not in str(error).replace("wrong_", "")


async def test_a_restore_onto_a_full_disk(tmp_path: Path) -> None:
    restic = adapter(tmp_path, str(tmp_path / "repo"))
    await restic.init()
    data = tmp_path / "data"
    data.mkdir()
    (data / "blob").write_bytes(os.urandom(3 * 1024 * 1024))
    env = {"PATH": os.environ["PATH"], "RESTIC_REPOSITORY": str(tmp_path / "repo")}
    env["RESTIC_PASSWORD_FILE"] = str(restic.password_file)
    backup = [RESTIC, "backup", "-q", str(data)]
    await asyncio.to_thread(subprocess.run, backup, env=env, check=True)
    small = tmp_path / "small"
    small.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)]
    await asyncio.to_thread(subprocess.run, mount, check=True)
    try:
        with pytest.raises(ResticError) as e:
            await restic.restore("latest", small)
    finally:
        await asyncio.to_thread(subprocess.run, ["umount", str(small)], check=True)
    assert e.value.kind == "no_space"
    assert str(e.value).startswith("restic restore: a disk is full (no space left on device)")
