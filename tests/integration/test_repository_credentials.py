"""A repository string that carries credentials (`rest:http://user:password@host/`)
never reaches the room, the log or the audit: real restic against a REST server on
127.0.0.1 that wants exactly those credentials, and the real Backups behind `!restore`
and `!backups`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.app import build_restic
from bot.config import BackupsConfig
from bot.features.backups import Backups
from tests.fakes import FakeApps, FakeSwarm, swap_services
from tests.harness.restserver import rest_server
from tests.unit.conftest import make_bot  # noqa: F401 - the fixture
from tests.unit.helpers import OPERATOR, BotFactory, chat_of, drain, message
from tests.unit.test_backups import env_of, svc

# An @ in the password: the old mask stopped at the first @ and showed the rest.
PASSWORD = "pw@Tr0ub4dor-3"


async def test_restore_without_snapshots_never_shows_the_password(
    make_bot: BotFactory,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with rest_server(tmp_path / "served", "coop", PASSWORD) as port:
        repository = f"rest:http://coop:{PASSWORD}@127.0.0.1:{port}/"
        (tmp_path / "restic-password").write_text("repo secret\n")
        config = BackupsConfig.model_validate(
            {
                "repository": repository,
                "password_file": str(tmp_path / "restic-password"),
                "volumes_root": str(tmp_path / "volumes"),
            }
        )
        restic = build_restic(config, tmp_path)
        await restic.init()
        assert (tmp_path / "served" / "config").is_file()  # restic really talked to it
        bot = make_bot()
        apps = FakeApps({"default": FakeSwarm()})
        apps.envs.append(env_of("a.test"))
        apps.swarms["default"].stacks_of["a_test"] = [
            svc(labels={"backupbot.backup": "true"}, stack="a_test")
        ]
        backups = Backups(config, apps, bot.store, restic, data_dir=tmp_path / "data")  # type: ignore[arg-type]
        swap_services(bot.services, apps=apps, backups=backups)
        shown = []
        for body in ("!restore a.test", "!snapshots a.test", "!backups"):
            msg = message(body, OPERATOR)
            await bot.dispatcher.handle(msg)
            await drain(bot)
            chat = chat_of(bot)
            shown += [chat.shown(s.event_id) for s in chat.sent if s.reply_to == msg.event_id]
    restore = shown[0]
    assert "a.test has no snapshots in" in restore
    assert f"rest:http://coop:***@127.0.0.1:{port}/" in restore
    everything = "\n".join(shown) + "\n".join(r.getMessage() for r in caplog.records)
    everything += "\n".join(str(row) for row in bot.store.audit_log(limit=50))
    assert PASSWORD not in everything
