"""abra's app files, read and written the way abra does, so coopbot can be
pointed at an existing `~/.abra` directory.

Pure parsing plus small file IO: no docker, no git, and never a shell. The
files are written by people, so every complaint names the file and line.
"""

from __future__ import annotations

import os
import re
import secrets
import string
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bot.errors import UserError
from bot.ops import dotenv
from bot.ops.dotenv import DotenvError

__all__ = [
    "SAFE_NAME",
    "AbraError",
    "AppEnv",
    "SecretSpec",
    "check_domain",
    "check_recipe",
    "check_version",
    "generate_secret",
    "list_apps",
    "parse_env",
    "read_exports",
    "set_pinned_version",
]


class AbraError(UserError):
    """An abra file coopbot cannot use; the message names the file (and line)."""


@dataclass(frozen=True)
class SecretSpec:
    """One `SECRET_<NAME>_VERSION=v1  # length=64` line of an app's .env."""

    name: str
    version: str
    env_key: str
    length: int | None = None
    charset: str | None = None


@dataclass(frozen=True)
class AppEnv:
    """One app: `servers/<server>/<domain>.env`. The file name is the app's identity."""

    domain: str
    server: str
    path: Path
    recipe: str
    pinned_version: str | None
    values: dict[str, str]
    compose_files: tuple[str, ...] = ("compose.yml",)
    secrets: tuple[SecretSpec, ...] = ()
    timeout: int | None = None

    @property
    def stack_name(self) -> str:
        """abra's STACK_NAME: swarm names may not contain dots."""
        return self.domain.replace(".", "_")


# --- names that reach paths, git and docker --------------------------------

MAX_NAME = 253
# Versions (git tags) and other single path segments: no "/", no shell characters,
# and no leading "-" or "." so a name is never an option or a hidden/parent path.
SAFE_NAME = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._+-]*")
_DOMAIN = re.compile(r"[a-z0-9][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)*")
_RECIPE = re.compile(r"[a-z0-9][a-z0-9_-]*(\.[a-z0-9_-]+)*")


def _check_length(text: str, what: str) -> None:
    if not text:
        raise ValueError(f"the {what} is empty")
    if len(text) > MAX_NAME:
        raise ValueError(f"the {what} is too long ({len(text)} characters, at most {MAX_NAME})")


def check_domain(text: str) -> str:
    """Return `text` if it is a plain app domain; it becomes a file and stack name."""
    _check_length(text, "domain")
    if not _DOMAIN.fullmatch(text):
        raise ValueError(
            f"{text!r} is not a valid app domain: use lower-case letters, digits, hyphens "
            "and dots, not starting with a dot or hyphen (e.g. `cloud.example.org`)"
        )
    return text


def check_version(text: str) -> str:
    """Return `text` if it can be a recipe version (git tag) with no shell or path meaning."""
    _check_length(text, "version")
    if not SAFE_NAME.fullmatch(text):
        raise ValueError(
            f"{text!r} is not a valid version: use letters, digits and `. _ + -`, "
            "not starting with `-` or `.` (e.g. `2.0.1+1.0.6`)"
        )
    return text


def check_recipe(text: str) -> str:
    """Return `text` if it is a plain recipe name; it becomes a folder under recipes/."""
    _check_length(text, "recipe name")
    if not _RECIPE.fullmatch(text):
        raise ValueError(
            f"{text!r} is not a valid recipe name: use lower-case letters, digits, `-` and `_`"
        )
    return text


# --- .env files: read by bot.ops.dotenv, the one reader ---------------------

_SECRET_KEY = re.compile(r"SECRET_(?P<name>[A-Za-z0-9_]+)_VERSION")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise AbraError(f"{path}: not UTF-8 text") from None
    except OSError as error:
        raise AbraError(f"{path}: cannot read it ({error.strerror or error})") from None


def _entries(path: Path, environ: Mapping[str, str] | None = None) -> list[dotenv.Entry]:
    try:
        return dotenv.read_file(path, environ=environ)
    except DotenvError as error:
        raise AbraError(str(error)) from None


def _secret(path: Path, entry: dotenv.Entry, name: str) -> SecretSpec:
    hints = {key.lower(): value for key, value in entry.modifiers.items()}
    length: int | None = None
    if "length" in hints:
        try:
            length = int(hints["length"])
        except ValueError:
            length = 0
        if length <= 0:
            raise AbraError(
                f"{path}:{entry.line}: {entry.key}: length={hints['length']} "
                "is not a positive whole number"
            )
    return SecretSpec(name.lower(), entry.value, entry.key, length, hints.get("charset"))


