"""Git's batch outputs, read: `for-each-ref` tag listings and `cat-file --batch`
answers (pure), how a repo's ref files look (to know when a read may be kept), and
one shared read per key. The recipe adapter (bot/ops/recipes.py) runs the processes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

__all__ = ["REFS_FORMAT", "RefsMark", "Shared", "TagRef", "parse_batch", "parse_tags", "refs_mark"]

T = TypeVar("T")

# A recipe's tags (and the notes they lead to) are kept between reads while the files
# that hold its refs look as they did, and only once those were left alone this long:
# mtimes come from a coarse clock, so two writes within one tick can leave the same
# mtime behind (git's "racy" case); a write this close to the read is read again.
_SETTLED_NS = 1_000_000_000


@dataclass(frozen=True)
class TagRef:
    """One tag as `git for-each-ref` lists it."""

    name: str  # without refs/tags/
    commit: str  # the object it names, peeled once if it is an annotated tag
    date: int  # unix time: the tagger's for an annotated tag, else the commit's


def parse_tags(listing: str) -> dict[str, TagRef]:
    """The tags of `git for-each-ref --format=<REFS_FORMAT> refs/tags` output."""
    tags: dict[str, TagRef] = {}
    for line in listing.splitlines():
        if not line:
            continue
        refname, obj, peeled, date = line.split("\0")
        name = refname.removeprefix("refs/tags/")
        tags[name] = TagRef(name, peeled or obj, int(date) if date.isdigit() else 0)
    return tags


# NUL-separated: the fields cannot contain one (refnames cannot, ids and dates do not).
REFS_FORMAT = "%(refname)%00%(objectname)%00%(*objectname)%00%(creatordate:unix)"


def parse_batch(data: bytes, count: int) -> list[bytes | None] | None:
    """The `count` answers of `git cat-file --batch`, in order: a blob's bytes, or None
    (missing, or not a blob). None for the whole when the output does not parse."""
    answers: list[bytes | None] = []
    pos = 0
    for _ in range(count):
        end = data.find(b"\n", pos)
        if end < 0:
            return None
        header = data[pos:end].split(b" ")
        pos = end + 1
        if header[-1] in (b"missing", b"ambiguous"):
            answers.append(None)
            continue
        if len(header) != 3 or not header[2].isdigit():
            return None
        size = int(header[2])
        body, pos = data[pos : pos + size], pos + size
        if len(body) != size or data[pos : pos + 1] != b"\n":
            return None
        pos += 1
        answers.append(bytes(body) if header[1] == b"blob" else None)
    return answers if pos == len(data) else None


RefsMark = tuple[tuple[str, int, int, int, int] | tuple[str], ...]


def refs_mark(common_dir: Path) -> tuple[RefsMark, bool]:
    """How the files that hold a repo's tags look (packed-refs, every folder under
    refs/tags, a reftable), and whether all were last changed over _SETTLED_NS ago.
    Git writes a ref through a lock file renamed into place, so a new, moved or
    deleted tag changes its folder's or packed-refs' times."""
    now = time.time_ns()
    paths = [common_dir / "packed-refs", common_dir / "reftable", common_dir / "refs" / "tags"]
    paths += [Path(top) / d for top, dirs, _ in os.walk(paths[-1]) for d in dirs]
    marks: list[tuple[str, int, int, int, int] | tuple[str]] = []
    newest = 0
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:
            marks.append((str(path),))
            continue
        marks.append((str(path), st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino))
        newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
    return tuple(marks), newest < now - _SETTLED_NS


class Shared(Generic[T]):
    """One task per key: callers that ask while it runs share its answer (errors
    included). With `keep`, answers stay for the object's life (one check's reads);
    without, a key is read again once its read has ended (reads that overlap share)."""

    def __init__(self, *, keep: bool) -> None:
        self._keep = keep
        self._tasks: dict[Hashable, asyncio.Task[T]] = {}

    async def get(self, key: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        task = self._tasks.get(key)
        if task is None or task.get_loop() is not asyncio.get_running_loop():

            async def run() -> T:
                return await make()

            task = self._tasks[key] = asyncio.create_task(run(), name=f"recipes-{key}")
            task.add_done_callback(self._done(key))
        # Shielded: one caller being cancelled must not cancel the others' answer.
        return await asyncio.shield(task)

    def _done(self, key: Hashable) -> Callable[[asyncio.Task[T]], None]:
        def done(task: asyncio.Task[T]) -> None:
            if not task.cancelled():
                task.exception()  # retrieved: a read nobody waits for any more logs nothing
            if not self._keep and self._tasks.get(key) is task:
                del self._tasks[key]

        return done

    def cancel(self) -> None:
        for task in self._tasks.values():
            task.cancel()
