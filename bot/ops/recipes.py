"""Recipe git repos: release versions, release notes and private checkouts.

Two ways in. The batched async reads (`RecipeRepo.refs`, `RecipeRepo.notes`,
`Recipes.refs`, `RecipeReads`) run one `git for-each-ref` / `git cat-file --batch`
process per recipe through the one subprocess runner: reading tags and notes
through GitPython is Python work under the GIL, per app (about 4 ms of each app's
upgrade check, bench/corpus_scale.py), while one git process answers a whole
recipe in a few ms, off the interpreter. The checks of many apps (`!apps`,
`!upgrades`) use those; what they read is kept until the recipe's ref files
change (a fetch, a `git tag`).

The synchronous GitPython API stays for the rest (worktrees, fetch, one app's
`!upgrade` plan); the bot calls it through `asyncio.to_thread`. A GitPython
`Repo` keeps long-lived `git cat-file` helpers that must not be shared between
threads, so every use of one repo folder goes through a lock (also serialising
`git worktree add/remove`, which write the shared .git). Jobs never check out in
the recipe folder itself: each gets its own worktree, so two deploys of one
recipe at different versions cannot disturb each other.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import git

from bot.errors import UserError
from bot.ops.git_errors import git_message
from bot.ops.gitbatch import (
    REFS_FORMAT,
    RefsMark,
    Shared,
    TagRef,
    parse_batch,
    parse_tags,
    refs_mark,
)
from bot.ops.process import ProcessTimeout, run_process

__all__ = [
    "RecipeError",
    "RecipeReads",
    "RecipeRefs",
    "RecipeRepo",
    "Recipes",
    "StepKind",
    "TagRef",
    "Version",
    "parse_batch",
    "parse_version",
    "step_kind",
]

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 120.0  # seconds; a hung remote must not pin a worker thread forever
READ_TIMEOUT = 60.0  # seconds; a local for-each-ref / cat-file takes milliseconds
# Never wait for a password prompt nobody will answer.
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0"}
# What the batched reads' git sees of the bot's environment: enough to find git and
# the operator's git config (safe.directory), nothing else (no GIT_DIR, no secrets).
_GIT_KEEP = ("PATH", "HOME", "XDG_CONFIG_HOME")
# Tags of a recipe, and all its release notes, fit well within these.
_REFS_LIMIT = 16 * 1024 * 1024
_NOTES_LIMIT = 64 * 1024 * 1024


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


def _sorted_versions(names: Iterable[str]) -> list[Version]:
    """The release tags among `names`, oldest first, by recipe semver (never lexically)."""
    found = [v for name in names if (v := parse_version(name)) is not None]
    return sorted(found, key=lambda v: (v.key, v.text))


def _find_version(recipe: str, versions: Sequence[Version], text: str) -> Version:
    for version in versions:
        if version.text == text:
            return version
    newest = ", ".join(v.text for v in reversed(versions[-5:])) or "none"
    raise RecipeError(f"unknown version {text} of recipe {recipe}; known: {newest}")


def _between(versions: Iterable[Version], after: str | None, top: Version) -> list[Version]:
    """The releases after `after` up to `top`, in the order given. `after` may be a
    version no longer tagged; if it is no release at all (a chaos deploy's commit),
    every release up to `top` counts, as for a first deploy."""
    old = parse_version(after) if after else None
    low = old.key if old else None
    return [v for v in versions if (low is None or v.key > low) and v.key <= top.key]


@dataclass(frozen=True)
class RecipeRefs:
    """A recipe's tags as read at one moment (they change only on fetch or `git tag`)."""

    recipe: str
    tags: Mapping[str, TagRef]
    versions: tuple[Version, ...]  # the release tags, oldest first

    def newest(self) -> Version | None:
        return self.versions[-1] if self.versions else None

    def version(self, text: str) -> Version:
        """The release tagged exactly `text` (RecipeError naming the newest if none)."""
        return _find_version(self.recipe, self.versions, text)


def parse_refs(recipe: str, listing: str) -> RecipeRefs:
    """RecipeRefs from `git for-each-ref --format=<REFS_FORMAT> refs/tags` output."""
    tags = parse_tags(listing)
    return RecipeRefs(recipe, tags, tuple(_sorted_versions(tags)))


@dataclass
class _Kept:
    """The last refs read of a repo, the mark they were read under, and notes read
    since (keyed by the versions and the fallback tag asked for)."""

    mark: RefsMark
    refs: RecipeRefs
    notes: dict[tuple[tuple[str, ...], str], dict[str, str]] = field(default_factory=dict)


def _git_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in _GIT_KEEP if k in os.environ}
    env.setdefault("PATH", os.defpath)
    return {**env, **_GIT_ENV}


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
        self._reads: Shared[RecipeRefs] = Shared(keep=False)

    def repo(self, name: str) -> RecipeRepo:
        with self._lock:
            repo = self._open.get(name)
            if repo is None:
                repo = self._open[name] = RecipeRepo(self.root / name)
            return repo

    async def refs(self, name: str) -> RecipeRefs:
        """The recipe's tags; the callers of one moment (all apps of one `!apps`) share
        one read. The repo keeps what it read only while its ref files stay as they were
        (`RecipeRepo.refs`), so a new tag shows at the next ask."""

        async def read() -> RecipeRefs:
            repo = await asyncio.to_thread(self.repo, name)  # opening reads .git/config
            return await repo.refs()

        return await self._reads.get(name, read)

    def close(self) -> None:
        # In-flight reads are left to end (milliseconds): close runs in a worker
        # thread, where their tasks cannot be touched.
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
        self._common = Path(self._repo.common_dir)
        self._kept: _Kept | None = None  # touched on the event loop only

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
            raise RecipeError(git_message(self.name, args[0], detail))
        return str(out)

    # --- versions -----------------------------------------------------------

    def versions(self) -> list[Version]:
        """Release tags, oldest first, by recipe semver (never lexically)."""
        with self._lock:
            names = [tag.name for tag in self._repo.tags]
        return _sorted_versions(names)

    def newest(self) -> Version | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def version(self, text: str) -> Version:
        """The release tagged exactly `text`."""
        return _find_version(self.name, self.versions(), text)

    def release_notes(self, after: str | None, upto: str) -> list[tuple[str, str]]:
        """(version, notes) for each release after `after` up to `upto`, oldest first.

        Notes are `release/<version>` as committed at that tag; if that tag has
        none, the file as it is at `upto` (notes are often added after tagging).
        `after` may be a version no longer tagged (e.g. read from a label); if it
        is no release at all (a chaos deploy's commit), every note up to `upto`
        is returned, as for a first deploy.
        """
        top = self.version(upto)
        wanted = _between(self.versions(), after, top)
        notes = self._notes_sync([v.text for v in wanted], top.text)
        return [(v.text, notes[v.text]) for v in wanted if v.text in notes]

    def _notes_sync(self, versions: Sequence[str], at: str) -> dict[str, str]:
        """What `notes` answers, read through GitPython."""
        found = {}
        with self._lock:
            at_commit = self._commit(at)
            for version in versions:
                text = self._notes(self._commit(version), version)
                if text is None:
                    text = self._notes(at_commit, version)
                if text is not None:
                    found[version] = text
        return found

    # --- batched reads (one git process per recipe, on the event loop) ---------------

    async def _run_git(
        self, *args: str, stdin: bytes | None = None, limit: int
    ) -> tuple[str, bool]:
        """git's stdout, and whether it was cut at `limit`; RecipeError with git's text."""
        argv = [git.Git.GIT_PYTHON_GIT_EXECUTABLE or "git", *args]
        try:
            result = await run_process(
                argv,
                env=_git_env(),
                cwd=self.path,
                stdin=stdin,
                timeout=READ_TIMEOUT,
                stdout_limit=limit,
            )
        except ProcessTimeout:
            raise RecipeError(
                f"recipe {self.name}: git {args[0]} took more than {READ_TIMEOUT:g}s"
            ) from None
        except OSError as exc:
            raise RecipeError(f"recipe {self.name}: cannot run git: {exc}") from None
        if result.returncode != 0:
            detail = result.stderr.strip() or f"exit status {result.returncode}"
            raise RecipeError(git_message(self.name, args[0], detail))
        return result.stdout, result.stdout_truncated

    async def refs(self) -> RecipeRefs:
        """Every tag with its commit and date, from one `git for-each-ref`, or as last
        read when the ref files have not changed since (see refs_mark)."""
        mark, settled = await asyncio.to_thread(refs_mark, self._common)
        kept = self._kept
        if kept is not None and kept.mark == mark:
            return kept.refs
        out, cut = await self._run_git(
            "for-each-ref", f"--format={REFS_FORMAT}", "refs/tags", limit=_REFS_LIMIT
        )
        if cut:
            raise RecipeError(f"recipe {self.name}: more tags than the bot reads")
        refs = parse_refs(self.name, out)
        # Marked before the read: a tag written meanwhile changes the next mark.
        self._kept = _Kept(mark, refs) if settled else None
        return refs

    async def notes(
        self, versions: Sequence[str], at: str, refs: RecipeRefs | None = None
    ) -> dict[str, str]:
        """`release/<version>` of each version as committed at its tag, else as it is at
        tag `at`; versions with neither are left out. One `git cat-file --batch`. With
        the `refs` last read (and still kept), notes already read are answered again:
        what a tag's tree holds cannot change while the tag does not."""
        if not versions:
            return {}
        kept = self._kept if refs is not None and self._kept is not None else None
        key = (tuple(versions), at)
        if kept is not None and kept.refs is refs and key in kept.notes:
            return kept.notes[key]
        found = await self._read_notes(versions, at)
        if kept is not None and kept.refs is refs and self._kept is kept:
            kept.notes[key] = found
        return found

    async def _read_notes(self, versions: Sequence[str], at: str) -> dict[str, str]:
        asked = [f"refs/tags/{v}:release/{v}" for v in versions]
        asked += [f"refs/tags/{at}:release/{v}" for v in versions]
        out, cut = await self._run_git(
            "cat-file",
            "--batch",
            stdin="".join(f"{a}\n" for a in asked).encode(),
            limit=_NOTES_LIMIT,
        )
        # The runner hands back text, and cat-file counts bytes: the text is the bytes
        # exactly only when it decoded cleanly. Otherwise (a note that is not UTF-8,
        # a folder named like a note) GitPython reads it, as before, with the same answer.
        answers = None if cut or "\ufffd" in out else parse_batch(out.encode(), len(asked))
        if answers is None:
            return await asyncio.to_thread(self._notes_sync, versions, at)
        found = {}
        for version, own, fallback in zip(
            versions, answers[: len(versions)], answers[len(versions) :], strict=True
        ):
            data = own if own is not None else fallback
            if data is not None:
                found[version] = data.decode("utf-8", errors="replace")
        return found

    async def release_notes_async(
        self, after: str | None, upto: str, refs: RecipeRefs | None = None
    ) -> list[tuple[str, str]]:
        """`release_notes` from the batched reads (`refs`, if given, saves one)."""
        refs = refs or await self.refs()
        top = refs.version(upto)
        wanted = _between(refs.versions, after, top)
        notes = await self.notes([v.text for v in wanted], top.text, refs)
        return [(v.text, notes[v.text]) for v in wanted if v.text in notes]

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


