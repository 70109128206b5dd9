"""Recipe repos on real git: versions, release notes, fetch, private checkouts."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.errors import UserError
from bot.ops.process import ProcessResult, run_process
from bot.ops.recipes import (
    RecipeError,
    RecipeReads,
    RecipeRepo,
    Recipes,
    Version,
    parse_batch,
    parse_version,
    step_kind,
)
from tests.harness.recipes import commit_files, git, make_recipe

# --- pure version logic ------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "key", "upstream"),
    [
        ("2.0.1+1.0.6-social-amd64", (2, 0, 1), "1.0.6-social-amd64"),
        ("v1.2.3", (1, 2, 3), ""),
        ("10.0.0+2.1+build.7", (10, 0, 0), "2.1+build.7"),
        ("0.0.0+v1", (0, 0, 0), "v1"),
    ],
)
def test_parse_release_tags(tag: str, key: tuple[int, int, int], upstream: str) -> None:
    version = parse_version(tag)
    assert version is not None
    assert (version.key, version.text, version.upstream) == (key, tag, upstream)


@pytest.mark.parametrize(
    "tag", ["nightly", "1.2", "1.2.3.4", "01.2.3", "1.2.3+", "1.2.3-rc1", "release/1.0.0", ""]
)
def test_other_tags_are_not_releases(tag: str) -> None:
    assert parse_version(tag) is None


def _v(text: str) -> Version:
    version = parse_version(text)
    assert version is not None
    return version


@pytest.mark.parametrize(
    ("old", "new", "kind"),
    [
        ("1.0.0+a", "1.0.1+a", "patch"),
        ("1.0.9", "1.1.0", "minor"),
        ("1.9.9", "2.0.0", "major"),
        ("1.0.0+a", "1.0.0+b", "same"),
        ("2.0.0", "1.9.9", "downgrade"),
        ("9.1.0", "10.0.0", "major"),
    ],
)
def test_step_kind(old: str, new: str, kind: str) -> None:
    assert step_kind(_v(old), _v(new)) == kind


_numbers = st.integers(min_value=0, max_value=10_000)
_keys = st.tuples(_numbers, _numbers, _numbers)


def _tag(key: tuple[int, int, int], upstream: str) -> str:
    return ".".join(map(str, key)) + (f"+{upstream}" if upstream else "")


@given(_keys, _keys, st.sampled_from(["", "1.0", "2.3.4-x"]), st.sampled_from(["", "9.9"]))
def test_version_order_is_the_numeric_key_order(
    a: tuple[int, int, int], b: tuple[int, int, int], up_a: str, up_b: str
) -> None:
    va, vb = _v(_tag(a, up_a)), _v(_tag(b, up_b))
    assert va.key == a
    assert vb.key == b
    assert (va < vb) == (a < b)
    assert (va == vb) == (a == b)
    assert sum([va < vb, va == vb, va > vb]) == 1  # total
    kind = step_kind(va, vb)
    assert (kind == "same") == (a == b)
    assert (kind == "downgrade") == (b < a)


# --- a recipe repo ------------------------------------------------------------

RELEASES: list[tuple[str, dict[str, str]]] = [
    ("0.1.0+1.0", {"compose.yml": "image: app:1.0\n", "abra.sh": "export CONF_VERSION=v1\n"}),
    ("1.0.0+1.1", {"compose.yml": "image: app:1.1\n", "release/1.0.0+1.1": "First stable.\n"}),
    ("9.1.0+1.2", {"compose.yml": "image: app:1.2\n"}),
    ("10.0.0+2.0", {"compose.yml": "image: app:2.0\n", "release/10.0.0+2.0": "Breaking!\n"}),
    ("nightly", {"compose.yml": "image: app:nightly\n"}),
]


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    return make_recipe(tmp_path / "recipes", "app", RELEASES)


@pytest.fixture
def repo(recipe: Path) -> RecipeRepo:
    return RecipeRepo(recipe)


def test_versions_are_numeric_and_ignore_other_tags(repo: RecipeRepo) -> None:
    assert repo.name == "app"
    assert [v.text for v in repo.versions()] == [
        "0.1.0+1.0",
        "1.0.0+1.1",
        "9.1.0+1.2",
        "10.0.0+2.0",
    ]
    newest = repo.newest()
    assert newest is not None
    assert newest.text == "10.0.0+2.0"
    assert repo.version("9.1.0+1.2").upstream == "1.2"


def test_unknown_version_lists_the_newest(repo: RecipeRepo) -> None:
    with pytest.raises(
        RecipeError, match=r"unknown version 3.0.0 .*known: 10.0.0\+2.0, 9.1.0\+1.2"
    ):
        repo.version("3.0.0")
    with pytest.raises(RecipeError):
        repo.version("nightly")


def test_empty_repo(tmp_path: Path) -> None:
    empty = make_recipe(tmp_path, "empty", [])
    repo = RecipeRepo(empty)
    assert repo.versions() == []
    assert repo.newest() is None
    with pytest.raises(RecipeError, match="known: none"):
        repo.version("1.0.0")
    with pytest.raises(RecipeError, match="no commits"):
        repo.head()


def test_not_a_repo(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    for path in (tmp_path / "plain", tmp_path / "missing"):
        with pytest.raises(RecipeError, match="not a git repository") as caught:
            RecipeRepo(path)
        assert isinstance(caught.value, UserError)


def test_release_notes(repo: RecipeRepo, recipe: Path) -> None:
    assert repo.release_notes(None, "10.0.0+2.0") == [
        ("1.0.0+1.1", "First stable.\n"),
        ("10.0.0+2.0", "Breaking!\n"),
    ]
    assert repo.release_notes("1.0.0+1.1", "10.0.0+2.0") == [("10.0.0+2.0", "Breaking!\n")]
    assert repo.release_notes(None, "9.1.0+1.2") == [("1.0.0+1.1", "First stable.\n")]
    assert repo.release_notes("10.0.0+2.0", "10.0.0+2.0") == []
    # A version that is no longer tagged (e.g. read from a deployed label) still bounds the range.
    assert repo.release_notes("5.0.0+gone", "10.0.0+2.0") == [("10.0.0+2.0", "Breaking!\n")]
    # After a chaos deploy the baseline is a commit: every note up to the target.
    assert len(repo.release_notes("nightly", "10.0.0+2.0")) == 2
    with pytest.raises(RecipeError, match="unknown version"):
        repo.release_notes(None, "11.0.0")


def test_notes_written_after_tagging_are_read_from_upto(recipe: Path) -> None:
    commit_files(recipe, {"release/9.1.0+1.2": "Written late.\n"}, "notes for 9.1.0")
    git(recipe, "tag", "10.0.1+2.0")
    notes = RecipeRepo(recipe).release_notes("1.0.0+1.1", "10.0.1+2.0")
    assert notes == [("9.1.0+1.2", "Written late.\n"), ("10.0.0+2.0", "Breaking!\n")]


def test_annotated_tags_count(recipe: Path) -> None:
    commit_files(recipe, {"release/11.0.0": "Annotated.\n"}, "11")
    git(recipe, "tag", "-a", "-m", "eleven", "11.0.0")
    repo = RecipeRepo(recipe)
    assert repo.versions()[-1].text == "11.0.0"
    assert repo.release_notes("10.0.0+2.0", "11.0.0") == [("11.0.0", "Annotated.\n")]


def test_head_and_dirty(repo: RecipeRepo, recipe: Path) -> None:
    assert repo.head() == git(recipe, "rev-parse", "HEAD").strip()
    assert not repo.is_dirty()
    (recipe / "new-file").write_text("untracked\n")
    assert repo.is_dirty()
    (recipe / "new-file").unlink()
    (recipe / "compose.yml").write_text("changed\n")
    assert repo.is_dirty()


# --- fetch --------------------------------------------------------------------


def test_fetch_gets_new_tags_and_reports_a_lost_remote(recipe: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clones" / "app"
    clone.parent.mkdir()
    git(clone.parent, "clone", "--quiet", f"file://{recipe}", "app")
    local = RecipeRepo(clone)
    assert local.newest() == _v("10.0.0+2.0")
    commit_files(recipe, {"release/10.1.0+2.1": "New.\n"}, "10.1")
    git(recipe, "tag", "10.1.0+2.1")
    local.fetch()
    newest = local.newest()
    assert newest is not None
    assert newest.text == "10.1.0+2.1"
    assert local.release_notes("10.0.0+2.0", "10.1.0+2.1") == [("10.1.0+2.1", "New.\n")]

    shutil.rmtree(recipe)
    with pytest.raises(RecipeError, match=r"git fetch failed: .*(not|does not) .*repository"):
        local.fetch()


def test_fetch_without_origin(repo: RecipeRepo) -> None:
    with pytest.raises(RecipeError, match="no `origin` remote"):
        repo.fetch()


# --- private checkouts ----------------------------------------------------------


def _worktrees(recipe: Path) -> list[str]:
    return [line for line in git(recipe, "worktree", "list").splitlines() if line]


def test_worktree_checks_out_the_tag_and_goes_away(repo: RecipeRepo, recipe: Path) -> None:
    with repo.worktree("1.0.0+1.1") as checkout:
        assert checkout.name == "app"
        assert (checkout / "compose.yml").read_text() == "image: app:1.1\n"
        assert not (checkout / "release/10.0.0+2.0").exists()
        assert len(_worktrees(recipe)) == 2
        (checkout / "scratch").write_text("left behind by a job\n")
        (checkout / "compose.yml").write_text("edited by a job\n")
    assert not checkout.exists()
    assert not checkout.parent.exists()
    assert len(_worktrees(recipe)) == 1
    assert (recipe / "compose.yml").read_text() == "image: app:nightly\n"
    assert not repo.is_dirty()


def test_worktree_of_a_commit_in_a_chosen_parent(
    repo: RecipeRepo, recipe: Path, tmp_path: Path
) -> None:
    sha = git(recipe, "rev-parse", "0.1.0+1.0").strip()
    (tmp_path / "work").mkdir()
    with repo.worktree(sha, parent=tmp_path / "work") as checkout:
        assert checkout.is_relative_to(tmp_path / "work")
        assert (checkout / "abra.sh").exists()
        assert git(checkout, "rev-parse", "HEAD").strip() == sha
    assert list((tmp_path / "work").iterdir()) == []


def test_worktree_is_removed_when_the_job_fails(repo: RecipeRepo, recipe: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), repo.worktree("9.1.0+1.2") as checkout:
        raise RuntimeError("boom")
    assert not checkout.exists()
    assert len(_worktrees(recipe)) == 1


@pytest.mark.parametrize("ref", ["3.0.0", "--orphan", "", "HEAD~99"])
def test_worktree_refuses_unknown_refs(repo: RecipeRepo, recipe: Path, ref: str) -> None:
    with pytest.raises(RecipeError), repo.worktree(ref):
        pytest.fail("no checkout expected")
    assert len(_worktrees(recipe)) == 1


def test_concurrent_worktrees_of_one_repo(recipe: Path) -> None:
    tags = ["0.1.0+1.0", "1.0.0+1.1", "9.1.0+1.2", "10.0.0+2.0"]
    barrier = threading.Barrier(len(tags), timeout=30)
    seen: dict[str, str] = {}
    errors: list[BaseException] = []

    def job(tag: str) -> None:
        try:
            # one RecipeRepo per job, as each to_thread call may build its own
            with RecipeRepo(recipe).worktree(tag) as checkout:
                barrier.wait()  # every checkout exists at the same time
                seen[tag] = (checkout / "compose.yml").read_text()
                barrier.wait()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=job, args=(tag,)) for tag in tags]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert seen == {tag: f"image: app:{tag.split('+')[1]}\n" for tag in tags}
    assert len(_worktrees(recipe)) == 1


def test_chaos_worktree_copies_uncommitted_changes(repo: RecipeRepo, recipe: Path) -> None:
    (recipe / "compose.yml").write_text("image: app:local-edit\n")
    (recipe / "compose.new.yml").write_text("untracked\n")
    (recipe / "link").symlink_to("/etc/hostname")
    with repo.chaos_worktree() as checkout:
        assert (checkout / "compose.yml").read_text() == "image: app:local-edit\n"
        assert (checkout / "compose.new.yml").exists()
        assert (checkout / "link").is_symlink()
        assert not (checkout / ".git").exists()
        (recipe / "compose.yml").write_text("edited during the deploy\n")
        assert (checkout / "compose.yml").read_text() == "image: app:local-edit\n"
    assert not checkout.exists()
    assert (recipe / "compose.new.yml").exists()


# --- batched reads (one git process per recipe) -----------------------------------


@pytest.fixture
def git_runs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The git processes the batched reads start, by their arguments."""
    import bot.ops.recipes as recipes_module

    runs: list[list[str]] = []
    real = run_process

    async def counted(argv: list[str], **kwargs: Any) -> ProcessResult:
        runs.append(list(argv[1:]))
        return await real(argv, **kwargs)

    monkeypatch.setattr(recipes_module, "run_process", counted)
    return runs


