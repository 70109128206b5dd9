"""One typed, validated configuration. Every problem is reported with its key path.

Relative paths (data_dir, *_file) are resolved against the config file's folder,
so a service unit or a container can start the bot from any working directory.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bot.core.approvals import AUTO_PATCH, Policy, auto_patch_policy
from bot.core.cron import crontab_trigger
from bot.core.roles import Role
from bot.errors import ConfigError

DEFAULT_PATH = Path("config.yaml")
# Strings in config.example.yaml that must not survive into a real config.
PLACEHOLDERS = ("CHANGE_ME", "example.org")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any) -> float:
    """'90s', '10m', '1h', '2d' or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 10m, 1h or 2d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration such as 30s, 10m, 1h or 2d")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if math.isnan(seconds) or seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


def parse_wait(value: Any) -> float:
    """A duration that may also be 0 (no wait at all)."""
    if not isinstance(value, bool) and value in (0, "0"):
        return 0.0
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(parse_duration)]
Wait = Annotated[float, BeforeValidator(parse_wait)]  # a Duration, or 0 for none
UserId = Annotated[str, Field(pattern=r"^@[^:\s]+:\S+$")]
# Room ids of room v12+ have no server part ("!abc"); aliases always do ("#ops:server").
RoomRef = Annotated[str, Field(pattern=r"^(![^\s]+|#[^:\s]+:\S+)$")]
# The command families, named as the modules under commands/ name their CommandGroup
# (tests/unit/test_rooms.py keeps the two the same): what a room `hears`.
FamilyName = Literal[
    "apps", "approvals", "audit", "backups", "cmd", "create", "help", "incidents", "jobs",
    "nodes", "upgrade",
]  # fmt: skip
# The families whose work the bot does on its own (the schedule, the swarm watch):
# what a room takes `reports` of.
ReportName = Literal["backups", "upgrade", "incidents"]


class RoomEntry(BaseModel):
    """A room with a role: `{room: "#backups:x", hears: [backups], reports: [backups]}`.
    `hears` unset: every family; `help` is always heard. A scheduled report or alert
    goes to the first room whose `reports` names it, else to the first room."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    room: RoomRef
    hears: list[FamilyName] | None = None
    reports: list[ReportName] = []

    @model_validator(mode="before")
    @classmethod
    def _plain(cls, value: Any) -> Any:
        return {"room": value} if isinstance(value, str) else value  # a room as before


def parse_cron(value: Any) -> str:
    """A five-field crontab line, checked by the scheduler's own parser."""
    from datetime import UTC

    text = " ".join(str(value).split())
    try:
        crontab_trigger(text, UTC)
    except ValueError as e:
        raise ValueError(f"{value!r} is not a cron line such as '30 3 * * *': {e}") from None
    return text


