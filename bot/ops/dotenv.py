"""The one `.env` reader: the syntax abra reads app files with.

abra reads `.env` files with the Go library godotenv (github.com/joho/godotenv,
through Co-op Cloud's fork that also returns the `# length=64 charset=hex`
comment modifiers). This module is a port of godotenv's parser.go, so a file
means here what it means to abra:

- `KEY=value`, `KEY = value`, `export KEY=value` and yaml-ish `KEY: value`;
  names are (ASCII) letters, digits, `_` and `.`, a digit first included; the
  last assignment of a key wins.
- unquoted values run to the end of the line; a `#` preceded by whitespace
  starts a comment (`pa#ss` keeps its `#`); surrounding spaces are trimmed.
- single-quoted values are literal and may span lines.
- double-quoted values may span lines; `\\n` and `\\r` become newline and
  carriage return, any other backslash-escaped character stands for itself
  (`\\"`, `\\\\`), except that `\\$` stays an escaped, unexpanded `$`.
- `$VAR` and `${VAR}` are expanded in unquoted and double-quoted values, from
  keys earlier in the file, then from `environ`, else to "". godotenv only
  expands upper-case names (`[A-Z0-9_]`), so `$lower` stays as written.
  Real recipes chain overlays this way: `COMPOSE_FILE="$COMPOSE_FILE:x.yml"`.
- CRLF files read like LF files.

godotenv reads the process environment of abra itself; here the caller passes
`environ` (default: nothing), so what a value expands to never depends on
whoever happens to run the bot.

Where godotenv crashes or makes no sense we decide, and say so where we do:
a value starting with `#` (`KEY= # note`, which panics in godotenv's current
parser) is an empty value with a comment, and an empty name (`=x`) or a name
with a space inside (`MY KEY=x`) is refused instead of kept.

Error messages name the file, line and key but never quote the text of the
line: values are often passwords.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from bot.errors import UserError

__all__ = ["DotenvError", "Entry", "as_dict", "parse", "read_file"]


class DotenvError(UserError):
    """A `.env` file abra would not read; names the file, line and key, never a value."""


@dataclass(frozen=True)
class Entry:
    """One assignment, in file order. `line` is where its key is (1-based).

    `modifiers` are abra's `key=value` words in the comment after the value
    (`SECRET_X_VERSION=v1  # length=64 charset=hex`). `quote` is the quote the
    value was written in ("" when unquoted), `raw` the text as written between
    the quotes (before escapes and expansion), `comment` the trailing comment.
    """

    key: str
    value: str = field(repr=False)  # values are often passwords: keep them out of logs
    line: int
    modifiers: Mapping[str, str] = field(default_factory=dict, hash=False)
    quote: str = ""
    raw: str = field(default="", repr=False)
    comment: str | None = None

    def __post_init__(self) -> None:
        # Read-only so an Entry can be shared; hash=False above keeps it hashable.
        object.__setattr__(self, "modifiers", MappingProxyType(dict(self.modifiers)))


def as_dict(entries: Iterable[Entry]) -> dict[str, str]:
    """key -> value; a key assigned twice keeps its last value, as in godotenv."""
    return {entry.key: entry.value for entry in entries}


def read_file(path: Path, *, environ: Mapping[str, str] | None = None) -> list[Entry]:
    """Read and parse one `.env` file; DotenvError if it is unreadable or malformed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DotenvError(f"{path}: not UTF-8 text") from None
    except OSError as error:
        raise DotenvError(f"{path}: cannot read it ({error.strerror or error})") from None
    return parse(text, source=str(path), environ=environ)


# --- the parser: godotenv's parser.go, statement by statement -------------------

# godotenv's isSpace: blanks that never end a line.
_BLANK = frozenset("\t\v\f\r \x85\xa0")
# Go's unicode.IsSpace, which godotenv uses between statements (so it includes
# newlines). Python's str.isspace also counts \x1c-\x1f, which Go does not.
_SPACE = (
    _BLANK
    | frozenset("\n\u1680\u2028\u2029\u202f\u205f\u3000")
    | frozenset(chr(c) for c in range(0x2000, 0x200B))
)
_BLANKS = "".join(sorted(_BLANK))  # for str.strip
_LINE_END = "\n\r"
_QUOTES = "\"'"
_EXPORT = "export"

