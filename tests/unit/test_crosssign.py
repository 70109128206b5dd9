"""bot/ops/crosssign.py: key JSON, signatures checked by an independent Ed25519
(PyNaCl), the key file format, and the chain check on /keys/query answers."""

from __future__ import annotations

import json
from typing import Any

import canonicaljson
import pytest
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from bot.ops.crosssign import (
    FORMAT,
    CrossSigningKeys,
    KeyFileError,
    b64decode,
    b64encode,
    canonical,
    device_trust,
    public_key_of,
    sign_json,
    verify_json,
)

USER = "@coopbot:example.org"
DEVICE = "BOTDEVICE"


def nacl_verify(obj: dict[str, Any], user_id: str, public: str, key_id: str = "") -> None:
    """Raises unless obj holds a valid signature by `public` (no code of the bot).
    Cross-signing keys are named by their public key, devices by their id."""
    signature = obj["signatures"][user_id]["ed25519:" + (key_id or public)]
    body = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    VerifyKey(b64decode(public)).verify(
        canonicaljson.encode_canonical_json(body), b64decode(signature)
    )


def device_keys(device_id: str = DEVICE) -> tuple[dict[str, Any], SigningKey]:
    """A device's keys, self-signed by its own Ed25519 key, as a client uploads them."""
    key = SigningKey.generate()
    ed = b64encode(bytes(key.verify_key))
    keys: dict[str, Any] = {
        "user_id": USER,
        "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {f"ed25519:{device_id}": ed, f"curve25519:{device_id}": "c" * 43},
    }
    signature = key.sign(canonicaljson.encode_canonical_json(keys)).signature
    keys["signatures"] = {USER: {f"ed25519:{device_id}": b64encode(signature)}}
    return keys, key


def query_for(keys: CrossSigningKeys, device: dict[str, Any]) -> dict[str, Any]:
    upload = keys.upload_body()
    return {
        "device_keys": {USER: {device["device_id"]: device}},
        "master_keys": {USER: upload["master_key"]},
        "self_signing_keys": {USER: upload["self_signing_key"]},
    }


def test_base64_is_unpadded_and_round_trips() -> None:
    for size in range(6):
        data = bytes(range(size))
        assert "=" not in b64encode(data)
        assert b64decode(b64encode(data)) == data


def test_canonical_json_leaves_out_signatures_and_unsigned_and_sorts() -> None:
    obj = {"b": 1, "a": "é", "signatures": {"x": {}}, "unsigned": {"y": 1}}
    assert canonical(obj) == '{"a":"é","b":1}'.encode()


def test_public_key_matches_nacl() -> None:
    seed = bytes(range(32))
    assert public_key_of(seed) == b64encode(bytes(SigningKey(seed).verify_key))


def test_signature_verifies_with_nacl_and_keeps_other_signatures() -> None:
    seed = bytes(32)
    obj: dict[str, Any] = {"user_id": USER, "signatures": {USER: {"ed25519:OTHER": "sig"}}}
    signed = sign_json(obj, USER, seed)
    nacl_verify(signed, USER, public_key_of(seed))
    assert signed["signatures"][USER]["ed25519:OTHER"] == "sig"
    assert obj["signatures"][USER] == {"ed25519:OTHER": "sig"}  # the input is not changed
    assert verify_json(signed, USER, public_key_of(seed))


def test_a_changed_object_or_another_key_does_not_verify() -> None:
    seed = bytes(32)
    signed = sign_json({"a": 1}, USER, seed)
    assert not verify_json({**signed, "a": 2}, USER, public_key_of(seed))
    assert not verify_json(signed, USER, public_key_of(bytes([1]) * 32))
    assert not verify_json(signed, "@other:example.org", public_key_of(seed))
    broken = json.loads(json.dumps(signed))
    broken["signatures"][USER]["ed25519:" + public_key_of(seed)] = "not base64!"
    assert not verify_json(broken, USER, public_key_of(seed))


def test_upload_body_chains_to_the_master_key() -> None:
    keys = CrossSigningKeys.generate(USER)
    body = keys.upload_body()
    master = body["master_key"]
    assert master["usage"] == ["master"]
    assert master["keys"] == {f"ed25519:{keys.master_public}": keys.master_public}
    assert "signatures" not in master
    for name, usage in (("self_signing_key", "self_signing"), ("user_signing_key", "user_signing")):
        assert body[name]["usage"] == [usage]
        assert body[name]["user_id"] == USER
        nacl_verify(body[name], USER, keys.master_public)


