"""Secrets kept out of what the bot shows: log masking (linear by construction) and
repository strings without credentials."""

from __future__ import annotations

import re
import re._parser as sre_parse  # the parser `re` itself uses: the pattern's real shape
from typing import Any

import pytest

from bot import redact
from bot.redact import log_excerpt, log_file, mask_secrets, redact_url

_BACKTRACKING = {sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, sre_parse.BRANCH}


def _opcodes(tree: Any) -> set[Any]:
    """Every opcode in a parsed pattern, nested groups included."""
    found: set[Any] = set()
    for op, arg in tree:
        found.add(op)
        for part in arg if isinstance(arg, (tuple, list)) else ():
            if isinstance(part, sre_parse.SubPattern):
                found |= _opcodes(part)
            elif isinstance(part, list) and part and isinstance(part[0], sre_parse.SubPattern):
                for sub in part:
                    found |= _opcodes(sub)
    return found


@pytest.mark.parametrize("pattern", [redact.KEY_PATTERN, redact.VALUE_PATTERN])
def test_masking_patterns_cannot_backtrack(pattern: str) -> None:
    ops = _opcodes(sre_parse.parse(pattern))
    assert sre_parse.POSSESSIVE_REPEAT in ops
    assert not ops & _BACKTRACKING, ops & _BACKTRACKING


def test_the_old_pattern_is_caught_by_that_check() -> None:
    """The check above is not vacuous: the quadratic pattern the bot had fails it."""
    old = r"(?i)\b([A-Z0-9_]*(?:PASS(?:WORD)?|SECRET|TOKEN|KEY|PRIVATE)[A-Z0-9_]*)\s*([=:])\s*(\S+)"
    assert _opcodes(sre_parse.parse(old)) & _BACKTRACKING


@pytest.mark.parametrize(
    "line",
    [
        "K" * 15_000,  # one long word: the old pattern retried it at every position
        "KEY" * 5_000,
        "PASSWORD" * 2_000 + " =",
        "a=" * 7_500,
        "x " * 7_500,
        "TOKEN= " * 2_000,
    ],
)
def test_searches_grow_with_pairs_not_with_length(line: str) -> None:
    """Each search starts where the last one ended; their number is bounded by the
    number of `key=` candidates (at most one per word), never by characters."""
    steps: list[int] = []
    mask_secrets(line, steps=steps)
    words = len(re.findall(r"\w+", line))
    assert steps[0] <= words + 2


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("DB_PASSWORD=hunter2 visible=yes", "DB_PASSWORD=**** visible=yes"),
        ("db_password = hunter2", "db_password=****"),
        ("api_key: abc def", "api_key:**** def"),
        ("SECRET_KEY_BASE=aa\nTOKEN=bb\nplain=cc", "SECRET_KEY_BASE=****\nTOKEN=****\nplain=cc"),
        ("FOO=DB_PASSWORD=x", "FOO=DB_PASSWORD=****"),
        ("my-secret=1", "my-secret=****"),
        ("PRIVATE=1 PASS=2", "PRIVATE=**** PASS=****"),
        ("PASSWORD=", "PASSWORD="),
        ("password is hunter2", "password is hunter2"),
        ("time=12:30:01 level=info", "time=12:30:01 level=info"),
        ("", ""),
        ("keyboard=qwerty", "keyboard=****"),  # as before: "key" anywhere in the key
        ("é_TOKEN=x", "é_TOKEN=x"),  # no word boundary before the key: as before
    ],
)
def test_mask_secrets_table(text: str, masked: str) -> None:
    assert mask_secrets(text) == masked


@pytest.mark.parametrize(
    ("repository", "shown"),
    [
        ("rest:https://user:pw@host:8000/repo", "rest:https://user:***@host:8000/repo"),
        ("rest:https://user:p@ss@host/", "rest:https://user:***@host/"),
        ("rest:http://token@host/", "rest:http://***@host/"),
        ("rest:https://host:8000/", "rest:https://host:8000/"),
        (
            "s3:https://s3.example/bucket?X-Amz-Signature=abc&x=1",
            "s3:https://s3.example/bucket?X-Amz-Signature=***&x=1",
        ),
        ("s3:s3.amazonaws.com/bucket/coop", "s3:s3.amazonaws.com/bucket/coop"),
        ("s3:http://AKIAKEY:secret@minio:9000/b", "s3:http://AKIAKEY:***@minio:9000/b"),
        ("sftp:alice@host:/srv/restic", "sftp:alice@host:/srv/restic"),
        ("sftp:alice:pw@host:/srv", "sftp:alice:***@host:/srv"),
        ("sftp://bob:pw@host//r", "sftp://bob:***@host//r"),
        ("sftp://bob@host//r", "sftp://bob@host//r"),
        ("https://host/repo?token=abc#x", "https://host/repo?token=***#x"),
        ("/var/backups/restic", "/var/backups/restic"),
        ("b2:bucket:path", "b2:bucket:path"),
        ("rclone:remote:path", "rclone:remote:path"),
        ("", ""),
    ],
)
def test_redact_url_table(repository: str, shown: str) -> None:
    assert redact_url(repository) == shown


def test_short_logs_are_shown_whole() -> None:
    assert log_excerpt("a\nb\n") == ("a\nb", None)


def test_long_logs_show_their_last_lines_and_say_so() -> None:
    text = "\n".join(f"line {n}" for n in range(2000))
    shown, note = log_excerpt(text)
    assert shown.splitlines()[-1] == "line 1999"
    assert len(shown.splitlines()) == redact.SHOW_LINES
    assert note == (
        f"showing the last {redact.SHOW_LINES} of 2000 lines; full log attached as a file"
    )


def test_wide_lines_are_cut_to_one_message() -> None:
    text = "\n".join(("x" * 15_000) + str(n) for n in range(20))
    shown, note = log_excerpt(text)
    assert len(shown) <= redact.SHOW_CHARS
    assert shown.endswith("19")
    assert shown.startswith("…")
    assert note is not None
    assert "last 1 of 20 lines" in note


def test_the_file_keeps_the_newest_bytes_and_says_what_was_left_out() -> None:
    assert log_file("small") == b"small"
    big = "old\n" + "n" * redact.FILE_LIMIT
    data = log_file(big)
    assert data.startswith(b"[coopbot: the first 4 bytes of this log were left out]\n")
    assert data.endswith(b"n" * 100)
    assert b"old" not in data
