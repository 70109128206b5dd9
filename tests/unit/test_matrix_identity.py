"""bot/ops/matrix_identity.py against a homeserver in memory: what happens when the
server wants the password, when the bot has none, and when the server's keys for the
bot's device are not the device's own."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bot.ops.crosssign import CrossSigningKeys, b64encode, verify_json
from bot.ops.matrix_identity import Identity

USER, DEVICE, PASSWORD = "@coopbot:example.org", "BOTDEVICE", "secret"
DEVICE_ED25519 = b64encode(bytes(range(32)))


class Response:
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status, self._body = status, body

    async def json(self, content_type: str | None = None) -> dict[str, Any]:
        return self._body


class FakeHomeserver:
    """Just the three endpoints, with Synapse's rule: a first identity needs no auth
    (MSC3967), replacing one needs the password."""

    def __init__(self) -> None:
        self.device: dict[str, Any] = {
            "user_id": USER,
            "device_id": DEVICE,
            "keys": {f"ed25519:{DEVICE}": DEVICE_ED25519},
        }
        self.cross_signing: dict[str, Any] = {}
        self.requests: list[str] = []

    async def send(self, method: str, path: str, data: str, headers: dict[str, str]) -> Response:
        body = json.loads(data)
        self.requests.append(path.rsplit("/", 1)[-1] if "auth" not in body else "upload+auth")
        if path.endswith("/keys/query"):
            return Response(
                200,
                {
                    "device_keys": {USER: {DEVICE: self.device}},
                    **{f"{k}s": {USER: v} for k, v in self.cross_signing.items()},
                },
            )
        if path.endswith("/keys/device_signing/upload"):
            if self.cross_signing and body.get("auth", {}).get("password") != PASSWORD:
                flows = [{"stages": ["m.login.password"]}]
                return Response(401, {"flows": flows, "session": "S"})
            body.pop("auth", None)
            self.cross_signing = body
            return Response(200, {})
        if path.endswith("/keys/signatures/upload"):
            self.device = body[USER][DEVICE]
            return Response(200, {"failures": {}})
        raise AssertionError(path)


def identity(
    server: FakeHomeserver, tmp_path: Path, password: str | None = PASSWORD, **options: Any
) -> Identity:
    olm = SimpleNamespace(account=SimpleNamespace(identity_keys={"ed25519": DEVICE_ED25519}))
    client = SimpleNamespace(
        user_id=USER,
        device_id=DEVICE,
        access_token="token",
        should_upload_keys=False,
        olm=olm,
        send=server.send,
    )
    return Identity(client, tmp_path, password=password, **options)


async def test_first_start_uploads_without_auth_signs_and_keeps_the_keys_private(
    tmp_path: Path,
) -> None:
    server = FakeHomeserver()
    trust = await identity(server, tmp_path, password=None).ensure()
    assert trust is not None
    assert trust.signed
    assert "upload+auth" not in server.requests
    keys = CrossSigningKeys.from_json((tmp_path / "cross_signing.json").read_text(), USER)
    assert verify_json(server.device, USER, keys.self_signing_public)
    assert stat.S_IMODE((tmp_path / "cross_signing.json").stat().st_mode) == 0o600


async def test_a_second_start_changes_nothing(tmp_path: Path) -> None:
    server = FakeHomeserver()
    await identity(server, tmp_path).ensure()
    server.requests.clear()
    trust = await identity(server, tmp_path).ensure()
    assert trust is not None
    assert trust.signed
    assert server.requests == ["query"]


async def test_replacing_an_identity_uses_the_password(tmp_path: Path) -> None:
    server = FakeHomeserver()
    (tmp_path / "old").mkdir()
    await identity(server, tmp_path / "old").ensure()
    (tmp_path / "new").mkdir()
    trust = await identity(server, tmp_path / "new").ensure()
    assert trust is not None
    assert trust.signed
    assert "upload+auth" in server.requests


async def test_a_token_only_bot_says_it_needs_the_password_once(tmp_path: Path) -> None:
    server = FakeHomeserver()
    (tmp_path / "old").mkdir()
    await identity(server, tmp_path / "old").ensure()
    (tmp_path / "new").mkdir()
    bot = identity(server, tmp_path / "new", password=None)
    assert await bot.ensure() is None
    (problem,) = bot.problems()
    assert problem.startswith(f"device {DEVICE} is not cross-signed: ")
    assert "start it once with matrix.password_file" in problem


async def test_keys_that_are_not_this_device_are_not_signed(tmp_path: Path) -> None:
    server = FakeHomeserver()
    server.device["keys"][f"ed25519:{DEVICE}"] = b64encode(bytes(32))  # someone else's
    bot = identity(server, tmp_path)
    await bot.ensure()
    (problem,) = bot.problems()
    assert "are not this device's" in problem
    assert "signatures" not in server.device


async def test_the_recovery_key_file_wins_and_is_copied_to_the_store(tmp_path: Path) -> None:
    keys = CrossSigningKeys.generate(USER)
    recovery = tmp_path / "recovery.json"
    recovery.write_text(keys.to_json())
    (tmp_path / "store").mkdir()
    server = FakeHomeserver()
    trust = await identity(server, tmp_path / "store", recovery_key_file=recovery).ensure()
    assert trust is not None
    assert trust.master == keys.master_public
    assert (tmp_path / "store" / "cross_signing.json").read_text() == keys.to_json()


@pytest.mark.parametrize("content", ["{}", "not json", None])
async def test_a_bad_or_missing_recovery_file_is_a_problem_not_a_new_identity(
    tmp_path: Path, content: str | None
) -> None:
    recovery = tmp_path / "recovery.json"
    if content is not None:
        recovery.write_text(content)
    (tmp_path / "store").mkdir()
    server = FakeHomeserver()
    bot = identity(server, tmp_path / "store", recovery_key_file=recovery)
    await bot.ensure()
    (problem,) = bot.problems()
    assert str(recovery) in problem
    assert server.cross_signing == {}
    assert not (tmp_path / "store" / "cross_signing.json").exists()
