"""bot/config.py: one validated config; every problem named by its key path."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.config import load_config, parse_config, parse_duration
from bot.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def matrix(**overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "homeserver": "https://hs.test",
        "user_id": "@bot:hs.test",
        "rooms": ["!ops:hs.test"],
        "password": "pw",
    }
    section.update(overrides)
    return {key: value for key, value in section.items() if value is not None}


def problems(data: Any, base: Path | None = None) -> list[str]:
    """The problem lines of the ConfigError that parse_config must raise."""
    with pytest.raises(ConfigError) as caught:
        parse_config(data, base)
    message = str(caught.value)
    if message.startswith("invalid configuration:"):
        return [line.strip() for line in message.splitlines()[1:]]
    return [message]


# -- valid configs ---------------------------------------------------------------


def test_empty_config_is_the_console_defaults(tmp_path: Path) -> None:
    config = parse_config(None, tmp_path)
    assert config.matrix is None
    assert config.jobs.timeout == 1800.0
    assert config.access.admin_power == 100
    assert config.log_level == "INFO"


def test_minimal_matrix_config(tmp_path: Path) -> None:
    config = parse_config({"matrix": matrix()}, tmp_path)
    assert config.matrix is not None
    assert config.matrix.user_id == "@bot:hs.test"
    assert config.matrix.room_refs == ["!ops:hs.test"]
    assert config.matrix.password is not None
    assert config.matrix.password.get_secret_value() == "pw"
    assert config.matrix.prefix == "!"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("1h", 3600), ("2d", 172800), ("1w", 604800), ("250ms", 0.25),
     ("1.5m", 90), (" 7 ", 7), (45, 45), (0.5, 0.5)],
)  # fmt: skip
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
    config = parse_config({"jobs": {"timeout": text}})
    assert config.jobs.timeout == pytest.approx(seconds)


# -- each kind of problem, with its key path -------------------------------------------


def test_unknown_keys_at_top_level_and_nested() -> None:
    found = problems({"bogus": 1, "jobs": {"timout": "1m"}, "matrix": matrix(nope=True)})
    assert sorted(found) == [
        "bogus: unknown key",
        "jobs.timout: unknown key",
        "matrix.nope: unknown key",
    ]


def test_wrong_type() -> None:
    (found,) = problems({"access": {"admin_power": "lots"}})
    assert found.startswith("access.admin_power: ")
    assert "integer" in found


def test_wrong_type_of_a_whole_section() -> None:
    (found,) = problems({"jobs": ["timeout", "1m"]})
    assert found.startswith("jobs: ")


def test_missing_required_key() -> None:
    assert problems({"matrix": matrix(rooms=None)}) == ["matrix.rooms: required key is missing"]


def test_invalid_values_name_their_key() -> None:
    found = problems(
        {
            "matrix": matrix(user_id="bot", rooms=["ops"], homeserver="hs.test"),
            "web": {"listen": "nowhere"},
            "log_level": "LOUD",
        }
    )
    keys = sorted(line.split(":")[0] for line in found)
    assert keys == [
        "log_level",
        "matrix.homeserver",
        "matrix.rooms.0.room",
        "matrix.user_id",
        "web.listen",
    ]


@pytest.mark.parametrize("bad", ["soon", "10 minutes", "-5s", "0", 0, True, "1y"])
def test_bad_duration(bad: Any) -> None:
    (found,) = problems({"jobs": {"lock_wait": bad}})
    assert found.startswith("jobs.lock_wait: ")
    assert "duration" in found


def test_not_a_number_is_not_a_duration() -> None:
    # YAML's `.nan` is a float. A NaN timeout would reach asyncio.timeout() and
    # the event loop's timer heap, where every comparison with it is false.
    (found,) = problems({"jobs": {"timeout": math.nan}})
    assert found.startswith("jobs.timeout: ")


def test_operator_power_above_admin_power() -> None:
    (found,) = problems({"access": {"operator_power": 100, "admin_power": 50}})
    assert found.startswith("access: ")
    assert "operator_power" in found


def test_two_credentials_at_once() -> None:
    (found,) = problems({"matrix": matrix(access_token="tok-4242")})
    assert found.startswith("matrix: ")
    assert "exactly one of" in found
    assert "found: password, access_token" in found
    assert "tok-4242" not in found


def test_no_credential() -> None:
    (found,) = problems({"matrix": matrix(password=None)})
    assert found.startswith("matrix: ")
    assert "give exactly one of password, password_file, access_token" in found


def test_missing_secret_file_names_the_path(tmp_path: Path) -> None:
    (found,) = problems({"matrix": matrix(password=None, password_file="nope.txt")}, tmp_path)
    assert found.startswith("matrix: ")
    assert str(tmp_path / "nope.txt") in found
    assert "cannot read secret file" in found


def test_empty_secret_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("  \n")
    (found,) = problems({"matrix": matrix(password=None, access_token_file="token")}, tmp_path)
    assert found == f"matrix: secret file {tmp_path / 'token'} is empty"


def test_leftover_placeholders_name_their_key_path() -> None:
    found = problems(
        {
            "matrix": matrix(homeserver="https://matrix.example.org", password="CHANGE_ME"),
            "access": {"admins": ["@alice:hs.test", "@bob:example.org"]},
        }
    )
    assert sorted(line.split(":")[0] for line in found) == [
        "access.admins.1",
        "matrix.homeserver",
        "matrix.password",
    ]
    assert all("leftover placeholder" in line for line in found)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    found = problems(
        {
            "bogus": 1,
            "matrix": matrix(password=None, password_file="missing"),
            "jobs": {"timeout": "soon", "keep_finished": -1},
            "access": {"admins": ["CHANGE_ME"]},
        },
        tmp_path,
    )
    keys = sorted(line.split(":")[0] for line in found)
    assert keys == [
        "access.admins.0",  # the placeholder
        "access.admins.0",  # and not a user id
        "bogus",
        "jobs.keep_finished",
        "jobs.timeout",
        "matrix",
    ]


@pytest.mark.parametrize("data", [[1, 2], "matrix: yes", 42])
def test_top_level_must_be_a_mapping(data: Any) -> None:
    assert problems(data) == ["config: the top level must be a mapping of keys"]


# -- paths ------------------------------------------------------------------------------


def test_relative_data_dir_and_secret_files_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    (folder / "secrets").mkdir(parents=True)
    (folder / "secrets" / "pw").write_text("s3cret-from-file\n")
    (folder / "config.yaml").write_text(
        "data_dir: state\nmatrix:\n"
        "  homeserver: https://hs.test\n  user_id: '@bot:hs.test'\n  rooms: ['!ops:hs.test']\n"
        "  password_file: secrets/pw\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("COOPBOT_CONFIG", raising=False)

    config = load_config("../etc/config.yaml")

    assert config.data_dir == folder / "state"
    assert config.matrix is not None
    assert config.matrix.password is not None
    assert config.matrix.password.get_secret_value() == "s3cret-from-file"


def test_absolute_data_dir_is_kept(tmp_path: Path) -> None:
    assert parse_config({"data_dir": "/var/lib/coopbot"}, tmp_path).data_dir == Path(
        "/var/lib/coopbot"
    )


def test_default_data_dir_is_in_the_config_folder_too(tmp_path: Path) -> None:
    # A config without data_dir, started from another working directory (a
    # service unit), must still find its state next to the config file.
    assert parse_config({}, tmp_path).data_dir == tmp_path / "data"


def test_config_file_named_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bot.yaml").write_text("log_level: DEBUG\n")
    monkeypatch.setenv("COOPBOT_CONFIG", str(tmp_path / "bot.yaml"))
    assert load_config().log_level == "DEBUG"


def test_missing_named_config_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COOPBOT_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="does not exist") as caught:
        load_config(str(tmp_path / "nope.yaml"))
    assert str(tmp_path / "nope.yaml") in str(caught.value)


def test_missing_default_config_file_means_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COOPBOT_CONFIG", raising=False)
    config = load_config()
    assert config.matrix is None
    assert config.data_dir.resolve() == tmp_path.resolve() / "data"


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("matrix:\n  rooms: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as caught:
        load_config(str(path))
    assert str(path) in str(caught.value)


def test_yaml_problems_are_reported_with_key_paths(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("jobs:\n  timeout: forever\n")
    with pytest.raises(ConfigError, match=r"jobs\.timeout: 'forever' is not a duration"):
        load_config(str(path))


def test_empty_yaml_file_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("# nothing yet\n")
    assert load_config(str(path)).matrix is None


# -- secrets ---------------------------------------------------------------------------


def test_secrets_never_appear_in_repr_or_str(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tok-from-file-4242")
    with_password = parse_config({"matrix": matrix(password="hunter2-pw")}, tmp_path)
    with_token = parse_config(
        {"matrix": matrix(password=None, access_token_file="token")}, tmp_path
    )
    for config, secret in ((with_password, "hunter2-pw"), (with_token, "tok-from-file-4242")):
        assert config.matrix is not None
        shown = [
            repr(config),
            str(config),
            repr(config.matrix),
            str(config.matrix),
            config.model_dump_json(),
            str(config.model_dump()),
        ]
        for text in shown:
            assert secret not in text


def test_secrets_never_appear_in_config_errors() -> None:
    message = "\n".join(problems({"matrix": matrix(password="hunter2-pw", nope=1)}))
    assert "matrix.nope" in message
    assert "hunter2-pw" not in message


def test_config_is_frozen() -> None:
    config = parse_config({})
    with pytest.raises(ValueError, match="frozen"):
        config.log_level = "DEBUG"


# -- config.example.yaml ----------------------------------------------------------------


def test_example_config_is_valid_apart_from_its_placeholders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    example = REPO / "config.example.yaml"
    assert example.exists(), "config.example.yaml is missing from the repository root"
    monkeypatch.chdir(REPO)
    with pytest.raises(ConfigError) as caught:
        load_config(str(example))
    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid configuration:"
    found = [line.strip() for line in lines[1:]]
    assert found, "the example should contain placeholders to replace"
    not_placeholders = [line for line in found if "leftover placeholder" not in line]
    assert not_placeholders == []


def test_example_backups_block_is_valid_once_uncommented(tmp_path: Path) -> None:
    """The backups: block ships commented out (it needs a real password file)."""
    text = (REPO / "config.example.yaml").read_text().splitlines()
    start = text.index("# backups:")
    end = text.index("", start)
    uncommented = [line.removeprefix("# ") for line in text[start:end]]
    data = yaml.safe_load("\n".join(uncommented))
    password = tmp_path / "restic_password"
    password.write_text("s3cret\n")
    data["backups"]["password_file"] = str(password)
    config = parse_config(data)
    assert config.backups is not None
    assert config.backups.schedule == "30 3 * * *"
    assert config.backups.retention.monthly == 6
    assert config.backups.max_age == 36 * 3600


# -- backups, upgrades, timezone ---------------------------------------------------------


def backups(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    (tmp_path / "restic-password").write_text("secret\n")
    section: dict[str, Any] = {"repository": "sftp:backup@host:/srv/restic"}
    section["password_file"] = "restic-password"
    section.update(overrides)
    return {"backups": section}


def test_no_backups_section_means_no_backups() -> None:
    assert parse_config({}).backups is None


def test_backups_defaults_and_paths_resolved_against_the_config_folder(tmp_path: Path) -> None:
    config = parse_config(backups(tmp_path), tmp_path)
    b = config.backups
    assert b is not None
    assert b.repository == "sftp:backup@host:/srv/restic"
    assert b.password_file == tmp_path / "restic-password"
    assert b.env_file is None
    assert b.volumes_root == Path("/var/lib/docker/volumes")
    assert (b.schedule, b.check_schedule, b.drill_schedule) == (
        "30 3 * * *",
        "0 5 * * 0",
        "0 6 1 * *",
    )
    assert (b.retention.daily, b.retention.weekly, b.retention.monthly) == (7, 4, 6)
    assert b.check_read_data_subset == "5%"
    assert b.max_age == 36 * 3600.0
    assert b.settle_timeout == 600.0
    assert b.restic == "restic"


def test_backups_every_key(tmp_path: Path) -> None:
    (tmp_path / "s3.env").write_text("AWS_ACCESS_KEY_ID=x\n")
    config = parse_config(
        backups(
            tmp_path,
            env_file="s3.env",
            volumes_root="/mnt/volumes",
            schedule="0   2 * * 1-5",
            check_schedule=None,
            drill_schedule="0 4 1 */3 *",
            retention={"daily": 0, "weekly": 0, "monthly": 12},
            check_read_data_subset="1/20",
            max_age="2d",
            settle_timeout="90s",
            restic="/usr/local/bin/restic",
        ),
        tmp_path,
    )
    b = config.backups
    assert b is not None
    assert b.env_file == tmp_path / "s3.env"
    assert b.volumes_root == Path("/mnt/volumes")
    assert b.schedule == "0 2 * * 1-5"  # whitespace normalised
    assert b.check_schedule is None
    assert b.drill_schedule == "0 4 1 */3 *"
    assert (b.retention.daily, b.retention.weekly, b.retention.monthly) == (0, 0, 12)
    assert b.check_read_data_subset == "1/20"
    assert (b.max_age, b.settle_timeout) == (2 * 86400.0, 90.0)
    assert b.restic == "/usr/local/bin/restic"


@pytest.mark.parametrize(
    ("cron", "why"),
    [
        ("every night", "Wrong number of fields; got 2, expected 5"),
        ("30 3 * *", "Wrong number of fields; got 4, expected 5"),
        (
            "61 3 * * *",
            "Error validating expression '61': the last value (61) is higher than the "
            "maximum value (59)",
        ),
        (5, "Wrong number of fields; got 1, expected 5"),
    ],
)
def test_a_bad_cron_line_names_its_key_and_the_problem(tmp_path: Path, cron: Any, why: str) -> None:
    (found,) = problems(backups(tmp_path, schedule=cron), tmp_path)
    assert found == f"backups.schedule: {cron!r} is not a cron line such as '30 3 * * *': {why}"


def test_bad_cron_lines_of_every_schedule_are_reported_together(tmp_path: Path) -> None:
    found = problems(
        {
            **backups(tmp_path, check_schedule="weekly", drill_schedule="0 6 32 * *"),
            "upgrades": {"check_schedule": "daily"},
        },
        tmp_path,
    )
    assert sorted(line.split(":")[0] for line in found) == [
        "backups.check_schedule",
        "backups.drill_schedule",
        "upgrades.check_schedule",
    ]
    assert all("is not a cron line such as '30 3 * * *'" in line for line in found)


def test_the_backup_password_file_must_exist(tmp_path: Path) -> None:
    (found,) = problems(backups(tmp_path, password_file="nope"), tmp_path)
    assert found == (
        f"backups.password_file: cannot read secret file {tmp_path / 'nope'}: "
        "No such file or directory"
    )


def test_the_backup_password_file_must_not_be_empty(tmp_path: Path) -> None:
    (tmp_path / "blank").write_text(" \n\n")
    (found,) = problems(backups(tmp_path, password_file="blank"), tmp_path)
    assert found == f"backups.password_file: secret file {tmp_path / 'blank'} is empty"


def test_the_backup_env_file_must_exist(tmp_path: Path) -> None:
    (found,) = problems(backups(tmp_path, env_file="s3.env"), tmp_path)
    assert found == (
        f"backups.env_file: cannot read secret file {tmp_path / 's3.env'}: "
        "No such file or directory"
    )


def test_retention_must_keep_something(tmp_path: Path) -> None:
    (found,) = problems(
        backups(tmp_path, retention={"daily": 0, "weekly": 0, "monthly": 0}), tmp_path
    )
    assert found == "backups.retention: keep at least one daily, weekly or monthly snapshot"
    (found,) = problems(backups(tmp_path, retention={"daily": -1}), tmp_path)
    assert found == "backups.retention.daily: Input should be greater than or equal to 0"
    (found,) = problems(backups(tmp_path, retention={"yearly": 1}), tmp_path)
    assert found == "backups.retention.yearly: unknown key"


def test_backups_needs_a_repository_and_a_password_file(tmp_path: Path) -> None:
    assert sorted(problems({"backups": {}}, tmp_path)) == [
        "backups.password_file: required key is missing",
        "backups.repository: required key is missing",
    ]
    (found,) = problems(backups(tmp_path, repository=""), tmp_path)
    assert found.startswith("backups.repository: String should have at least 1 character")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("check_read_data_subset", "lots"),
        ("check_read_data_subset", "5"),
        ("max_age", "soon"),
        ("settle_timeout", 0),
        ("bogus", 1),
    ],
)
def test_bad_backups_values_name_their_key(tmp_path: Path, key: str, value: Any) -> None:
    (found,) = problems(backups(tmp_path, **{key: value}), tmp_path)
    assert found.startswith(f"backups.{key}: ")


def test_upgrades_defaults_and_keys() -> None:
    u = parse_config({}).upgrades
    assert (u.check_schedule, u.fetch_recipes, u.backup_first, u.auto_patch, u.concurrency) == (
        "0 9 * * *",
        True,
        True,
        False,
        8,
    )
    u = parse_config(
        {
            "upgrades": {
                "check_schedule": None,
                "fetch_recipes": False,
                "backup_first": False,
                "auto_patch": True,
                "concurrency": 64,
            }
        }
    ).upgrades
    assert (u.check_schedule, u.fetch_recipes, u.backup_first, u.auto_patch, u.concurrency) == (
        None,
        False,
        False,
        True,
        64,
    )


def test_bad_upgrades_values() -> None:
    found = problems({"upgrades": {"concurrency": 0, "auto_patch": "maybe", "bogus": 1}})
    assert sorted(found) == [
        "upgrades.auto_patch: Input should be a valid boolean, unable to interpret input",
        "upgrades.bogus: unknown key",
        "upgrades.concurrency: Input should be greater than or equal to 1",
    ]
    (only,) = problems({"upgrades": {"concurrency": 65}})
    assert only == "upgrades.concurrency: Input should be less than or equal to 64"


def test_timezone() -> None:
    assert parse_config({}).timezone is None  # the machine's
    assert parse_config({"timezone": "Europe/Berlin"}).timezone == "Europe/Berlin"
    assert parse_config({"timezone": "UTC"}).timezone == "UTC"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", "", "europe/berlin "])
def test_an_unknown_timezone_is_refused_clearly(zone: str) -> None:
    assert problems({"timezone": zone}) == [
        f"timezone: unknown timezone {zone!r}; use a name like Europe/Berlin"
    ]


def test_crontab_weekday_numbers_are_accepted_as_crontab_reads_them(tmp_path: Path) -> None:
    """7 is Sunday in crontab; APScheduler alone would refuse it."""
    config = parse_config(backups(tmp_path, check_schedule="0 5 * * 7"), tmp_path)
    assert config.backups is not None
    assert config.backups.check_schedule == "0 5 * * 7"
    (found,) = problems(backups(tmp_path, check_schedule="0 5 * * 8"), tmp_path)
    assert found == (
        "backups.check_schedule: '0 5 * * 8' is not a cron line such as '30 3 * * *': "
        "day of week '8': 0-7 (0 and 7 are Sunday)"
    )