def test_device_signature_keeps_the_device_own_and_verifies_with_nacl() -> None:
    keys = CrossSigningKeys.generate(USER)
    device, device_key = device_keys()
    signed = keys.sign_device({**device, "unsigned": {"device_display_name": "coopbot"}})
    assert "unsigned" not in signed
    nacl_verify(signed, USER, keys.self_signing_public)
    # the device's own signature is still there and still valid
    nacl_verify(signed, USER, b64encode(bytes(device_key.verify_key)), key_id=DEVICE)


def test_key_file_round_trips_and_names_its_account() -> None:
    keys = CrossSigningKeys.generate(USER)
    text = keys.to_json()
    data = json.loads(text)
    assert data["format"] == FORMAT
    assert data["user_id"] == USER
    assert CrossSigningKeys.from_json(text, USER) == keys


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "other"}, "format"),
        ({"user_id": "@else:example.org"}, "not @coopbot"),
        ({"master": None}, '"master" is missing'),
        ({"self_signing": "!!"}, '"self_signing" is not base64'),
        ({"user_signing": b64encode(bytes(16))}, "must be 32 bytes"),
    ],
)
def test_bad_key_files_are_refused_saying_why(change: dict[str, Any], message: str) -> None:
    data = json.loads(CrossSigningKeys.generate(USER).to_json())
    data.update(change)
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(KeyFileError, match=message):
        CrossSigningKeys.from_json(json.dumps(data), USER)


def test_not_json_is_refused() -> None:
    with pytest.raises(KeyFileError, match="not JSON"):
        CrossSigningKeys.from_json("master: abc", USER)


def test_a_signed_device_has_a_whole_chain() -> None:
    keys = CrossSigningKeys.generate(USER)
    device, _ = device_keys()
    trust = device_trust(query_for(keys, keys.sign_device(device)), USER, DEVICE)
    assert trust.signed
    assert trust.master == keys.master_public


def test_an_unsigned_device_is_a_problem() -> None:
    keys = CrossSigningKeys.generate(USER)
    device, _ = device_keys()
    trust = device_trust(query_for(keys, device), USER, DEVICE)
    assert not trust.signed
    assert trust.problems == (f"device {DEVICE} is not signed by the self-signing key",)


def test_a_device_signed_by_another_identity_is_a_problem() -> None:
    ours, theirs = CrossSigningKeys.generate(USER), CrossSigningKeys.generate(USER)
    device, _ = device_keys()
    trust = device_trust(query_for(ours, theirs.sign_device(device)), USER, DEVICE)
    assert not trust.signed


def test_a_self_signing_key_not_signed_by_the_master_is_a_problem() -> None:
    ours, theirs = CrossSigningKeys.generate(USER), CrossSigningKeys.generate(USER)
    device, _ = device_keys()
    query = query_for(ours, ours.sign_device(device))
    query["master_keys"] = query_for(theirs, device)["master_keys"]
    trust = device_trust(query, USER, DEVICE)
    assert trust.master == theirs.master_public
    assert trust.problems == (f"the self-signing key of {USER} is not signed by its master key",)


def test_no_identity_and_no_device_keys_are_problems() -> None:
    assert device_trust({}, USER, DEVICE).problems == (
        f"{USER} has no cross-signing identity (no master key)",
    )
    keys = CrossSigningKeys.generate(USER)
    device, _ = device_keys("OTHER")
    trust = device_trust(query_for(keys, device), USER, DEVICE)
    assert trust.problems == (f"device {DEVICE} has not uploaded its keys",)


def test_a_tampered_device_no_longer_verifies() -> None:
    keys = CrossSigningKeys.generate(USER)
    device, _ = device_keys()
    signed = keys.sign_device(device)
    signed["keys"][f"curve25519:{DEVICE}"] = "d" * 43
    assert not device_trust(query_for(keys, signed), USER, DEVICE).signed
    with pytest.raises(BadSignatureError):
        nacl_verify(signed, USER, keys.self_signing_public)