async def test_refs_match_the_sync_reads(repo: RecipeRepo, recipe: Path) -> None:
    commit_files(recipe, {"release/11.0.0": "Annotated.\n"}, "11")
    git(recipe, "tag", "-a", "-m", "eleven", "11.0.0")
    refs = await repo.refs()
    assert list(refs.versions) == repo.versions()
    assert refs.newest() == repo.newest()
    assert refs.version("9.1.0+1.2").upstream == "1.2"
    assert set(refs.tags) == {
        "0.1.0+1.0",
        "1.0.0+1.1",
        "9.1.0+1.2",
        "10.0.0+2.0",
        "11.0.0",
        "nightly",
    }
    # An annotated tag names its commit, as a lightweight one does; dates are unix times.
    for name in ("11.0.0", "nightly"):
        assert refs.tags[name].commit == git(recipe, "rev-parse", f"{name}^{{commit}}").strip()
        assert refs.tags[name].date > 1_500_000_000
    with pytest.raises(RecipeError, match=r"unknown version 3.0.0 .*known: 11.0.0, 10.0.0\+2.0"):
        refs.version("3.0.0")


async def test_refs_of_an_empty_repo(tmp_path: Path) -> None:
    refs = await RecipeRepo(make_recipe(tmp_path, "empty", [])).refs()
    assert (refs.versions, refs.newest(), dict(refs.tags)) == ((), None, {})
    with pytest.raises(RecipeError, match="known: none"):
        refs.version("1.0.0")


