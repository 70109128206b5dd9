"""bot/ops/swarm/execfile.py (`!cmd`'s exec): the files go in as a tar, and what the
function prints is streamed with only its tail kept, so a function that prints without
end cannot fill the bot's memory. The real daemon: tests/integration/test_cmd_swarm.py."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Iterator
from typing import Any

from bot.ops.swarm.execfile import OUTPUT_LIMIT, exec_with_files

CHUNK = b"x" * 1023 + b"\n"


class Stream:
    def __init__(self, chunks: int) -> None:
        self.chunks, self.read, self.closed = chunks, 0, False
        self._response = self

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.chunks):
            self.read += 1
            yield CHUNK

    def close(self) -> None:
        self.closed = True


class Api:
    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.argv: list[str] = []

    def exec_create(self, container_id: str, argv: list[str], **_: Any) -> dict[str, str]:
        self.argv = argv
        return {"Id": "exec-1"}

    def exec_start(self, exec_id: str, **_: Any) -> Stream:
        return self.stream

    def exec_inspect(self, exec_id: str) -> dict[str, int]:
        return {"ExitCode": 3}


class Container:
    id = "c1"

    def __init__(self, api: Api) -> None:
        self.client = self
        self.api = api
        self.archives: list[tuple[str, bytes]] = []

    def put_archive(self, folder: str, data: bytes) -> bool:
        self.archives.append((folder, data))
        return True


class Client:
    def __init__(self, container: Container) -> None:
        self.containers = self
        self._container = container

    def list(self, filters: dict[str, str]) -> list[Container]:
        return [self._container]


class FakeSwarm:
    def __init__(self, client: Client) -> None:
        self.client = client

    async def _sdk(self, fn: Callable[[Any], Any]) -> Any:
        return fn(self.client)


async def test_a_long_output_is_streamed_and_only_its_tail_kept() -> None:
    stream = Stream(chunks=4 * OUTPUT_LIMIT // len(CHUNK))
    api = Api(stream)
    container = Container(api)
    swarm: Any = FakeSwarm(Client(container))
    code, output = await exec_with_files(
        swarm, "cloud_test", "app", {"abra.sh": b"f() { :; }\n"}, ["sh", "-c", "f"]
    )
    assert code == 3
    assert api.argv == ["sh", "-c", "f"]
    assert stream.read == stream.chunks
    assert stream.closed
    assert output.startswith("[the first ")
    assert len(output) < OUTPUT_LIMIT + 100
    ((folder, data),) = container.archives
    assert folder == "/tmp"
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        member = archive.extractfile("abra.sh")
        assert member is not None
        assert member.read() == b"f() { :; }\n"