def parse_env(path: Path, server: str, *, environ: Mapping[str, str] | None = None) -> AppEnv:
    """Read one app's `<domain>.env` as abra does. Raises AbraError naming the file and line.

    `$VAR` and `${VAR}` expand from earlier keys, then from `environ` (abra
    would use its own process environment; by default nothing).
    """
    path = Path(path)
    domain = path.name.removesuffix(".env")
    try:
        check_domain(domain)
    except ValueError as error:
        raise AbraError(f"{path}: the file name must be <domain>.env: {error}") from None
    entries = _entries(path, environ)
    values = dotenv.as_dict(entries)
    where = {entry.key: entry.line for entry in entries}

    recipe_key = "RECIPE" if "RECIPE" in values else "TYPE"
    if not values.get(recipe_key):
        raise AbraError(f"{path}: no TYPE= or RECIPE= line saying which recipe this app uses")
    recipe, _, pinned = values[recipe_key].partition(":")
    try:
        check_recipe(recipe)
        if pinned:
            check_version(pinned)
    except ValueError as error:
        raise AbraError(f"{path}:{where[recipe_key]}: {recipe_key}: {error}") from None

    compose_files: tuple[str, ...] = ("compose.yml",)
    if values.get("COMPOSE_FILE"):
        compose_files = tuple(part for part in values["COMPOSE_FILE"].split(":") if part)
        for name in compose_files:
            if name.startswith("/") or ".." in Path(name).parts:
                raise AbraError(
                    f"{path}:{where['COMPOSE_FILE']}: COMPOSE_FILE: {name!r} must be a path "
                    "inside the recipe"
                )

    timeout = None
    if values.get("TIMEOUT"):
        try:
            timeout = int(values["TIMEOUT"])
        except ValueError:
            timeout = 0
        if timeout <= 0:
            raise AbraError(
                f"{path}:{where['TIMEOUT']}: TIMEOUT={values['TIMEOUT']} is not a positive "
                "number of seconds"
            )

    # The last assignment wins, as in godotenv; so one spec per secret.
    secret_entries = {
        entry.key: (entry, m["name"])
        for entry in entries
        if (m := _SECRET_KEY.fullmatch(entry.key))
    }
    specs = tuple(_secret(path, entry, name) for entry, name in secret_entries.values())
    return AppEnv(
        domain=domain,
        server=server,
        path=path,
        recipe=recipe,
        pinned_version=pinned or None,
        values=values,
        compose_files=compose_files,
        secrets=specs,
        timeout=timeout,
    )


_EXPORT = re.compile(r"export\s+(?P<key>[A-Za-z_][A-Za-z0-9_]*)=.*")


def read_exports(path: Path) -> dict[str, str]:
    """The top-level `export X=Y` lines of a recipe's abra.sh.

    The file is never run: a value that needs the shell (`$(...)`, backticks,
    `$VAR` outside single quotes) is skipped rather than guessed at, as is
    anything that does not parse. Recipes use these for config versions
    (`export NGINX_CONF_VERSION=v2`) that their compose files interpolate.
    Each line is read with the .env reader, one line at a time, so quoting
    means what it means in an app's .env.
    """
    exports: dict[str, str] = {}
    for line in _read_text(Path(path)).splitlines():
        match = _EXPORT.fullmatch(line.rstrip())
        if not match:
            continue
        try:
            entry = dotenv.parse(line)[0]
        except DotenvError:
            continue
        if entry.key != match["key"]:
            continue
        if "`" in entry.raw or (entry.quote != "'" and "$" in entry.raw):
            continue
        exports[entry.key] = entry.value
    return exports


# What godotenv skips before a name: blanks and an `export` followed by a blank.
_LEAD = re.compile(r"[\t\v\f\r \x85\xa0]*(?:export[\t\v\f\r \x85\xa0]+)?")


def set_pinned_version(path: Path, recipe: str, version: str) -> None:
    """Pin an app to `recipe:version`, changing only the TYPE=/RECIPE= line(s).

    Comments, order, blank lines and line endings are kept byte for byte so a
    hand-edited file stays recognisable; the write is atomic so a crash never
    leaves half a file, and the file keeps its mode (it may hold secrets).
    """
    path = Path(path)
    check_recipe(recipe)
    check_version(version)
    raw = path.read_bytes().decode("utf-8", errors="surrogateescape")
    try:
        entries = dotenv.parse(raw, source=str(path))
    except DotenvError as error:
        raise AbraError(str(error)) from None
    # Split on "\n" only: the reader numbers lines that way (CRLF stays in the line).
    lines = raw.split("\n")
    changed = False
    for entry in entries:
        if entry.key not in ("TYPE", "RECIPE"):
            continue
        if "\n" in entry.raw:
            raise AbraError(f"{path}:{entry.line}: {entry.key}: a value over several lines")
        body = lines[entry.line - 1]
        ending = "\r" if body.endswith("\r") else ""
        lead = _LEAD.match(body)
        prefix = lead[0] if lead else ""
        if not body.startswith(entry.key, len(prefix)):
            # e.g. `A="x" TYPE=y`: rewriting the line would lose A.
            raise AbraError(f"{path}:{entry.line}: {entry.key}: not at the start of its line")
        suffix = f"  # {entry.comment}" if entry.comment else ""
        lines[entry.line - 1] = f"{prefix}{entry.key}={recipe}:{version}{suffix}{ending}"
        changed = True
    if not changed:
        lines.insert(0, f"TYPE={recipe}:{version}" + ("\r" if raw.endswith("\r\n") else ""))
    _write_atomic(path, "\n".join(lines).encode("utf-8", errors="surrogateescape"))


