"""`coopbot check`'s Matrix probe: the homeserver answers, the credential works, room
aliases resolve, and the bot's device is cross-signed. Every request is bounded, so
the check ends even when the homeserver does not answer."""

from __future__ import annotations

from collections.abc import Callable

from nio import (
    AsyncClient,
    AsyncClientConfig,
    LoginResponse,
    RoomResolveAliasError,
    WhoamiError,
)

from bot.config import MatrixConfig
from bot.core.chat import Membership
from bot.ops.matrix_errors import unreachable_message, why_refused
from bot.ops.matrix_identity import CrossSigningError, probe_devices, query_keys
from bot.ops.matrix_rooms import RoomReadError, room_members

PROBE_TIMEOUT = 10.0  # seconds for one request of the check
# True: ok, False: a failure, None: a warning (the bot runs, but something will not work).
Result = tuple[bool | None, str]
# What to say about a room's joined members (the approval quorum): warnings, if any.
RoomJudge = Callable[[str, dict[str, Membership]], list[str]]


async def probe(matrix: MatrixConfig, judge: RoomJudge | None = None) -> list[Result]:
    """For `coopbot check`: the homeserver answers, the credential works (a password
    login uses a throwaway device, logged out again at once), room aliases resolve,
    and `judge` says what it finds about each configured room's members."""
    results: list[Result] = []
    # Bounded requests: nio retries a refused connection forever by default
    # ("Timed out, sleeping for 60s"), which is exactly what a check must not do.
    client = AsyncClient(
        matrix.homeserver,
        matrix.user_id,
        config=AsyncClientConfig(max_timeouts=1, request_timeout=PROBE_TIMEOUT),
    )
    try:
        try:
            await client.discovery_info()  # any answer at all means reachable
            versions = await client.send("GET", "/_matrix/client/versions")
            reachable = versions.status == 200
        except Exception as exc:
            why = unreachable_message(exc, matrix.homeserver)
            results.append((False, f"homeserver {matrix.homeserver} is unreachable: {why}"))
            return results
        if not reachable:
            results.append((False, f"homeserver {matrix.homeserver} answered {versions.status}"))
            return results
        results.append((True, f"homeserver {matrix.homeserver} answers"))
        if matrix.access_token is not None:
            client.access_token = matrix.access_token.get_secret_value()
            who = await client.whoami()
            ok = not isinstance(who, WhoamiError) and who.user_id == matrix.user_id
            results.append(
                (ok, f"access token {'works' if ok else 'was refused'} for {matrix.user_id}")
            )
            if ok and not isinstance(who, WhoamiError) and who.device_id:
                results.append(await _probe_cross_signing(client, matrix, who.device_id))
            if ok and judge is not None:
                results += await _probe_rooms(client, matrix, judge)
        else:
            assert matrix.password is not None
            # A throwaway device, logged out again at once.
            login = await client.login(matrix.password.get_secret_value(), "coopbot check")
            ok = isinstance(login, LoginResponse)
            results.append(
                (
                    ok,
                    f"password login as {matrix.user_id} "
                    + ("works" if ok else f"failed: {_refused(login)}"),
                )
            )
            if ok:
                results.append(await _probe_cross_signing(client, matrix, None))
                if judge is not None:  # while the throwaway device may still read
                    results += await _probe_rooms(client, matrix, judge)
                await client.logout()
                client.access_token = login.access_token  # logout cleared it; not needed further
        for ref in matrix.room_refs:
            if ref.startswith("#"):
                resolved = await client.room_resolve_alias(ref)
                ok = not isinstance(resolved, RoomResolveAliasError)
                results.append(
                    (ok, f"room alias {ref} " + ("resolves" if ok else "does not resolve"))
                )
    finally:
        await client.close()
    return results


async def _probe_cross_signing(
    client: AsyncClient, matrix: MatrixConfig, device_id: str | None
) -> tuple[bool, str]:
    if not (matrix.encryption and matrix.cross_signing):
        return True, "cross-signing is off (matrix.encryption or matrix.cross_signing)"
    try:
        query = await query_keys(client, matrix.user_id)
    except CrossSigningError as exc:
        return False, str(exc)
    return probe_devices(query, matrix.user_id, device_id, matrix.device_name)


async def _probe_rooms(client: AsyncClient, matrix: MatrixConfig, judge: RoomJudge) -> list[Result]:
    results: list[Result] = []
    for ref in matrix.room_refs:
        try:
            members = await room_members(client, ref)
        except RoomReadError as exc:  # not joined yet: the bot joins when it starts
            results.append((None, f"{exc}, so its members' votes were not counted"))
            continue
        results += [(None, warning) for warning in judge(ref, members)]
    return results


def _refused(answer: object) -> str:
    """A Matrix error answer (nio's ErrorResponse) as a sentence."""
    return why_refused(
        getattr(answer, "status_code", None),
        str(getattr(answer, "message", "")),
        getattr(answer, "retry_after_ms", None),
    )
