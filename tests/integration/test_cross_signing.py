"""The bot cross-signs its device on a real Synapse. The chain that /keys/query
returns is checked here with PyNaCl directly, not with bot/ops/crosssign.py: a bug
shared by signer and checker must not make the test pass."""

from __future__ import annotations

import pathlib
import shutil
import stat
from typing import Any

import canonicaljson
import pytest
from nacl.signing import VerifyKey

from bot.ops.matrix import MatrixChat
from bot.ops.matrix_check import probe
from tests.harness.bot import BotRunner
from tests.harness.coop import Coop, make_coop
from tests.harness.member import Member, MemberFactory
from tests.harness.synapse import Synapse


def _unb64(text: str) -> bytes:
    import base64

    return base64.b64decode(text + "=" * (-len(text) % 4))


def _verify(obj: dict[str, Any], user_id: str, key_id: str, public: str) -> None:
    """PyNaCl raises BadSignatureError unless obj carries a valid signature."""
    body = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    signature = obj["signatures"][user_id][f"ed25519:{key_id}"]
    VerifyKey(_unb64(public)).verify(canonicaljson.encode_canonical_json(body), _unb64(signature))


def _single_key(key_json: dict[str, Any]) -> str:
    (public,) = key_json["keys"].values()
    return str(public)


async def signed_chain(member: Member, user_id: str, device_id: str) -> str:
    """Check master -> self-signing -> device as another member sees it; return the
    master public key."""
    query = await member.keys_query(user_id)
    master_json = query["master_keys"][user_id]
    ssk_json = query["self_signing_keys"][user_id]
    device = query["device_keys"][user_id][device_id]
    master, ssk = _single_key(master_json), _single_key(ssk_json)
    assert master_json["usage"] == ["master"]
    assert ssk_json["usage"] == ["self_signing"]
    _verify(ssk_json, user_id, master, master)
    _verify(device, user_id, ssk, ssk)
    # and the device's own signature still holds, by the key it was created with
    _verify(device, user_id, device_id, device["keys"][f"ed25519:{device_id}"])
    return master


@pytest.fixture
async def coop(synapse: Synapse, make_member: MemberFactory, tmp_path: pathlib.Path) -> Coop:
    return await make_coop(synapse, make_member, tmp_path)


async def started(runner: BotRunner) -> MatrixChat:
    bot = await runner.start()
    assert isinstance(bot.chat, MatrixChat)
    return bot.chat


async def test_the_bot_device_is_cross_signed_and_the_keys_kept_private(coop: Coop) -> None:
    runner = coop.runner()
    try:
        chat = await started(runner)
        device_id = chat.client.device_id
        master = await signed_chain(coop.alice, coop.bot_id, device_id)
        assert chat.problems() == []
        key_file = coop.data_dir / "e2ee" / "cross_signing.json"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert runner.config.matrix is not None
        results = await probe(runner.config.matrix)
        assert (True, f"device {device_id} is cross-signed, as Element requires") in results
    finally:
        await runner.stop()
    # A restart with the same data folder keeps device and identity, and signs nothing new.
    runner = coop.runner()
    try:
        chat = await started(runner)
        assert chat.client.device_id == device_id
        assert await signed_chain(coop.alice, coop.bot_id, device_id) == master
    finally:
        await runner.stop()


async def test_a_lost_data_folder_with_the_recovery_key_keeps_the_identity(
    coop: Coop, tmp_path: pathlib.Path
) -> None:
    runner = coop.runner()
    try:
        chat = await started(runner)
        first_device = chat.client.device_id
        master = await signed_chain(coop.alice, coop.bot_id, first_device)
    finally:
        await runner.stop()
    recovery = tmp_path / "safe" / "coopbot-recovery.json"
    recovery.parent.mkdir()
    shutil.copy(coop.data_dir / "e2ee" / "cross_signing.json", recovery)
    shutil.rmtree(coop.data_dir)

    runner = coop.runner(recovery_key_file=str(recovery))
    try:
        chat = await started(runner)
        assert chat.client.device_id != first_device
        assert await signed_chain(coop.alice, coop.bot_id, chat.client.device_id) == master
        assert chat.problems() == []
    finally:
        await runner.stop()


async def test_a_lost_data_folder_without_it_makes_a_new_identity_with_the_password(
    coop: Coop,
) -> None:
    # Replacing cross-signing keys needs user-interactive auth: this is the password path.
    runner = coop.runner()
    try:
        chat = await started(runner)
        master = await signed_chain(coop.alice, coop.bot_id, chat.client.device_id)
    finally:
        await runner.stop()
    shutil.rmtree(coop.data_dir)
    runner = coop.runner()
    try:
        chat = await started(runner)
        new_master = await signed_chain(coop.alice, coop.bot_id, chat.client.device_id)
        assert new_master != master
    finally:
        await runner.stop()


async def test_check_and_the_bot_report_an_unsigned_device(coop: Coop) -> None:
    runner = coop.runner(cross_signing=False)
    try:
        chat = await started(runner)
        query = await coop.alice.keys_query(coop.bot_id)
        assert coop.bot_id not in query.get("master_keys", {})
        assert chat.problems() == []  # off on purpose: not this bot's problem to report
    finally:
        await runner.stop()
    checked = coop.runner()  # the same account as `coopbot check` sees it, switch on
    assert checked.config.matrix is not None
    results = await probe(checked.config.matrix)
    failed = [text for ok, text in results if not ok]
    assert failed == [f"cross-signing: {coop.bot_id} has no cross-signing identity (no master key)"]


async def test_an_unreadable_recovery_key_file_is_reported_not_replaced(
    coop: Coop, tmp_path: pathlib.Path
) -> None:
    runner = coop.runner(recovery_key_file=str(tmp_path / "missing.json"))
    try:
        chat = await started(runner)
        (problem,) = chat.problems()
        assert "missing.json" in problem
        assert "is not cross-signed" in problem
    finally:
        await runner.stop()
