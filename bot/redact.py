"""Secrets kept out of what the bot shows: masked `KEY=value` pairs in app logs, and
repository strings with their credentials removed.

Both run on text the bot does not control (an app's log lines, a config value), so
both are linear in the length of that text by construction: every repetition in the
patterns is possessive (`++`, `*+`, Python 3.11), so the regex engine never gives
characters back and retries, and the scanner moves forward on every step. A log line
of 15 kB that is one long word costs one pass, not one pass per character (the old
pattern, `[A-Z0-9_]*(?:KEY|…)[A-Z0-9_]*\\s*[=:]`, backtracked over the word at every
position and froze the event loop for minutes on `!logs --tail 2000`).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode

# A candidate key: a whole word (from a word boundary) followed by `=` or `:`.
# Possessive everywhere: nothing here can backtrack.
KEY_PATTERN = r"\b([A-Za-z0-9_]++)(\s*+)([=:])(\s*+)"
_KEY = re.compile(KEY_PATTERN)
# The words that make a key secret, anywhere in it (DB_PASSWORD, api_key, TOKEN2).
_SECRET_WORDS = ("pass", "secret", "token", "key", "private")
VALUE_PATTERN = r"\S++"
_VALUE = re.compile(VALUE_PATTERN)
MASK = "****"


def secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def mask_secrets(text: str, *, steps: list[int] | None = None) -> str:
    """`KEY=value` and `KEY: value` pairs whose key sounds secret show `KEY=****`.

    One forward scan: each search starts where the last match ended, so every character
    is looked at a bounded number of times. `steps`, when given, gets the number of
    searches made (the tests check it grows with the number of pairs, not their size)."""
    out: list[str] = []
    pos = 0
    searches = 0
    end = len(text)
    while pos < end:
        searches += 1
        found = _KEY.search(text, pos)
        if found is None:
            break
        key, sep, after = found.group(1), found.group(3), found.end()
        value = _VALUE.match(text, after)
        if value is None or not secret_key(key):
            # Not a secret pair: keep it as it is, and look again right after the key
            # (the value may itself be `OTHER_TOKEN=x`).
            out.append(text[pos : found.end(1)])
            pos = found.end(1)
            continue
        out.append(text[pos : found.start()])
        out.append(f"{key}{sep}{MASK}")
        pos = value.end()
    out.append(text[pos:])
    if steps is not None:
        steps.append(searches)
    return "".join(out)


# Secret-sounding query parameters (S3 presigned URLs, Azure SAS, ?token=).
_SECRET_PARAMS = frozenset(
    {
        "passwd",
        "sig",
        "signature",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "sas",
        "sv",
        "auth",
        "credential",
        "credentials",
    }
)
# Where a login name is a user, not a token: those keep the user and lose a password.
_LOGIN_SCHEMES = ("sftp", "ssh", "ftp")
REDACTED = "***"


def _secret_param(name: str) -> bool:
    return secret_key(name) or name.lower() in _SECRET_PARAMS


def _userinfo(scheme: str, userinfo: str) -> str:
    """`user:password` keeps the user; a lone name is kept for login schemes (sftp's
    user) and hidden elsewhere (`https://TOKEN@host` puts a token there)."""
    user, colon, _ = userinfo.partition(":")
    if colon:
        return f"{user}:{REDACTED}"
    return userinfo if scheme.lower().rsplit(":", 1)[-1] in _LOGIN_SCHEMES else REDACTED


def _authority(text: str) -> str:
    """Every `scheme://userinfo@host` in `text` with the userinfo cleaned; plain
    `find`s moving forward, so linear."""
    out: list[str] = []
    pos = 0
    while (mark := text.find("://", pos)) >= 0:
        start = mark + 3
        stop = start
        while stop < len(text) and text[stop] not in "/?#" and not text[stop].isspace():
            stop += 1
        at = text.rfind("@", start, stop)
        scheme = text[pos:mark].rsplit(" ", 1)[-1]
        if at >= 0:
            out.append(text[pos:start] + _userinfo(scheme, text[start:at]) + "@")
            out.append(text[at + 1 : stop])
        else:
            out.append(text[pos:stop])
        pos = stop
    out.append(text[pos:])
    return "".join(out)


def scrub_credentials(text: str) -> str:
    """Free text (an error message, a log line) with the password of every
    `scheme://user:password@host` in it hidden; see redact_url for a repository string."""
    return _authority(text)


def redact_url(repository: str) -> str:
    """A repository string (restic's `rest:`, `s3:`, `sftp:`, `b2:`, `azure:`, rclone
    or a plain URL) with any password in `user:password@` and any secret query
    parameter replaced by `***`, for rooms, logs, audit rows and metrics labels. A local
    path comes back as it is."""
    text = _authority(repository)
    if "://" not in text and text.lower().startswith("sftp:") and "@" in text:
        # sftp:user@host:/path names a login; sftp:user:pw@host would carry a password.
        head, at, tail = text[5:].rpartition("@")
        text = f"sftp:{_userinfo('sftp', head)}{at}{tail}"
    base, question, rest = text.partition("?")
    if question:
        query, hash_, fragment = rest.partition("#")
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_secret_param(k) for k, _ in pairs):
            cleaned = [(k, REDACTED if _secret_param(k) else v) for k, v in pairs]
            text = f"{base}?{urlencode(cleaned, safe='*')}{hash_}{fragment}"
    return text


# What one `!logs` answer shows at most; the whole masked log goes along as a file.
SHOW_LINES = 40
SHOW_CHARS = 3500
# The file's size at most (Synapse's default upload limit is 50 MB; 2000 lines of 15 kB
# from each of several services would pass it): the last bytes are kept.
FILE_LIMIT = 8 * 1024 * 1024


def log_excerpt(text: str) -> tuple[str, str | None]:
    """The last lines of `text` that fit one message, and the note to show under them
    when that is not all of it (None when it is)."""
    lines = text.rstrip().splitlines()
    shown: list[str] = []
    size = 0
    for line in reversed(lines[-SHOW_LINES:]):
        if size + len(line) + 1 > SHOW_CHARS:
            if not shown:  # one line longer than a message: its end
                shown.append("…" + line[-(SHOW_CHARS - 1) :])
            break
        shown.append(line)
        size += len(line) + 1
    shown.reverse()
    if len(shown) == len(lines) and not (shown and shown[0].startswith("…")):
        return "\n".join(shown), None
    return "\n".join(shown), (
        f"showing the last {len(shown)} of {len(lines)} lines; full log attached as a file"
    )


def log_file(text: str) -> bytes:
    """The masked log as a file, at most FILE_LIMIT bytes (the newest ones, with a first
    line saying what was left out)."""
    data = text.encode()
    if len(data) <= FILE_LIMIT:
        return data
    dropped = len(data) - FILE_LIMIT
    head = f"[coopbot: the first {dropped} bytes of this log were left out]\n".encode()
    return head + data[dropped:]


def prepare_log(raw: str) -> tuple[str, str, str | None]:
    """(the masked log, the excerpt one message shows, the note or None): the whole of
    `!logs`' text work, in one call so it can run in one thread (tens of MB at
    `--tail 2000`: splitting the lines alone would hold the event loop)."""
    text = mask_secrets(raw)
    if not text.strip():
        return text, "", None
    shown, note = log_excerpt(text)
    return text, shown, note
