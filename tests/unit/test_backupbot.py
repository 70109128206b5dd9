from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.ops.backupbot import BackupSpec, VolumeRule, backup_specs, volume_paths

ROOT = Path("/var/lib/docker/volumes")


def spec(**kw: object) -> BackupSpec:
    fields: dict[str, object] = {
        "service": "app",
        "pre_hook": None,
        "post_hook": None,
        "restore_pre_hook": None,
        "restore_post_hook": None,
        "skipped": (),
        "limited": (),
        "deprecated_paths": (),
        "warnings": (),
    }
    fields.update(kw)
    return BackupSpec(**fields)  # type: ignore[arg-type]


def test_every_label() -> None:
    [s] = backup_specs(
        {
            "app": {
                "backupbot.backup": "true",
                "backupbot.backup.pre-hook": "pg_dump -f /tmp/db.sql",
                "backupbot.backup.post-hook": "rm -f /tmp/db.sql",
                "backupbot.restore.pre-hook": "true",
                "backupbot.restore.post-hook": " psql -f /tmp/db.sql ",
                "backupbot.backup.volumes.cache": "false",
                "backupbot.backup.volumes.data.path": "uploads, db.sql,,uploads",
                "backupbot.backup.volumes.config": "true",
                "coop-cloud.example_com.version": "1.0.0+1",
            }
        }
    )
    assert s == spec(
        pre_hook="pg_dump -f /tmp/db.sql",
        post_hook="rm -f /tmp/db.sql",
        restore_pre_hook="true",
        restore_post_hook="psql -f /tmp/db.sql",
        skipped=("cache",),
        limited=(VolumeRule("data", ("uploads", "db.sql")),),
    )


@pytest.mark.parametrize("value", ["true", "True", "TRUE", " true "])
def test_backup_true_any_case(value: str) -> None:
    assert [s.service for s in backup_specs({"app": {"backupbot.backup": value}})] == ["app"]


@pytest.mark.parametrize("value", ["false", "False", "", "yes", "1"])
def test_backup_not_true_is_ignored(value: str) -> None:
    assert backup_specs({"app": {"backupbot.backup": value}}) == []


@pytest.mark.parametrize("value", ["false", "False", "FALSE"])
def test_volume_false_any_case(value: str) -> None:
    [s] = backup_specs({"app": {"backupbot.backup": "True", "backupbot.backup.volumes.x": value}})
    assert s.skipped == ("x",)
    assert s.warnings == ()


def test_several_services_in_order_and_unlabelled_ignored() -> None:
    specs = backup_specs(
        {
            "web": {"backupbot.backup": "true", "backupbot.backup.pre-hook": "a"},
            "proxy": {"traefik.enable": "true"},
            "db": {"backupbot.backup": "True", "backupbot.backup.volumes.logs": "false"},
        }
    )
    assert [(s.service, s.pre_hook, s.skipped) for s in specs] == [
        ("web", "a", ()),
        ("db", None, ("logs",)),
    ]


def test_none_labelled() -> None:
    assert backup_specs({}) == []
    assert backup_specs({"app": {}, "db": {"backupbot.backup.pre-hook": "x"}}) == []


def test_empty_hook_is_none() -> None:
    [s] = backup_specs({"app": {"backupbot.backup": "true", "backupbot.backup.pre-hook": "  "}})
    assert s.pre_hook is None


def test_deprecated_path_accepted_and_flagged() -> None:
    [s] = backup_specs(
        {"app": {"backupbot.backup": "true", "backupbot.backup.path": "/var/lib/a,/etc/b"}}
    )
    assert s.deprecated_paths == ("/var/lib/a", "/etc/b")
    assert s.warnings == (
        "app: backupbot.backup.path is deprecated: use backupbot.backup.volumes.<vol>.path",
    )