Cron = Annotated[str, BeforeValidator(parse_cron)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _read_secret(path: Path, base: Path | None) -> SecretStr:
    path = path.expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
    if not value:
        raise ValueError(f"secret file {path} is empty")
    return SecretStr(value)


class MatrixConfig(_Section):
    homeserver: Annotated[str, Field(pattern=r"^https?://\S+$")]
    user_id: UserId
    password: SecretStr | None = None
    password_file: Path | None = None
    access_token: SecretStr | None = None
    access_token_file: Path | None = None
    device_name: str = "coopbot"
    rooms: Annotated[list[RoomEntry], Field(min_length=1)]
    prefix: Annotated[str, Field(min_length=1, max_length=8)] = "!"
    encryption: bool = True
    # Commands sent while the bot was offline run only if younger than this;
    # older ones are answered with "not run, send it again" (never silently lost).
    catchup_max_age: Duration = 600.0
    sync_timeout: Duration = 30.0
    # 429 answers retried per request before giving up; each wait is capped.
    max_rate_limit_retries: Annotated[int, Field(ge=0, le=20)] = 5
    max_rate_limit_wait: Duration = 30.0
    # The bot cross-signs its own device (Element trusts no device its owner has not
    # signed, MSC4153). Off only for tests that must show what an unsigned bot looks like.
    cross_signing: bool = True
    # A copy of data_dir/e2ee/cross_signing.json (format: bot/ops/crosssign.py): with it,
    # a bot whose data folder was lost signs its new device with the same identity.
    recovery_key_file: Path | None = None

    @property
    def room_refs(self) -> list[str]:
        """Each configured room's id or alias, in order (the first is the home room)."""
        return [entry.room for entry in self.rooms]

    @model_validator(mode="after")
    def _rooms_once(self) -> MatrixConfig:
        refs = self.room_refs
        twice = sorted({ref for ref in refs if refs.count(ref) > 1})
        if twice:  # two roles for one room would contradict each other
            raise ValueError(f"rooms: {', '.join(twice)} listed more than once")
        return self

    @model_validator(mode="after")
    def _one_credential(self, info: ValidationInfo) -> MatrixConfig:
        given = [
            name
            for name in ("password", "password_file", "access_token", "access_token_file")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of password, password_file, access_token, access_token_file"
                + (f" (found: {', '.join(given)})" if given else "")
            )
        base = (info.context or {}).get("base_dir")
        # The *_file variants are read once, here, so a missing file stops start-up.
        if self.password_file is not None:
            object.__setattr__(self, "password", _read_secret(self.password_file, base))
        if self.access_token_file is not None:
            object.__setattr__(self, "access_token", _read_secret(self.access_token_file, base))
        if self.recovery_key_file is not None:
            # Read at start, not here: it is only needed when the device must be signed.
            path = self.recovery_key_file.expanduser()
            if base is not None and not path.is_absolute():
                path = base / path
            object.__setattr__(self, "recovery_key_file", path)
        return self


class AccessConfig(_Section):
    admins: list[UserId] = []
    operators: list[UserId] = []
    # Room power levels that grant a role when the member is in neither list.
    operator_power: int = 50
    admin_power: int = 100

    @model_validator(mode="after")
    def _ordered(self) -> AccessConfig:
        if self.operator_power > self.admin_power:
            raise ValueError("operator_power must not exceed admin_power")
        return self


def _resolve_file(value: Path | None, info: ValidationInfo) -> Path | None:
    """A secret file's path against the config's folder, read once now so that a
    missing or empty file stops start-up."""
    if value is None:
        return None
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    value = value if value.is_absolute() or base is None else base / value
    _read_secret(value, None)
    return value


class ForgejoHookConfig(_Section):
    # The hook's secret (Forgejo/Gitea "Secret" field): the HMAC-SHA256 key.
    secret_file: Path

    _file = field_validator("secret_file", mode="after")(_resolve_file)


class AlertmanagerHookConfig(_Section):
    # Alertmanager's webhook_configs[].http_config.authorization credentials.
    token_file: Path

    _file = field_validator("token_file", mode="after")(_resolve_file)


class HooksConfig(_Section):
    forgejo: ForgejoHookConfig | None = None  # POST /hooks/forgejo (Gitea too)
    alertmanager: AlertmanagerHookConfig | None = None  # POST /hooks/alertmanager
    max_body: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024


class WebConfig(_Section):
    # "127.0.0.1:9100" serves /healthz and /metrics; unset means no web server.
    listen: Annotated[str, Field(pattern=r"^\S+:\d+$")] | None = None
    # /metrics then needs "Authorization: Bearer <the file's content>".
    metrics_token_file: Path | None = None
    hooks: HooksConfig = HooksConfig()  # off unless a hook is configured

    _file = field_validator("metrics_token_file", mode="after")(_resolve_file)


_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)-([01]?\d|2[0-3]):([0-5]\d)$")


def parse_quiet_hours(value: Any) -> str:
    text = str(value).replace(" ", "")
    match = _CLOCK.match(text)
    if not match or match.group(1, 2) == match.group(3, 4):
        raise ValueError(f"{value!r} is not a span of the day such as '22:00-07:00'")
    return text


