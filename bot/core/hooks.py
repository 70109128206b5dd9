"""Webhooks: what a signed Forgejo/Gitea push and an Alertmanager notification say.
Pure checks and parsers; the routes are in web.py.

Forgejo and Gitea sign the raw body: `X-Forgejo-Signature` / `X-Gitea-Signature`
is the hex HMAC-SHA256 of it with the hook's secret, and `X-*-Delivery` names the
delivery (remembered, so a replay is refused). A push of tags has
`ref: refs/tags/<tag>` and `created: true`."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

ZERO = "0" * 40


def signature_ok(secret: bytes, body: bytes, given: str | None) -> bool:
    if not given:
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given.strip().lower().removeprefix("sha256="))


def header(headers: Mapping[str, str], name: str) -> str | None:
    """`X-Forgejo-<name>`, else `X-Gitea-<name>` (Forgejo sends both)."""
    return headers.get(f"X-Forgejo-{name}") or headers.get(f"X-Gitea-{name}")


def repo_names(payload: Mapping[str, Any]) -> list[str]:
    """The names a recipe folder could have: the repository's name, and the last part
    of its clone URL without .git."""
    repo = payload.get("repository") or {}
    names = []
    for url in (repo.get("clone_url"), repo.get("ssh_url"), repo.get("html_url")):
        if isinstance(url, str) and url:
            names.append(url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1].removesuffix(".git"))
    if isinstance(repo.get("name"), str):
        names.append(repo["name"])
    return list(dict.fromkeys(n for n in names if n))


def new_tags(event: str | None, payload: Mapping[str, Any]) -> list[str]:
    """The tags a push (or a tag `create` event) brings."""
    ref = str(payload.get("ref") or "")
    if event == "create" and payload.get("ref_type") == "tag":
        return [ref.removeprefix("refs/tags/")] if ref else []
    if event not in (None, "push") or not ref.startswith("refs/tags/"):
        return []
    created = payload.get("created") is True or (
        payload.get("before") == ZERO and payload.get("after") not in (None, ZERO)
    )
    return [ref.removeprefix("refs/tags/")] if created else []


def alerts(payload: Mapping[str, Any]) -> list[tuple[str, str, str | None]]:
    """(server, alert name, summary while firing or None when resolved) per alert."""
    found = []
    for alert in payload.get("alerts") or []:
        if not isinstance(alert, Mapping):
            continue
        labels = alert.get("labels") or {}
        notes = alert.get("annotations") or {}
        name = str(labels.get("alertname") or "alert")
        if labels.get("instance"):
            name += f"@{labels['instance']}"
        server = str(labels.get("server") or "alertmanager")
        firing = alert.get("status") == "firing"
        text = notes.get("summary") or notes.get("description") or name
        found.append((server, name, f"alert **{name}**: {text}" if firing else None))
    return found