class RecipeReads:
    """One check's reads of its recipes: each recipe's tags, and its release notes up
    to a version, read once (one git process each) however many apps share the recipe.
    Kept for the check only: a check after the next fetch reads again."""

    def __init__(self, open_repo: Callable[[str], RecipeRepo]) -> None:
        self._open = open_repo
        self._repos: Shared[RecipeRepo] = Shared(keep=True)
        self._refs: Shared[RecipeRefs] = Shared(keep=True)
        self._notes: Shared[dict[str, str]] = Shared(keep=True)

    async def _repo(self, recipe: str) -> RecipeRepo:
        return await self._repos.get(recipe, lambda: asyncio.to_thread(self._open, recipe))

    async def refs(self, recipe: str) -> RecipeRefs:
        async def read() -> RecipeRefs:
            return await (await self._repo(recipe)).refs()

        return await self._refs.get(recipe, read)

    async def release_notes(
        self, recipe: str, after: str | None, upto: str
    ) -> list[tuple[str, str]]:
        """As `RecipeRepo.release_notes`; the notes of every release up to `upto` are
        read at once, so apps of one recipe running different versions share them."""
        refs = await self.refs(recipe)
        top = refs.version(upto)

        async def read() -> dict[str, str]:
            every = [v.text for v in refs.versions if v.key <= top.key]
            return await (await self._repo(recipe)).notes(every, top.text, refs)

        notes = await self._notes.get((recipe, top.text), read)
        return [
            (v.text, notes[v.text]) for v in _between(refs.versions, after, top) if v.text in notes
        ]

    def cancel(self) -> None:
        """Stop the reads still running (the check ended without waiting for them)."""
        for shared in (self._repos, self._refs, self._notes):
            shared.cancel()