@pytest.mark.parametrize(
    ("after", "upto"),
    [
        (None, "10.0.0+2.0"),
        ("1.0.0+1.1", "10.0.0+2.0"),
        (None, "9.1.0+1.2"),
        ("10.0.0+2.0", "10.0.0+2.0"),
        ("5.0.0+gone", "10.0.0+2.0"),
        ("nightly", "10.0.0+2.0"),
    ],
)
async def test_batched_notes_match_the_sync_ones(
    repo: RecipeRepo, after: str | None, upto: str, git_runs: list[list[str]]
) -> None:
    assert await repo.release_notes_async(after, upto) == repo.release_notes(after, upto)
    assert [run[0] for run in git_runs] == ["for-each-ref", "cat-file"][: len(git_runs)]


async def test_batched_notes_written_late_odd_bytes_and_folders(recipe: Path) -> None:
    commit_files(recipe, {"release/9.1.0+1.2": "Written late: café ✓\n"}, "notes for 9.1.0")
    git(recipe, "tag", "10.0.1+2.0")
    repo = RecipeRepo(recipe)
    late = await repo.release_notes_async("1.0.0+1.1", "10.0.1+2.0")
    assert late == repo.release_notes("1.0.0+1.1", "10.0.1+2.0")
    assert late[0] == ("9.1.0+1.2", "Written late: café ✓\n")
    # Latin-1 notes and a folder named like a note: the text the sync read gives.
    (recipe / "release").mkdir(exist_ok=True)
    (recipe / "release/10.0.1+2.0").write_bytes(b"caf\xe9\n")
    (recipe / "release/11.0.0").mkdir()
    (recipe / "release/11.0.0/readme").write_text("not a note\n")
    commit_files(recipe, {}, "odd notes")
    git(recipe, "tag", "11.0.0")
    odd = await repo.release_notes_async("10.0.0+2.0", "11.0.0")
    assert odd == repo.release_notes("10.0.0+2.0", "11.0.0")
    assert odd == [("10.0.1+2.0", "caf\ufffd\n")]