class WatchConfig(_Section):
    """The swarm watch: incidents from each server's events (bot/features/watch)."""

    failures: Annotated[int, Field(ge=1)] = 3  # task failures of one service...
    window: Duration = 600.0  # ...within this long open an incident
    # An incident closes once its cause has been gone this long (no flapping).
    recover_after: Duration = 120.0
    # A service below its replicas (or paused) this long has stopped converging.
    converge_timeout: Duration = 600.0
    poll_interval: Duration = 60.0  # snapshots while the event stream is up
    fallback_interval: Duration = 15.0  # snapshots while it is down
    # Disks holding volumes: an incident past disk_percent, urgent past disk_critical.
    # Default: backups.volumes_root when there is a backups: section.
    disk_paths: list[Path] = []
    disk_percent: Annotated[float, Field(gt=0, le=100)] = 90.0
    disk_critical: Annotated[float, Field(gt=0, le=100)] = 97.0
    disk_interval: Duration = 300.0
    # "22:00-07:00" (the configured timezone): non-urgent incidents are held, then
    # sent as one digest when it ends.
    quiet_hours: Annotated[str, BeforeValidator(parse_quiet_hours)] | None = None


class PingsConfig(_Section):
    """Dead-man switches (healthchecks.io, Uptime Kuma push): per scheduled task,
    <url>/start when it starts, <url> when it succeeds, <url>/fail when it fails."""

    backup: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None
    check: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None
    drill: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None
    upgrades: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None
    # The bot itself: a success ping every bot_interval while it runs.
    bot: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None
    bot_interval: Duration = 300.0
    timeout: Duration = 10.0

    def url(self, task: str) -> str | None:
        value = getattr(self, task, None) if task in PING_TASKS else None
        return value if isinstance(value, str) else None


PING_TASKS = ("backup", "check", "drill", "upgrades", "bot")


class JobsConfig(_Section):
    timeout: Duration = 1800.0  # default time limit of one job
    lock_wait: Duration = 600.0  # how long a job waits for its app's lock
    progress_interval: Duration = 2.0  # minimum time between edits of a progress message
    keep_finished: Annotated[int, Field(ge=0)] = 20  # finished jobs shown by !jobs
    # A job that ran longer than this ends with a reply that pings the requester
    # (quicker ones end while the person still looks at the progress message).
    notify_after: Wait = 30.0
    max_active: Annotated[int, Field(ge=1)] = 20  # jobs running or queued at once
    # Commands one member may send per minute; past it they are told to slow down.
    member_rate: Annotated[int, Field(ge=1)] = 20


class ServerConfig(_Section):
    # unix:///var/run/docker.sock, ssh://user@host or tcp://host:2376
    docker_host: Annotated[str, Field(pattern=r"^(unix|ssh|tcp)://\S+$")] = (
        "unix:///var/run/docker.sock"
    )
    # Maintenance window: a crontab line whose matching minutes are the window, in the
    # configured timezone ("* 2-4 * * 6,0": Sat and Sun 02:00-04:59). Approved upgrades
    # and auto-patches of this server's apps wait for it. None: any time.
    window: Cron | None = None
    # The room this server's incidents go to (the swarm watch; a room id the bot is in);
    # None: the main room.
    room: Annotated[str, Field(pattern=r"^!\S+:\S+$")] | None = None
    # A swarm of several nodes: each worker's own docker endpoint by its hostname, for
    # the backup hooks of apps running there (`exec` does not go through a manager).
    nodes: dict[str, Annotated[str, Field(pattern=r"^(unix|ssh|tcp)://\S+$")]] = {}


RoleName = Literal["viewer", "operator", "admin"]
# The actions whose approval policy can be tuned: what the risky commands declare.
POLICY_NAMES = frozenset(
    {
        "upgrade",
        "major_upgrade",
        "rollback",
        "undeploy",
        "restore",
        "deploy_version_change",
        "confirm_urgent",  # the follow-up vote on a break-glass run
    }
)


class PolicyOverride(_Section):
    required: Annotated[int, Field(ge=1)] | None = None
    timeout: Duration | None = None
    allow_self_approval: bool | None = None
    veto: bool | None = None
    voters: RoleName | None = None
    delay: Wait | None = None
    require_reason: bool | None = None
    break_glass: bool | None = None


