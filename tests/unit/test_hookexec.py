"""The bounded tail a hook's output is read into."""

from __future__ import annotations

from bot.ops.swarm.hookexec import BoundedTail, collect, tail_text


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


def test_a_log_stream_keeps_its_newest_whole_lines() -> None:
    lines = [f"2024-01-01T00:00:{n:02d}Z line {n} ".encode() + b"x" * 90 + b"\n" for n in range(50)]
    assert tail_text(lines[:3], limit=10_000) == b"".join(lines[:3]).decode()
    kept = tail_text(lines, limit=1000)
    assert kept.endswith("x\n")
    assert kept.startswith("2024-01-01T00:00:")  # the cut first line went
    assert kept.splitlines()[-1].startswith("2024-01-01T00:00:49Z line 49")
    assert len(kept.encode()) <= 1000