def test_cat_file_output_parses_strictly() -> None:
    blob = b"a" * 40 + b" blob 3\nab\n\n"
    assert parse_batch(blob + b"x:release/x missing\n", 2) == [b"ab\n", None]
    assert parse_batch(b"a" * 40 + b" tree 2\n\x00\x01\n", 1) == [None]
    assert parse_batch(blob, 2) is None  # an answer short
    assert parse_batch(blob + b"extra", 1) is None  # more than was asked for
    assert parse_batch(b"a" * 40 + b" blob 9\nab\n", 1) is None  # cut short


async def test_batched_reads_report_git_errors(recipe: Path) -> None:
    repo = RecipeRepo(recipe)
    shutil.rmtree(recipe / ".git")
    with pytest.raises(RecipeError, match=r"recipe app: git for-each-ref failed: .*not a git"):
        await repo.refs()


async def test_concurrent_asks_share_one_read_and_a_later_one_sees_new_tags(
    recipe: Path, git_runs: list[list[str]]
) -> None:
    recipes = Recipes(recipe.parent)
    answers = await asyncio.gather(*(recipes.refs("app") for _ in range(20)))
    assert len(git_runs) == 1
    assert all(a is answers[0] for a in answers)
    git(recipe, "tag", "12.0.0")
    newest = (await recipes.refs("app")).newest()
    assert newest is not None
    assert newest.text == "12.0.0"
    assert len(git_runs) == 2
    recipes.close()