class ApprovalsConfig(_Section):
    required: Annotated[int, Field(ge=1)] = 2  # distinct approvals needed
    timeout: Duration = 3600.0  # proposals expire after this
    allow_self_approval: bool = False
    veto: bool = True  # one rejection from an eligible voter rejects
    voters: RoleName = "operator"  # minimum role whose votes count
    delay: Wait = 0.0  # an approved proposal waits this long; an eligible 👎 stops it
    require_reason: bool = False  # requests must give one: `!undeploy app -- why`
    break_glass: bool = False  # `!urgent ID -- why` lets one admin run it at once
    policies: dict[str, PolicyOverride] = {}

    @field_validator("policies")
    @classmethod
    def _known(cls, value: dict[str, PolicyOverride]) -> dict[str, PolicyOverride]:
        unknown = sorted(set(value) - POLICY_NAMES)
        if unknown:
            raise ValueError(
                f"unknown action {', '.join(unknown)}; known: {', '.join(sorted(POLICY_NAMES))}"
            )
        return value

    def policy(self, name: str) -> Policy:
        """The default policy with the overrides for this action applied."""
        if name == AUTO_PATCH:  # not tunable: it follows the upgrade policy
            return auto_patch_policy(self.policy("upgrade"))
        override = self.policies.get(name, PolicyOverride())
        voters = override.voters or self.voters
        return Policy(
            required=override.required or self.required,
            voters=Role[voters.upper()],
            veto=self.veto if override.veto is None else override.veto,
            allow_self_approval=(
                self.allow_self_approval
                if override.allow_self_approval is None
                else override.allow_self_approval
            ),
            timeout=override.timeout or self.timeout,
            delay=self.delay if override.delay is None else override.delay,
            require_reason=(
                self.require_reason if override.require_reason is None else override.require_reason
            ),
            break_glass=self.break_glass if override.break_glass is None else override.break_glass,
        )


class RetentionConfig(_Section):
    daily: Annotated[int, Field(ge=0)] = 7
    weekly: Annotated[int, Field(ge=0)] = 4
    monthly: Annotated[int, Field(ge=0)] = 6

    @model_validator(mode="after")
    def _keeps_something(self) -> RetentionConfig:
        if not (self.daily or self.weekly or self.monthly):
            raise ValueError("keep at least one daily, weekly or monthly snapshot")
        return self