def _write_atomic(path: Path, data: bytes) -> None:
    mode = path.stat().st_mode & 0o7777
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


_SETTING = re.compile(r"^(?P<lead>\s*(?:export\s+)?)(?P<key>TYPE|RECIPE|DOMAIN)\s*=")


def new_app_env(sample: str, recipe: str, domain: str) -> str:
    """An app's `.env` made from its recipe's `.env.sample` as `abra app new` makes it:
    DOMAIN set to the app's domain and TYPE to the recipe, every other line as it is
    (comments and commented-out overlays included)."""
    out: list[str] = []
    seen: set[str] = set()
    for line in sample.splitlines(keepends=True):
        match = _SETTING.match(line)
        if match is None or match["key"] in seen:
            out.append(line)
            continue
        key = "TYPE" if match["key"] in ("TYPE", "RECIPE") else "DOMAIN"
        seen.add(match["key"])
        ending = "\r\n" if line.endswith("\r\n") else "\n"
        value = recipe if key == "TYPE" else domain
        out.append(f"{match['lead']}{match['key']}={value}{ending}")
    if not seen & {"TYPE", "RECIPE"}:
        out.insert(0, f"TYPE={recipe}\n")
    if "DOMAIN" not in seen:
        out.insert(1, f"DOMAIN={domain}\n")
    return "".join(out)


def create_app(abra_dir: Path, server: str, recipe: str, domain: str) -> Path:
    """Write `servers/<server>/<domain>.env` from the recipe's sample; AbraError when
    the recipe has no sample or the file exists (nothing is overwritten)."""
    sample = Path(abra_dir) / "recipes" / recipe / ".env.sample"
    if not sample.is_file():
        raise AbraError(f"recipe {recipe} has no .env.sample to make the app from")
    folder = Path(abra_dir) / "servers" / server
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{domain}.env"
    text = new_app_env(_read_text(sample), recipe, domain)
    try:
        # O_EXCL: two `!new` of one domain at once cannot both write it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    except FileExistsError:
        raise AbraError(f"{path} exists already; nothing was changed") from None
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    return path


def list_apps(abra_dir: Path, servers: Iterable[str]) -> tuple[list[AppEnv], list[str]]:
    """Every app of the given servers, sorted by domain, and the problems found.

    One unreadable file is reported, not raised: it must not hide the other apps.
    """
    apps: list[AppEnv] = []
    problems: list[str] = []
    for server in servers:
        folder = Path(abra_dir) / "servers" / server
        if not SAFE_NAME.fullmatch(server):
            problems.append(f"server {server!r}: not a plain folder name")
            continue
        if not folder.is_dir():
            problems.append(f"server {server}: no folder {folder}")
            continue
        for path in sorted(folder.glob("*.env")):
            if path.name.startswith(".") or not path.is_file():
                continue
            try:
                apps.append(parse_env(path, server))
            except AbraError as error:
                problems.append(str(error))
    apps.sort(key=lambda app: (app.domain, app.server))
    seen: dict[str, str] = {}
    for app in apps:
        if app.domain in seen:
            problems.append(f"{app.domain} is on two servers: {seen[app.domain]} and {app.server}")
        seen.setdefault(app.domain, app.server)
    return apps, problems


# abra's charsets: "default" is alphanumeric; "special-chars" adds punctuation
# that survives YAML, env files and shells unquoted-ish (no quotes, backslash, space).
# Recipes also name "alnum" (the default's letters and digits) and "hex" (lower-case
# hex digits, for keys an app reads as hex): llamenos' sample uses both.
CHARSETS = {
    "default": string.ascii_letters + string.digits,
    "alnum": string.ascii_letters + string.digits,
    "hex": string.digits + "abcdef",
    "special-chars": string.ascii_letters
    + string.digits
    + "".join(c for c in string.punctuation if c not in "\"'`\\"),
}
DEFAULT_SECRET_LENGTH = 32


def generate_secret(spec: SecretSpec) -> str:
    """A new random value for a secret, honouring the length= and charset= hints."""
    charset = spec.charset or "default"
    if charset not in CHARSETS:
        raise AbraError(
            f"secret {spec.name} ({spec.env_key}): unknown charset={charset}; "
            f"known: {', '.join(CHARSETS)}"
        )
    length = spec.length if spec.length is not None else DEFAULT_SECRET_LENGTH
    if length <= 0:
        raise AbraError(f"secret {spec.name} ({spec.env_key}): length={length} must be positive")
    alphabet = CHARSETS[charset]
    return "".join(secrets.choice(alphabet) for _ in range(length))
