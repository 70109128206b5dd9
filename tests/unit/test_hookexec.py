"""The bounded tail a hook's output is read into."""

from __future__ import annotations

from bot.ops.swarm.hookexec import BoundedTail, collect


def test_small_output_is_kept_whole() -> None:
    assert collect([b"dump ", b"ok\n"], limit=100) == "dump ok\n"


def test_a_flood_keeps_its_last_bytes_and_says_how_many_went() -> None:
    chunks = [bytes([65 + n % 26]) * 1000 for n in range(1000)]  # 1 MB in 1 kB chunks
    text = collect(chunks, limit=4096)
    note, _, kept = text.partition("\n")
    assert note == f"[the first {1_000_000 - 4096} bytes of output were left out]"
    assert kept.encode() == b"".join(chunks)[-4096:]


def test_the_tail_never_holds_more_than_the_limit_and_one_chunk() -> None:
    tail = BoundedTail(4096)
    for _ in range(10_000):
        tail.feed(b"x" * 1000)
        assert tail._size <= 4096 + 1000
