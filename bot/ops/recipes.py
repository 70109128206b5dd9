"""Recipe git repos: release versions, release notes and private checkouts.

Synchronous GitPython; the bot calls these through `asyncio.to_thread`. A
GitPython `Repo` keeps long-lived `git cat-file` helpers that must not be
shared between threads, so every use of one repo folder goes through a lock
(also serialising `git worktree add/remove`, which write the shared .git).
Jobs never check out in the recipe folder itself: each gets its own worktree,
so two deploys of one recipe at different versions cannot disturb each other.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import git

from bot.errors import UserError

__all__ = ["RecipeError", "RecipeRepo", "StepKind", "Version", "parse_version", "step_kind"]

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 120.0  # seconds; a hung remote must not pin a worker thread forever
# Never wait for a password prompt nobody will answer.
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0"}


class RecipeError(UserError):
    """A recipe repo problem the member can act on (unknown version, unreachable remote)."""


# "<recipe semver>+<upstream version>" or plain "<semver>", optional leading "v".
_TAG = re.compile(
    r"v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:\+([0-9A-Za-z][0-9A-Za-z._+-]*))?"
)


@dataclass(frozen=True, order=True)
class Version:
    """A release tag; ordered and compared by the recipe semver alone (abra's rule)."""

    key: tuple[int, int, int]
    text: str = field(compare=False)
    upstream: str = field(compare=False, default="")


StepKind = Literal["patch", "minor", "major", "same", "downgrade"]


def parse_version(tag: str) -> Version | None:
    """The release a tag names, or None if the tag is not a release."""
    match = _TAG.fullmatch(tag)
    if not match:
        return None
    major, minor, patch, upstream = match.groups()
    return Version((int(major), int(minor), int(patch)), tag, upstream or "")


def step_kind(old: Version, new: Version) -> StepKind:
    """How big a move from `old` to `new` is; a major step may break the app."""
    if new.key == old.key:
        return "same"
    if new.key < old.key:
        return "downgrade"
    if new.key[0] != old.key[0]:
        return "major"
    if new.key[1] != old.key[1]:
        return "minor"
    return "patch"


_LOCKS: dict[Path, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(path: Path) -> threading.RLock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path, threading.RLock())


class Recipes:
    """The recipe checkouts of an abra folder (`<abra>/recipes/<name>`), each opened
    once and kept; `close` stops every repository's git helper processes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._open: dict[str, RecipeRepo] = {}
        self._lock = threading.Lock()  # inventory reads run in worker threads

    def repo(self, name: str) -> RecipeRepo:
        with self._lock:
            repo = self._open.get(name)
            if repo is None:
                repo = self._open[name] = RecipeRepo(self.root / name)
            return repo

    def close(self) -> None:
        with self._lock:
            repos, self._open = list(self._open.values()), {}
        for repo in repos:
            repo.close()


class RecipeRepo:
    """One recipe checkout, e.g. `~/.abra/recipes/<recipe>`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path).resolve()
        self.name = self.path.name
        try:
            self._repo = git.Repo(self.path)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise RecipeError(f"recipe {self.name}: {self.path} is not a git repository") from None
        if self._repo.bare:
            raise RecipeError(f"recipe {self.name}: {self.path} is a bare repository")
        self._lock = _lock_for(self.path)

    def close(self) -> None:
        """Stop GitPython's helper processes for this repo."""
        with self._lock:
            self._repo.close()

    def _git(self, *args: str, timeout: float | None = None) -> str:
        """Run git in the repo; RecipeError carries git's own error text."""
        status, out, err = self._repo.git.execute(
            [self._repo.git.GIT_PYTHON_GIT_EXECUTABLE or "git", *args],
            with_extended_output=True,
            with_exceptions=False,
            kill_after_timeout=timeout,
            env=_GIT_ENV,
        )
        if status != 0:
            detail = str(err).strip() or f"exit status {status}"
            raise RecipeError(f"recipe {self.name}: git {args[0]} failed: {detail}")
        return str(out)

    # --- versions -----------------------------------------------------------

    def versions(self) -> list[Version]:
        """Release tags, oldest first, by recipe semver (never lexically)."""
        with self._lock:
            names = [tag.name for tag in self._repo.tags]
        found = [v for name in names if (v := parse_version(name)) is not None]
        return sorted(found, key=lambda v: (v.key, v.text))

    def newest(self) -> Version | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def version(self, text: str) -> Version:
        """The release tagged exactly `text`."""
        versions = self.versions()
        for version in versions:
            if version.text == text:
                return version
        newest = ", ".join(v.text for v in reversed(versions[-5:])) or "none"
        raise RecipeError(f"unknown version {text} of recipe {self.name}; known: {newest}")

    def release_notes(self, after: str | None, upto: str) -> list[tuple[str, str]]:
        """(version, notes) for each release after `after` up to `upto`, oldest first.

        Notes are `release/<version>` as committed at that tag; if that tag has
        none, the file as it is at `upto` (notes are often added after tagging).
        `after` may be a version no longer tagged (e.g. read from a label); if it
        is no release at all (a chaos deploy's commit), every note up to `upto`
        is returned, as for a first deploy.
        """
        top = self.version(upto)
        old = parse_version(after) if after else None
        low = old.key if old else None
        notes = []
        with self._lock:
            top_commit = self._commit(top.text)
            for version in self.versions():
                if (low is not None and version.key <= low) or version.key > top.key:
                    continue
                text = self._notes(self._commit(version.text), version.text)
                if text is None:
                    text = self._notes(top_commit, version.text)
                if text is not None:
                    notes.append((version.text, text))
        return notes

    def _commit(self, tag: str) -> git.Commit:
        return self._repo.commit(f"refs/tags/{tag}")

    @staticmethod
    def _notes(commit: git.Commit, version: str) -> str | None:
        try:
            item = commit.tree / f"release/{version}"
        except KeyError:
            return None
        if item.type != "blob":
            return None
        data: bytes = item.data_stream.read()
        return data.decode("utf-8", errors="replace")

    # --- state ----------------------------------------------------------------

    def head(self) -> str:
        """The sha HEAD points at (what a chaos deploy runs)."""
        with self._lock:
            try:
                return str(self._repo.head.commit.hexsha)
            except ValueError:
                raise RecipeError(f"recipe {self.name} has no commits") from None

    def is_dirty(self) -> bool:
        """Local changes, untracked files included: a chaos deploy would ship them."""
        with self._lock:
            return bool(self._repo.is_dirty(untracked_files=True))

    def fetch(self) -> None:
        """`git fetch --tags` from origin, so new releases become visible."""
        with self._lock:
            if "origin" not in [remote.name for remote in self._repo.remotes]:
                raise RecipeError(f"recipe {self.name} has no `origin` remote to fetch from")
            self._git("fetch", "--tags", "origin", timeout=FETCH_TIMEOUT)

    # --- checkouts ------------------------------------------------------------

    def _resolve(self, ref: str) -> str:
        if not ref or ref.startswith("-"):
            raise RecipeError(f"{ref!r} is not a version or commit of recipe {self.name}")
        try:
            return self._git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").strip()
        except RecipeError:
            raise RecipeError(f"unknown version or commit {ref} of recipe {self.name}") from None

    @contextmanager
    def worktree(self, ref: str, parent: Path | None = None) -> Iterator[Path]:
        """A private detached checkout of `ref` (tag or commit) for one job.

        Always removed afterwards, even when the job fails.
        """
        with self._lock:
            sha = self._resolve(ref)
        base = Path(tempfile.mkdtemp(prefix=f"coopbot-{self.name}-", dir=parent))
        checkout = base / self.name
        try:
            with self._lock:
                self._git("worktree", "add", "--detach", str(checkout), sha)
            yield checkout
        finally:
            with self._lock:
                if checkout.exists():
                    try:
                        self._git("worktree", "remove", "--force", str(checkout))
                    except RecipeError as error:
                        log.warning("%s", error)
                shutil.rmtree(base, ignore_errors=True)
                try:
                    self._git("worktree", "prune")
                except RecipeError as error:
                    log.warning("%s", error)

    @contextmanager
    def chaos_worktree(self, parent: Path | None = None) -> Iterator[Path]:
        """A private copy of the working tree as it is now, uncommitted changes included.

        A copy rather than the folder itself, so edits made while the deploy
        runs cannot change what it deploys. Symlinks are copied as links so a
        link cannot pull files from outside the recipe into the copy. Read
        `head()` (and `is_dirty()`) for the label before entering.
        """
        base = Path(tempfile.mkdtemp(prefix=f"coopbot-{self.name}-chaos-", dir=parent))
        checkout = base / self.name
        try:
            shutil.copytree(
                self.path, checkout, symlinks=True, ignore=shutil.ignore_patterns(".git")
            )
            yield checkout
        finally:
            shutil.rmtree(base, ignore_errors=True)