# godotenv's expandVarRegex, as is: an optional escaping backslash, `$`, and an
# optional `(` or `{`, an upper-case name and `}`. godotenv means to leave `$(`
# alone but tests the wrong group, so `$(NAME` expands like `${NAME`; copied.
_EXPAND = re.compile(r"(\\)?(\$)(\()?\{?([A-Z0-9_]+)?\}?")
_ESCAPE = re.compile(r"\\.")
_UNESCAPE = re.compile(r"\\([^$])")


def parse(
    text: str, *, source: str = "<env>", environ: Mapping[str, str] | None = None
) -> list[Entry]:
    """Every assignment of a `.env` text, in order; DotenvError names the first problem."""
    return _Parser(text, source, environ or {}).run()


class _Parser:
    def __init__(self, text: str, source: str, environ: Mapping[str, str]) -> None:
        # godotenv reads CRLF as LF before anything else.
        self.src = text.replace("\r\n", "\n")
        self.source = source
        self.environ = environ
        self.values: dict[str, str] = {}
        self.pos = 0
        self.line = 1
        self.counted = 0  # src[:counted] has been counted into self.line

    def run(self) -> list[Entry]:
        if self.src.startswith("\ufeff"):
            # godotenv takes the byte-order mark for part of the first name and fails.
            raise self.error("starts with a byte-order mark; save it as UTF-8 without one", 1)
        entries: list[Entry] = []
        closed_quote_line = 0  # line on which the previous value's closing quote was
        while self.statement_start():
            line = self.line_at(self.pos)
            after = entries[-1].key if entries and line == closed_quote_line else None
            key = self.key_name(line, after)
            value, quote, raw, comment = self.value(key, line)
            self.values[key] = value
            entries.append(Entry(key, value, line, _modifiers(comment), quote, raw, comment))
            closed_quote_line = self.line_at(self.pos) if quote else 0
        return entries

    # --- positions and errors

    def line_at(self, pos: int) -> int:
        """1-based line of src[pos]; positions only move forward."""
        self.line += self.src.count("\n", self.counted, pos)
        self.counted = pos
        return self.line

    def error(self, problem: str, line: int | None = None, key: str | None = None) -> DotenvError:
        where = f"{self.source}:{line}" if line else self.source
        return DotenvError(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")

    # --- getStatementStart: skip blanks, newlines and comment lines

    def statement_start(self) -> bool:
        src, n = self.src, len(self.src)
        while True:
            while self.pos < n and src[self.pos] in _SPACE:
                self.pos += 1
            if self.pos >= n:
                return False
            if src[self.pos] == "#" or self._yaml_delimiter():
                end = src.find("\n", self.pos)
                if end == -1:
                    return False
                self.pos = end
                continue
            return True

    def _yaml_delimiter(self) -> bool:
        # godotenv skips a YAML document delimiter (its test: "---\nKEY:value").
        # It does so by deleting every "---\n" in the file, values included; we
        # only skip a line that is exactly `---`.
        src, pos = self.src, self.pos
        at_line_start = pos == 0 or src[pos - 1] == "\n"
        return at_line_start and src.startswith("---\n", pos)

    # --- locateKeyName

    def key_name(self, line: int, after_quote_of: str | None) -> str:
        src, n = self.src, len(self.src)
        pos = self.pos
        after_export = pos + len(_EXPORT)
        # `export` counts only when a blank follows: `exportFOO=1` is the name exportFOO.
        if src.startswith(_EXPORT, pos) and after_export < n and src[after_export] in _BLANK:
            pos = after_export
            while pos < n and src[pos] in _BLANK:
                pos += 1
        start = i = pos
        while i < n and src[i] not in "=:":
            char = src[i]
            if char in _BLANK or char in "_." or (char.isascii() and char.isalnum()):
                i += 1
                continue
            # Never quote the line: a line without `=` may be a pasted password.
            if after_quote_of is not None:
                raise self.error("unexpected text after the closing quote", line, after_quote_of)
            if char == "\n":
                raise self.error("expected KEY=value (this line has no `=`)", line)
            column = i - (src.rfind("\n", 0, i) + 1) + 1
            raise self.error(
                f"not a valid variable name: column {column} is not a letter, digit, `_` or `.`",
                line,
            )
        if i >= n:
            # godotenv would read the whole last line as the value of an empty name.
            if after_quote_of is not None:
                raise self.error("unexpected text after the closing quote", line, after_quote_of)
            raise self.error("expected KEY=value (this line has no `=`)", line)
        key = src[start:i].strip(_BLANKS)
        if not key:
            # godotenv keeps `=x` under the name "", which no environment can hold.
            raise self.error("not a valid variable name: the name before `=` is empty", line)
        if any(c in _BLANK for c in key):
            # godotenv keeps "MY KEY"; it is a typo far more often than a name.
            raise self.error("not a valid variable name: it has a space in it", line, key)
        self.pos = i + 1
        while self.pos < n and src[self.pos] in _BLANK:
            self.pos += 1
        return key

    # --- extractVarValue

    def value(self, key: str, line: int) -> tuple[str, str, str, str | None]:
        """(value, quote, raw, comment) of the value at self.pos; moves past it."""
        src, n, pos = self.src, len(self.src), self.pos
        if pos >= n or src[pos] not in _QUOTES:
            end = pos
            while end < n and src[end] not in _LINE_END:
                end += 1
            text = src[pos:end]
            self.pos = end
            comment: str | None = None
            if text.startswith("#"):
                # godotenv's comment scan reads text[-1] here and panics; Ruby's and
                # Node's dotenv (and the fix proposed upstream) read an empty value.
                text, comment = "", text[1:]
            else:
                for i in range(1, len(text)):
                    # The first `#` after a blank starts the comment ("a # b # c" is "a").
                    if text[i] == "#" and text[i - 1] in _BLANK:
                        text, comment = text[:i], text[i + 1 :]
                        break
            raw = text.strip(_BLANKS)
            return self.expand(raw), "", raw, _strip(comment)

        quote = src[pos]
        i = pos + 1
        while i < n and (src[i] != quote or src[i - 1] == "\\"):
            i += 1
        if i >= n:
            raise self.error(f"the {quote} quote is never closed", line, key)
        # godotenv trims every quote character from both ends, not just one.
        raw = src[pos:i].rstrip(quote).lstrip(quote)
        value = self.expand(_unescape(raw)) if quote == '"' else raw
        self.pos = i + 1
        return value, quote, raw, _strip(self._comment_after_quote())

    def _comment_after_quote(self) -> str | None:
        """The comment on the rest of the closing quote's line, if that is all there is."""
        src, n, pos = self.src, len(self.src), self.pos
        while pos < n and src[pos] in _BLANK:
            pos += 1
        if pos < n and src[pos] == "#":
            end = src.find("\n", pos)
            return src[pos + 1 : end if end != -1 else n]
        return None

    def expand(self, text: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            if match[1]:
                return match[0][1:]  # `\$X` is a literal `$X`
            name = match[4]
            if not name:
                return match[0]
            if name in self.values:
                return self.values[name]
            return self.environ.get(name, "")

        return _EXPAND.sub(substitute, text)


def _unescape(text: str) -> str:
    """godotenv's expandEscapes for double-quoted values."""
    text = _ESCAPE.sub(lambda m: {"n": "\n", "r": "\r"}.get(m[0][1], m[0]), text)
    return _UNESCAPE.sub(r"\1", text)


def _strip(comment: str | None) -> str | None:
    return None if comment is None else comment.strip()


def _modifiers(comment: str | None) -> dict[str, str]:
    """abra's modifiers: the `name=value` words of a value's comment."""
    found: dict[str, str] = {}
    for word in (comment or "").split():
        name, sep, value = word.partition("=")
        if sep and name and value:
            found[name] = value
    return found