def test_odd_labels_warn() -> None:
    [s] = backup_specs(
        {
            "app": {
                "backupbot.backup": "true",
                "backupbot.backup.prehook": "typo",
                "backupbot.backup.volumes.a": "maybe",
                "backupbot.backup.volumes.b.path": " , ",
                "backupbot.backup.volumes.c": "false",
                "backupbot.backup.volumes.c.path": "x",
            }
        }
    )
    assert s.skipped == ("c",)
    assert s.limited == (VolumeRule("c", ("x",)),)
    text = "\n".join(s.warnings)
    assert "unknown label backupbot.backup.prehook" in text
    assert "backupbot.backup.volumes.a='maybe'" in text
    assert "backupbot.backup.volumes.b.path names no path" in text
    assert "volume c is both skipped and limited: it is skipped" in text


def test_volume_paths_whole_volumes() -> None:
    s = spec()
    assert volume_paths("example_com", ROOT, ["data", "config", "data"], s) == [
        ROOT / "example_com_data/_data",
        ROOT / "example_com_config/_data",
    ]


def test_volume_paths_limited_and_skipped() -> None:
    [s] = backup_specs(
        {
            "app": {
                "backupbot.backup": "true",
                "backupbot.backup.volumes.cache": "false",
                "backupbot.backup.volumes.data.path": "uploads,./db/dump.sql,uploads/",
                "backupbot.backup.volumes.gone.path": "x",
            }
        }
    )
    assert volume_paths("s", ROOT, ["data", "cache", "config"], s) == [
        ROOT / "s_data/_data/uploads",
        ROOT / "s_data/_data/db/dump.sql",
        ROOT / "s_config/_data",
    ]


def test_volume_paths_ignore_deprecated_paths() -> None:
    s = spec(deprecated_paths=("/var/lib/a",))
    assert volume_paths("s", ROOT, ["data"], s) == [ROOT / "s_data/_data"]


@pytest.mark.parametrize("bad", ["../other", "a/../../b", "/etc", "..", "a/.."])
def test_path_escapes_refused(bad: str) -> None:
    s = spec(limited=(VolumeRule("data", ("ok", bad)),))
    with pytest.raises(ValueError, match=r"backupbot\.backup\.volumes\.data\.path"):
        volume_paths("s", ROOT, ["data"], s)


@pytest.mark.parametrize(("stack", "volume"), [("s", "../x"), ("s", "a/b"), ("", "x"), ("..", "")])
def test_bad_volume_names_refused(stack: str, volume: str) -> None:
    with pytest.raises(ValueError, match="not a valid docker volume name"):
        volume_paths(stack, ROOT, [volume], spec())


_segment = st.sampled_from(["..", ".", "", "a", "b.c", "/", "//", "-", "_data", "x y", "\\"])
_path = st.lists(_segment, max_size=6).map("/".join)
_valid = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,6}", fullmatch=True)
_name = st.one_of(
    _valid, _valid, st.sampled_from(["..", ".", "a/../..", "a/b"]), st.text(max_size=8)
)


@settings(max_examples=500, deadline=None)
@given(
    stack=_name,
    volumes=st.lists(_name, max_size=4),
    limits=st.lists(st.tuples(st.integers(0, 3), st.lists(_path, max_size=3)), max_size=4),
    skipped=st.lists(_name, max_size=2).map(tuple),
)
def test_volume_paths_never_leave_volumes_root(
    stack: str,
    volumes: list[str],
    limits: list[tuple[int, list[str]]],
    skipped: tuple[str, ...],
) -> None:
    # Rules name the listed volumes (by index) so that their paths are really used.
    rules = [(volumes[i % len(volumes)] if volumes else "data", p) for i, p in limits]
    limited = tuple(VolumeRule(v, tuple(p)) for v, p in rules)
    s = spec(skipped=skipped, limited=limited)
    try:
        paths = volume_paths(stack, ROOT, volumes, s)
    except ValueError:
        return
    for path in paths:
        normal = Path(os.path.normpath(path))
        assert normal.is_relative_to(ROOT)
        rel = normal.relative_to(ROOT).parts
        assert len(rel) >= 2
        assert rel[1] == "_data"
        assert rel[0] in {f"{stack}_{v}" for v in volumes if v not in skipped}