async def test_one_checks_reads_are_one_per_recipe(
    recipe: Path, tmp_path: Path, git_runs: list[list[str]]
) -> None:
    make_recipe(recipe.parent, "other", [("1.0.0", {"release/1.0.0": "One.\n"}), ("2.0.0", {})])
    opened: list[str] = []

    def open_repo(name: str) -> RecipeRepo:
        opened.append(name)
        return RecipeRepo(recipe.parent / name)

    reads = RecipeReads(open_repo)
    asks: list[tuple[str, str | None, str]] = [
        ("app", after, "10.0.0+2.0") for after in ("0.1.0+1.0", "1.0.0+1.1", "9.1.0+1.2")
    ]
    asks += [("other", None, "2.0.0")] * 5
    got = await asyncio.gather(*(reads.release_notes(*ask) for ask in asks))
    # Sequential asks after the first ones are answered from what was read.
    got.append(await reads.release_notes("app", None, "9.1.0+1.2"))
    repo = RecipeRepo(recipe)
    assert got[:3] == [repo.release_notes(after, upto) for _, after, upto in asks[:3]]
    assert got[3:8] == [[("1.0.0", "One.\n")]] * 5
    assert got[8] == [("1.0.0+1.1", "First stable.\n")]
    assert sorted(opened) == ["app", "other"]
    # app: tags once, notes up to 10.0.0 once, up to 9.1.0 once; other: tags, notes.
    assert sorted(run[0] for run in git_runs) == ["cat-file"] * 3 + ["for-each-ref"] * 2
    with pytest.raises(RecipeError, match="not a git repository"):
        await reads.refs("missing")
    reads.cancel()


async def test_reads_are_kept_while_the_ref_files_stay_as_they_were(
    recipe: Path, git_runs: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.ops.gitbatch as gitbatch

    repo = RecipeRepo(recipe)
    # Just written (the fixture's tags): too fresh to keep, every ask reads.
    await repo.refs()
    await repo.refs()
    assert len(git_runs) == 2
    monkeypatch.setattr(gitbatch, "_SETTLED_NS", 0)  # as if written long ago
    first = await repo.refs()
    notes = await repo.release_notes_async(None, "10.0.0+2.0", first)
    assert await repo.refs() is first
    assert await repo.release_notes_async(None, "10.0.0+2.0", first) == notes
    assert [run[0] for run in git_runs[2:]] == ["for-each-ref", "cat-file"]
    for change in (["tag", "12.0.0"], ["tag", "-d", "12.0.0"], ["pack-refs", "--all"]):
        git(recipe, *change)
        again = await repo.refs()
        assert again is not first
        assert list(again.versions) == repo.versions()
        first = again
    git(recipe, "tag", "-f", "10.0.0+2.0", "0.1.0+1.0")  # moved in place, packed or not
    moved = await repo.refs()
    assert moved.tags["10.0.0+2.0"].commit == git(recipe, "rev-parse", "0.1.0+1.0").strip()
