"""git's failures as sentences: the strings produced for real with the machine's git
(a missing repository, a folder that is none, dubious ownership, a refused connection,
a remote that wants a password), DNS from its known wording (no test resolves names)."""

from __future__ import annotations

import http.server
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.ops.git_errors import explain, git_message, remote_of

# No user or system config (a safe.directory=* there would hide dubious ownership), no
# terminal: as the bot runs git.
ENV = {
    "PATH": os.environ["PATH"],
    "HOME": "/nonexistent",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
}


def git_stderr(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=ENV, capture_output=True, text=True, check=False, timeout=30
    )
    assert done.returncode != 0, done
    return done.stderr


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "recipe"
    subprocess.run(["git", "init", "-q", str(path)], env=ENV, check=True)
    return path


@pytest.fixture
def asks_for_a_password() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 that answers every request with 401 Basic."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="forge"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/coop/recipe.git"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_missing_remote_is_not_a_repository(repo: Path, tmp_path: Path) -> None:
    stderr = git_stderr("fetch", str(tmp_path / "gone"), cwd=repo)
    assert "does not appear to be a git repository" in stderr
    assert (explain(stderr) or "").startswith("that is not a git repository")


def test_a_folder_that_is_no_repository(tmp_path: Path) -> None:
    stderr = git_stderr("-C", str(tmp_path), "tag")
    assert "not a git repository" in stderr
    assert (explain(stderr) or "").startswith("that is not a git repository")


def test_dubious_ownership(repo: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("the tests run as root here (the swarm and restic tests need it)")
    for folder, _, names in os.walk(repo):
        os.chown(folder, 4242, 4242)
        for name in names:
            os.chown(os.path.join(folder, name), 4242, 4242)
    stderr = git_stderr("-C", str(repo), "tag")
    assert "detected dubious ownership" in stderr
    sentence = explain(stderr) or ""
    assert "owned by another user" in sentence
    assert "safe.directory" in sentence


def test_a_refused_connection(repo: Path) -> None:
    stderr = git_stderr("ls-remote", "http://127.0.0.1:1/coop/recipe.git", cwd=repo)
    assert "Connection refused" in stderr or "Failed to connect" in stderr
    assert (explain(stderr) or "").startswith("the recipe's remote cannot be reached")


def test_a_remote_that_wants_a_password(repo: Path, asks_for_a_password: str) -> None:
    stderr = git_stderr("ls-remote", asks_for_a_password, cwd=repo)
    assert "terminal prompts disabled" in stderr or "Authentication failed" in stderr
    assert (explain(stderr) or "").startswith("the recipe's remote refused the bot")


@pytest.mark.parametrize(
    ("stderr", "remote"),
    [
        ("fatal: unable to access 'https://bot:s3cret@forge.coop/x.git/': Failed to connect",
         "https://bot:***@forge.coop/x.git/"),
        ("ssh: connect to host forge port 22: Connection timed out", "forge"),
        ("ssh: Could not resolve hostname forge: Name or service not known", "forge"),
        ("fatal: not a git repository (or any of the parent directories): .git", None),
    ],
)  # fmt: skip
def test_the_remote_is_named_without_credentials(stderr: str, remote: str | None) -> None:
    assert remote_of(stderr) == remote


@pytest.mark.parametrize(
    ("stderr", "start"),
    [
        (
            "fatal: unable to access 'https://git.coopcloud.tech/x/': "
            "Could not resolve host: git.coopcloud.tech",
            "the recipe's remote host name does not resolve",
        ),
        (
            "ssh: Could not resolve hostname forge: Name or service not known\n"
            "fatal: Could not read from remote repository.",
            "the recipe's remote host name does not resolve",
        ),
        (
            "git@forge: Permission denied (publickey).\n"
            "fatal: Could not read from remote repository.",
            "the recipe's remote refused the bot",
        ),
        (
            "ssh: connect to host forge port 22: Connection timed out\n"
            "fatal: Could not read from remote repository.",
            "the recipe's remote cannot be reached",
        ),
        ("error: pathspec 'x' did not match any file(s) known to git", None),
    ],
)
def test_known_wordings(stderr: str, start: str | None) -> None:
    sentence = explain(stderr)
    if start is None:
        assert sentence is None
    else:
        assert sentence is not None
        assert sentence.startswith(start)


def test_the_message_has_an_incident_id_and_the_log_has_gits_text(
    repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stderr = git_stderr("ls-remote", "http://127.0.0.1:1/coop/recipe.git", cwd=repo)
    with caplog.at_level(logging.WARNING, logger="bot.ops.git_errors"):
        message = git_message("bonfire", "fetch", stderr)
    ident = message.rsplit("id ", 1)[1].rstrip(")")
    assert message.startswith(
        "recipe bonfire: git fetch failed (remote `http://127.0.0.1:1/coop/recipe.git/`): "
        "the recipe's remote cannot"
    )
    assert message.endswith(f"(details in the log, id {ident})")
    assert "127.0.0.1 port 1" not in message  # the library's text stays in the log
    (record,) = caplog.records
    assert ident in record.getMessage()
    assert "127.0.0.1 port 1" in record.getMessage()
    assert (
        git_message("bonfire", "tag", "error: odd") == "recipe bonfire: git tag failed: error: odd"
    )