class BackupsConfig(_Section):
    # Any restic repository string: a local path, sftp:, s3:, rest:, ...
    repository: Annotated[str, Field(min_length=1)]
    password_file: Path
    # Extra environment for restic (S3 keys and the like), one VAR=value per line.
    env_file: Path | None = None
    # Where the bot sees the docker volumes (mounted read-write for restores).
    volumes_root: Path = Path("/var/lib/docker/volumes")
    schedule: Cron | None = "30 3 * * *"  # nightly backup of every labelled app
    retention: RetentionConfig = RetentionConfig()
    check_schedule: Cron | None = "0 5 * * 0"  # restic check with a read-data subset
    check_read_data_subset: Annotated[str, Field(pattern=r"^\d+(\.\d+)?%$|^\d+/\d+$")] = "5%"
    drill_schedule: Cron | None = "0 6 1 * *"  # restore drill into a temporary folder
    # Where the drill restores (a temporary folder in it, removed afterwards); its free
    # space is checked against the snapshot's size first. Unset: the bot's data_dir.
    drill_dir: Path | None = None
    max_age: Duration = 36 * 3600.0  # alert when an app's newest good backup is older
    # How long a backup waits for a stack that is mid-update to settle.
    settle_timeout: Duration = 600.0
    # A backup whose data shrank by more than this share of the app's accepted size is
    # a ⚠ and pauses that app's retention until `!backup accept <app>` (0.5: half gone).
    size_drop_alert: Annotated[float, Field(gt=0, le=1)] = 0.5
    restic: str = "restic"  # the binary
    # An image with restic and sh (the bot's own), run as a one-off task on the node
    # that holds an app's volumes when that is not the bot's node; None: refused.
    remote_image: str | None = None
    # How many apps of one node `!backup all` backs up at once (each node's apps run
    # beside the other nodes' anyway). restic's backup locks are shared, and much of a
    # small app's backup is restic's start-up and key derivation (CPU): more than the
    # cores gains nothing.
    parallel: Annotated[int, Field(ge=1, le=16)] = 2

    @field_validator("password_file", "env_file", mode="after")
    @classmethod
    def _readable(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        base = (info.context or {}).get("base_dir")
        value = value.expanduser()
        value = value if value.is_absolute() or base is None else base / value
        _read_secret(value, None)  # fails start-up now, not at 03:30
        return value


class UpgradesConfig(_Section):
    check_schedule: Cron | None = "0 9 * * *"
    # git fetch each recipe's remote before checking; a failure is reported, not fatal.
    fetch_recipes: bool = True
    # Back up an app with backupbot labels before upgrading it; abort if that fails.
    backup_first: bool = True
    # Patch upgrades of apps labelled coop-cloud.<stack>.autoupdate=true run on the
    # check schedule without a vote (still reported).
    auto_patch: bool = False
    concurrency: Annotated[int, Field(ge=1, le=64)] = 8  # apps checked at once


ServerName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class Config(_Section):
    matrix: MatrixConfig | None = None
    data_dir: Annotated[Path, Field(validate_default=True)] = Path("data")
    # abra's folder: servers/<server>/<domain>.env and recipes/<recipe>/ (git)
    abra_dir: Annotated[Path, Field(validate_default=True)] = Path("~/.abra")
    # One entry per swarm, named like its folder under abra_dir/servers.
    servers: dict[ServerName, ServerConfig] = {}
    # The app (its domain in abra) this bot runs as: never undeployed by it, its upgrades
    # announced and reported after the restart. Unset: found from its own container.
    self_app: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")] | None = None
    access: AccessConfig = AccessConfig()
    web: WebConfig = WebConfig()
    jobs: JobsConfig = JobsConfig()
    approvals: ApprovalsConfig = ApprovalsConfig()
    backups: BackupsConfig | None = None  # no section: no backups
    upgrades: UpgradesConfig = UpgradesConfig()
    watch: WatchConfig | None = None  # no section: no swarm watch
    pings: PingsConfig = PingsConfig()
    # Timezone of the cron schedules (IANA name); default: the machine's.
    timezone: str | None = None
    log_level: Annotated[str, Field(pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")] = "INFO"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"unknown timezone {value!r}; use a name like Europe/Berlin"
                ) from None
        return value

    @field_validator("data_dir", "abra_dir", mode="after")
    @classmethod
    def _resolve(cls, value: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        value = value.expanduser()
        return value if value.is_absolute() or base is None else base / value


def _placeholders(data: Any, path: str = "") -> list[str]:
    found = []
    if isinstance(data, dict):
        for key, value in data.items():
            found += _placeholders(value, f"{path}.{key}" if path else str(key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _placeholders(value, f"{path}.{index}")
    elif isinstance(data, str) and any(p in data for p in PLACEHOLDERS):
        found.append(f"{path}: leftover placeholder {data!r} from config.example.yaml")
    return found


def _describe(error: Any) -> str:
    path = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown key"
    if error["type"] == "missing":
        return f"{path}: required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    return f"{path}: {message}"


def parse_config(data: Any, base_dir: Path | None = None) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("config: the top level must be a mapping of keys")
    problems = _placeholders(data)
    try:
        config = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems += [_describe(error) for error in exc.errors()]
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return config


def config_path(explicit: str | None) -> tuple[Path, bool]:
    """The file to read and whether the user named it (flag or $COOPBOT_CONFIG)."""
    named = explicit or os.environ.get("COOPBOT_CONFIG")
    return (Path(named), True) if named else (DEFAULT_PATH, False)


def load_config(explicit: str | None = None) -> Config:
    """Read the config. A missing default ./config.yaml means built-in defaults
    (console mode); a missing file the user named is an error."""
    path, named = config_path(explicit)
    if not path.exists():
        if named:
            raise ConfigError(f"config file {path} does not exist")
        return parse_config({}, Path.cwd())
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return parse_config(data, path.resolve().parent)
