"""bot/ops/explain.causes: the one walk of an exception's chain that Swarm._why and the
Matrix adapter's sentences both read."""

from __future__ import annotations

import aiohttp

from bot.ops.explain import causes


def test_follows_cause_context_args_and_os_error() -> None:
    refused = ConnectionRefusedError(111, "refused")
    in_args = OSError("wrapped", refused)  # urllib3 keeps the socket error in args
    missing = FileNotFoundError(2, "no socket")
    top = RuntimeError("top")
    top.__cause__ = in_args
    top.__context__ = missing
    found = causes(top)
    assert found[0] is top
    assert {id(e) for e in found} == {id(e) for e in (top, in_args, refused, missing)}


def test_aiohttp_os_error_is_found() -> None:
    refused = ConnectionRefusedError(111, "Connect call failed")
    key = aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None)
    exc = aiohttp.ClientConnectorError(key, refused)
    assert any(isinstance(c, ConnectionRefusedError) for c in causes(exc))


def test_a_cycle_ends_and_each_is_listed_once() -> None:
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    assert causes(a) == [a, b]
    assert len(causes(ValueError(*[ValueError(str(i)) for i in range(50)]), limit=5)) == 5
