"""Cross-signing, the pure part: the bot's three Ed25519 keys, the JSON the homeserver
wants for them, signatures over canonical JSON, and checking a signature chain.

Why the bot needs it: Element's clients (MSC4153) neither send room keys to, nor show
messages from, a device its owner has not cross-signed. The chain they check is
master key -> self-signing key -> device. No I/O here: bot/ops/matrix_identity.py
does the requests. Ed25519 comes from `cryptography`, canonical JSON from
`canonicaljson` (the Matrix spec's rules); nothing cryptographic is written by hand.

The key file (data_dir/e2ee/cross_signing.json, and the same format for
`matrix.recovery_key_file`) is JSON:

    {"format": "coopbot-cross-signing/1", "user_id": "@bot:example.org",
     "master": "<seed>", "self_signing": "<seed>", "user_signing": "<seed>"}

where each seed is the 32-byte Ed25519 private key in unpadded standard base64 (the
encoding Matrix uses for keys). A copy of that file kept somewhere safe is the
recovery key: a bot whose data folder was lost signs its new device with it and keeps
the identity that members have already verified.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import canonicaljson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

FORMAT = "coopbot-cross-signing/1"
ROLES = ("master", "self_signing", "user_signing")
SEED_BYTES = 32

JsonDict = dict[str, Any]


class KeyFileError(ValueError):
    """A key file that is not in the format above (the message says what is wrong)."""


def b64encode(data: bytes) -> str:
    """Unpadded standard base64, as Matrix writes keys and signatures."""
    return base64.b64encode(data).decode().rstrip("=")


def b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def canonical(obj: Mapping[str, Any]) -> bytes:
    """What a Matrix signature covers: the object without `signatures` and `unsigned`,
    as canonical JSON."""
    body = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    return bytes(canonicaljson.encode_canonical_json(body))


def public_key_of(seed: bytes) -> str:
    key = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def sign_json(obj: Mapping[str, Any], user_id: str, seed: bytes) -> JsonDict:
    """A copy of `obj` with this key's signature added beside any it already has."""
    key_id = "ed25519:" + public_key_of(seed)
    signature = b64encode(Ed25519PrivateKey.from_private_bytes(seed).sign(canonical(obj)))
    signed = copy.deepcopy(dict(obj))
    signed.setdefault("signatures", {}).setdefault(user_id, {})[key_id] = signature
    return signed


def verify_json(obj: Mapping[str, Any], user_id: str, public_key: str) -> bool:
    """True when `obj` carries a valid signature by `public_key` under `user_id`."""
    signature = obj.get("signatures", {}).get(user_id, {}).get("ed25519:" + public_key)
    if not isinstance(signature, str):
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(b64decode(public_key))
        key.verify(b64decode(signature), canonical(obj))
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def only_key(key_json: Mapping[str, Any]) -> str | None:
    """The public key of a cross-signing key object (they hold exactly one)."""
    keys = key_json.get("keys") or {}
    found = [v for k, v in keys.items() if k.startswith("ed25519:") and isinstance(v, str)]
    return found[0] if len(found) == 1 else None


@dataclass(frozen=True)
class CrossSigningKeys:
    """The three private seeds of one user's cross-signing identity."""

    user_id: str
    master: bytes
    self_signing: bytes
    user_signing: bytes

    @classmethod
    def generate(cls, user_id: str) -> CrossSigningKeys:
        return cls(user_id, *(secrets.token_bytes(SEED_BYTES) for _ in ROLES))

    # -- the key file --------------------------------------------------------------
    def to_json(self) -> str:
        data = {"format": FORMAT, "user_id": self.user_id}
        data.update({role: b64encode(getattr(self, role)) for role in ROLES})
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, user_id: str) -> CrossSigningKeys:
        """Read a key file, refusing one made for another account."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeyFileError(f"not JSON ({exc.msg}, line {exc.lineno})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise KeyFileError(f'"format" must be "{FORMAT}"')
        if data.get("user_id") != user_id:
            raise KeyFileError(f"the keys are for {data.get('user_id')}, not {user_id}")
        seeds: list[bytes] = []
        for role in ROLES:
            try:
                seed = b64decode(str(data[role]))
            except KeyError:
                raise KeyFileError(f'"{role}" is missing') from None
            except (binascii.Error, ValueError):
                raise KeyFileError(f'"{role}" is not base64') from None
            if len(seed) != SEED_BYTES:
                raise KeyFileError(f'"{role}" must be {SEED_BYTES} bytes, not {len(seed)}')
            seeds.append(seed)
        return cls(user_id, *seeds)

    # -- public parts ----------------------------------------------------------------
    @property
    def master_public(self) -> str:
        return public_key_of(self.master)

    @property
    def self_signing_public(self) -> str:
        return public_key_of(self.self_signing)

    def _key_json(self, role: str) -> JsonDict:
        public = public_key_of(getattr(self, role))
        return {"user_id": self.user_id, "usage": [role], "keys": {f"ed25519:{public}": public}}

    def upload_body(self) -> JsonDict:
        """The body of /keys/device_signing/upload (without `auth`): the master key,
        and the self-signing and user-signing keys signed by it."""
        return {
            "master_key": self._key_json("master"),
            "self_signing_key": sign_json(
                self._key_json("self_signing"), self.user_id, self.master
            ),
            "user_signing_key": sign_json(
                self._key_json("user_signing"), self.user_id, self.master
            ),
        }

    def sign_device(self, device_keys: Mapping[str, Any]) -> JsonDict:
        """The device's keys (as /keys/query returned them) signed by the
        self-signing key, for /keys/signatures/upload."""
        body = {k: v for k, v in device_keys.items() if k != "unsigned"}
        return sign_json(body, self.user_id, self.self_signing)


@dataclass(frozen=True)
class Trust:
    """What /keys/query says about one device of a user."""

    master: str | None  # the master public key the server holds
    problems: tuple[str, ...]  # empty when master -> self-signing -> device holds

    @property
    def signed(self) -> bool:
        return not self.problems


def device_trust(query: Mapping[str, Any], user_id: str, device_id: str) -> Trust:
    """Check the chain master -> self-signing key -> device in a /keys/query answer."""
    master_json = (query.get("master_keys") or {}).get(user_id)
    ssk_json = (query.get("self_signing_keys") or {}).get(user_id)
    device = ((query.get("device_keys") or {}).get(user_id) or {}).get(device_id)
    master = only_key(master_json) if master_json else None
    if master is None:
        return Trust(None, (f"{user_id} has no cross-signing identity (no master key)",))
    problems: list[str] = []
    ssk_json = ssk_json or {}
    ssk = only_key(ssk_json)
    if ssk is None or "self_signing" not in ssk_json.get("usage", []):
        problems.append(f"{user_id} has no self-signing key")
    elif not verify_json(ssk_json, user_id, master):
        problems.append(f"the self-signing key of {user_id} is not signed by its master key")
    if device is None:
        problems.append(f"device {device_id} has not uploaded its keys")
    elif ssk is not None and not verify_json(device, user_id, ssk):
        problems.append(f"device {device_id} is not signed by the self-signing key")
    return Trust(master, tuple(problems))
