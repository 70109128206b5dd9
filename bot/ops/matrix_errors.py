"""What matrix-nio and aiohttp say when the homeserver cannot be used, as sentences
with a next step, shaped like Swarm._why; the library's text goes to the log under an
incident id. Seen here (nio 0.26, aiohttp 3.14, Synapse 1.163):

- nothing listening: `ClientConnectorError` whose `os_error` is ConnectionRefusedError
  ("Cannot connect to host 127.0.0.1:1 ssl:default [Connect call failed …]");
- a name that does not resolve: `ClientConnectorDNSError` (a gaierror inside);
- TLS: `ClientConnectorCertificateError` (an untrusted or mismatched certificate),
  `ClientConnectorSSLError` / `ClientSSLError` (e.g. https:// to a plain HTTP port:
  "[SSL] record layer failure");
- no answer in time: TimeoutError (nio's bounded request_timeout);
- answers that are errors: `M_FORBIDDEN` (a wrong password, a user not in the room),
  `M_UNKNOWN_TOKEN` (a revoked access token), `M_LIMIT_EXCEEDED` with
  `retry_after_ms` (rate limited)."""

from __future__ import annotations

import logging

import aiohttp

from bot.incident import note, report
from bot.ops.explain import causes as _causes

log = logging.getLogger(__name__)


def why_unreachable(exc: BaseException, homeserver: str) -> str:
    """The sentence for an exception from a request to `homeserver`."""
    causes = _causes(exc)
    if any(isinstance(c, aiohttp.ClientConnectorDNSError) for c in causes):
        return (
            f"the homeserver's name in {homeserver} does not resolve (DNS): check "
            "matrix.homeserver and the bot's DNS"
        )
    if any(isinstance(c, aiohttp.ClientConnectorCertificateError) for c in causes):
        return (
            f"the TLS certificate of {homeserver} is not trusted or does not match its "
            "name: check the homeserver's certificate (or its reverse proxy's)"
        )
    if any(isinstance(c, aiohttp.ClientSSLError) for c in causes):
        return (
            f"the TLS connection to {homeserver} failed: is it https on that port (or "
            "plain http)? Check matrix.homeserver's scheme and port"
        )
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return (
            f"nothing answers at {homeserver} (connection refused): is the homeserver "
            "running, and is matrix.homeserver's port right?"
        )
    if any(isinstance(c, TimeoutError) for c in causes):
        return (
            f"{homeserver} did not answer in time: is it overloaded, or is a firewall "
            "dropping the bot's connections?"
        )
    if any(isinstance(c, aiohttp.ClientConnectionError | OSError) for c in causes):
        return f"the connection to {homeserver} failed: is it reachable from the bot?"
    return f"{homeserver} could not be asked ({type(exc).__name__})"


def why_refused(status_code: str | None, message: str, retry_after_ms: int | None = None) -> str:
    """The sentence for a Matrix error answer (errcode, error text)."""
    if status_code == "M_FORBIDDEN":
        return (
            "the homeserver refused (M_FORBIDDEN): a wrong password, a deactivated user, "
            "or an action the bot may not do; check matrix.user_id and its password"
        )
    if status_code == "M_UNKNOWN_TOKEN":
        return (
            "the access token is not valid any more (M_UNKNOWN_TOKEN): log the bot in "
            "again and put the new token in matrix.access_token"
        )
    if status_code == "M_LIMIT_EXCEEDED":
        wait = f" for {retry_after_ms / 1000:g}s" if retry_after_ms else ""
        return (
            f"the homeserver is rate limiting the bot (M_LIMIT_EXCEEDED){wait}: wait, or "
            "exempt the bot's user from rate limits (Synapse's admin API "
            "override_ratelimit)"
        )
    return f"the homeserver answered {status_code or 'an error'}: {message}"


def unreachable_message(exc: BaseException, homeserver: str) -> str:
    """why_unreachable with an incident id; the exception's own text in the log."""
    ident = report(log, f"homeserver {homeserver} unreachable", f"{type(exc).__name__}: {exc}")
    return f"{why_unreachable(exc, homeserver)} ({note(ident)})"
