"""The bot's cross-signing identity on the homeserver: upload it once, sign the device
at every start when it is not signed yet, and say what is wrong when it cannot.

The pure part (keys, signatures, the chain check) is bot/ops/crosssign.py; this module
only makes the three requests (/keys/query, /keys/device_signing/upload with
user-interactive auth, /keys/signatures/upload) through the nio client's session.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from aiohttp import ClientError
from nio import AsyncClient

from bot.errors import CoopbotError
from bot.ops.crosssign import CrossSigningKeys, KeyFileError, Trust, device_trust

log = logging.getLogger(__name__)

KEY_FILE = "cross_signing.json"
V3 = "/_matrix/client/v3"


class CrossSigningError(CoopbotError):
    """The device could not be cross-signed; the message says what an operator can do."""


class Identity:
    """One bot account's cross-signing keys and the state of its device."""

    def __init__(
        self,
        client: AsyncClient,
        store_dir: Path,
        *,
        recovery_key_file: Path | None = None,
        password: str | None = None,
    ) -> None:
        self.client = client
        self.key_file = store_dir / KEY_FILE
        self.recovery_key_file = recovery_key_file
        self._password = password
        self.trust: Trust | None = None
        self.error: str | None = None

    def problems(self) -> list[str]:
        """Empty while the device is cross-signed (or before the first check)."""
        if self.error is not None:
            return [self.error]
        return list(self.trust.problems) if self.trust is not None else []

    async def ensure(self) -> Trust | None:
        """Sign the device if it is not; never raises (the bot still works in
        unencrypted rooms), the outcome is in `problems()` and in the log."""
        try:
            self.trust = await self._ensure()
            self.error = None
        except (CrossSigningError, ClientError, OSError, TimeoutError) as exc:
            self.error = f"device {self.client.device_id} is not cross-signed: {exc}"
            log.error("%s", self.error)
            return None
        except Exception:  # a homeserver answer of an unexpected shape: not worth a dead bot
            self.error = f"device {self.client.device_id} is not cross-signed: unexpected error"
            log.exception("%s", self.error)
            return None
        if self.trust.signed:
            log.info(
                "device %s is cross-signed (master key %s)",
                self.client.device_id,
                self.trust.master,
            )
        else:
            log.error("cross-signing: %s", "; ".join(self.trust.problems))
        return self.trust

    async def _ensure(self) -> Trust:
        client = self.client
        user_id, device_id = client.user_id, client.device_id
        keys = self._load_keys()
        query = await self.query()
        if device_id not in query.get("device_keys", {}).get(user_id, {}):
            # A new device uploads its keys after the first sync; do it now instead.
            if client.should_upload_keys:
                await client.keys_upload()
            query = await self.query()
        trust = device_trust(query, user_id, device_id)
        if trust.master != keys.master_public:
            if trust.master is not None:
                log.warning(
                    "the homeserver holds another cross-signing identity for %s (%s); "
                    "replacing it with the bot's own (%s)",
                    user_id,
                    trust.master,
                    keys.master_public,
                )
            await self._upload_identity(keys)
            query = await self.query()
            trust = device_trust(query, user_id, device_id)
        if not trust.signed and trust.master == keys.master_public:
            await self._sign_device(keys, query)
            trust = device_trust(await self.query(), user_id, device_id)
        return trust

    # -- the keys ---------------------------------------------------------------------
    def _load_keys(self) -> CrossSigningKeys:
        """The recovery key file when configured, else the store's, else new keys."""
        user_id = self.client.user_id
        source = self.recovery_key_file
        if source is None and self.key_file.exists():
            source = self.key_file
        if source is None:
            keys = CrossSigningKeys.generate(user_id)
            log.info("created the cross-signing keys of %s", user_id)
        else:
            try:
                keys = CrossSigningKeys.from_json(source.read_text(), user_id)
            except OSError as exc:
                raise CrossSigningError(f"cannot read {source}: {exc.strerror}") from None
            except KeyFileError as exc:
                raise CrossSigningError(f"{source}: {exc}") from None
        if source != self.key_file:
            self._save(keys)
        return keys

    def _save(self, keys: CrossSigningKeys) -> None:
        # Private keys: written owner-only from the start, never readable by others.
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(keys.to_json())
        os.chmod(self.key_file, 0o600)

    # -- requests ---------------------------------------------------------------------
    async def _request(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return await _post(self.client, path, body)

    async def query(self) -> dict[str, Any]:
        return await query_keys(self.client, self.client.user_id)

    async def _upload_identity(self, keys: CrossSigningKeys) -> None:
        """/keys/device_signing/upload. Synapse lets an account without cross-signing
        keys upload them once without auth (MSC3967); replacing them needs the
        password (user-interactive auth)."""
        body = keys.upload_body()
        status, data = await self._request("/keys/device_signing/upload", body)
        if status == 401 and "flows" in data:
            flows = [flow.get("stages", []) for flow in data.get("flows", [])]
            if ["m.login.password"] not in flows:
                raise CrossSigningError(
                    f"the homeserver wants {flows} to upload cross-signing keys; "
                    "only m.login.password is supported"
                )
            if self._password is None:
                raise CrossSigningError(
                    "the homeserver wants the account password to upload cross-signing keys, "
                    "and the bot logs in with an access token: start it once with "
                    "matrix.password_file instead of matrix.access_token_file (the device "
                    "is kept), then switch back"
                )
            log.info("the homeserver asks for the password (user-interactive auth)")
            body["auth"] = {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": self.client.user_id},
                "password": self._password,
                "session": data.get("session"),
            }
            status, data = await self._request("/keys/device_signing/upload", body)
        if status != 200:
            raise CrossSigningError(
                f"uploading the cross-signing keys failed: {status} "
                f"{data.get('errcode', '')} {data.get('error', '')}".rstrip()
            )
        log.info("uploaded the cross-signing keys of %s", self.client.user_id)

    async def _sign_device(self, keys: CrossSigningKeys, query: dict[str, Any]) -> None:
        user_id, device_id = self.client.user_id, self.client.device_id
        device = query.get("device_keys", {}).get(user_id, {}).get(device_id)
        if device is None:
            raise CrossSigningError(f"device {device_id} has not uploaded its keys")
        # Sign only the keys of the device this process holds: a homeserver that
        # reports other keys for our device id must not get them signed.
        ours = self.client.olm.account.identity_keys["ed25519"] if self.client.olm else None
        if device.get("keys", {}).get(f"ed25519:{device_id}") != ours:
            raise CrossSigningError(
                f"the homeserver's keys for device {device_id} are not this device's"
            )
        signed = keys.sign_device(device)
        status, data = await self._request(
            "/keys/signatures/upload", {user_id: {device_id: signed}}
        )
        failures = data.get("failures") or {}
        if status != 200 or failures:
            raise CrossSigningError(f"signing device {device_id} failed: {status} {failures}")
        log.info("signed device %s with the self-signing key", device_id)


async def _post(client: AsyncClient, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """One POST through nio's session (nio has no API for these endpoints)."""
    headers = {
        "Authorization": f"Bearer {client.access_token}",
        "Content-Type": "application/json",
    }
    response = await client.send("POST", V3 + path, json.dumps(body), headers)
    try:
        data = await response.json(content_type=None)
    except ValueError:
        data = None
    return response.status, data if isinstance(data, dict) else {}


async def query_keys(client: AsyncClient, user_id: str) -> dict[str, Any]:
    """/keys/query for one user: their devices and cross-signing keys."""
    status, data = await _post(client, "/keys/query", {"device_keys": {user_id: []}})
    if status != 200:
        raise CrossSigningError(
            f"cannot read the keys of {user_id}: {status} {data.get('errcode', '')}".rstrip()
        )
    return data


def probe_devices(
    query: dict[str, Any], user_id: str, device_id: str | None, device_name: str
) -> tuple[bool, str]:
    """For `coopbot check`: the token's device is cross-signed, or (a password check
    logs in a device of its own) every device named `device_name` is."""
    devices: dict[str, Any] = query.get("device_keys", {}).get(user_id, {})
    if device_id is not None:
        wanted = [device_id]
    else:
        wanted = [
            d
            for d, keys in devices.items()
            if (keys.get("unsigned") or {}).get("device_display_name") == device_name
        ]
    if not wanted:
        return True, f"no device named {device_name!r} yet: the bot signs its device at start"
    problems = [p for d in wanted for p in device_trust(query, user_id, d).problems]
    if problems:
        return False, "cross-signing: " + "; ".join(dict.fromkeys(problems))
    return True, f"device {', '.join(wanted)} is cross-signed, as Element requires"
