"""restic's failures that classify_failure (json.py: locked, wrong password, no
repository) does not name, as sentences with a next step, shaped like Swarm._why;
restic's own lines go to the log under an incident id. The wordings, produced here with
Debian's restic 0.14:

- a restore onto a full disk: `ignoring error for /x: write /t/x: no space left on
  device` then `Fatal: There were 2 errors` (exit 1);
- a `rest:` server that is down: `Fatal: unable to open config file: client.Head: Head
  "http://u:***@127.0.0.1:1/config": dial tcp 127.0.0.1:1: connect: connection
  refused` followed by `Is there a repository at the following location?`, which
  classify_failure would take for a missing repository: so these rules come first;
- name lookups (`dial tcp: lookup h: no such host`), timeouts (`i/o timeout`), TLS
  (`x509: certificate`, `tls: `), and a server that refuses the credentials
  (`unexpected HTTP response (401)`, `403 Forbidden`, S3's `Access Denied`)."""

from __future__ import annotations

_NO_SPACE = ("no space left on device", "disk quota exceeded")
_DNS = ("no such host", "server misbehaving", "temporary failure in name resolution")
_UNREACHABLE = (
    "connection refused",
    "i/o timeout",
    "no route to host",
    "network is unreachable",
    "connection reset by peer",
    "context deadline exceeded",
)
_TLS = ("x509: ", "tls: ", "certificate signed by unknown authority")
_REFUSED = (
    "(401)",
    "401 unauthorized",
    "(403)",
    "403 forbidden",
    "access denied",
    "invalidaccesskeyid",
    "signaturedoesnotmatch",
)


def explain(stderr: str, repository: str) -> tuple[str, str] | None:
    """(kind, sentence) for restic's stderr, or None when it is not one of these.
    `repository` is the repository as it may be shown (no credentials)."""
    low = stderr.lower()
    if any(s in low for s in _NO_SPACE):
        return "no_space", (
            "a disk is full (no space left on device): free space where restic writes (a "
            "restore's target, the repository, or restic's cache in the bot's data_dir) "
            "and try again"
        )
    if any(s in low for s in _DNS):
        return "unreachable", (
            f"the repository's host name in {repository} does not resolve (DNS): check "
            "backups.repository and the bot's DNS"
        )
    if any(s in low for s in _TLS):
        return "unreachable", (
            f"the TLS connection to {repository} failed (its certificate is not trusted "
            "or does not match): check the server's certificate"
        )
    if any(s in low for s in _UNREACHABLE):
        return "unreachable", (
            f"the repository at {repository} cannot be reached (the server refused or did "
            "not answer): is it up, and reachable from the bot? `coopbot check` tests it"
        )
    if any(s in low for s in _REFUSED):
        return "refused", (
            f"the server of {repository} refused the bot's credentials: check the user "
            "and password in backups.repository, or the keys in backups.env_file"
        )
    return None
