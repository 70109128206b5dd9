"""Incident ids: the raw text of an error goes to the log under a short random id, and
the room gets a sentence that ends with "details in the log, id 7f3a". A person acts
on the sentence; whoever reads the log finds the library's own words by the id."""

from __future__ import annotations

import logging
import secrets


def report(logger: logging.Logger, what: str, raw: str) -> str:
    """Log `raw` (already free of secrets) as `what` under a new id; returns the id."""
    ident = secrets.token_hex(2)
    logger.warning("%s (incident %s): %s", what, ident, raw)
    return ident


def note(ident: str) -> str:
    return f"details in the log, id {ident}"
