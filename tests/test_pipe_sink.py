"""The sink of on-the-fly exports: bounded (writes wait for the reader), ends without waiting
(commit and abort are called from the event loop that runs the reader), fails the writer once
the reader has gone, and tells the reader an aborted output from a complete one."""

from __future__ import annotations

import threading

import anyio
import pytest

from pipeline.errors import OutputError
from pipeline.sinks.pipe import DEPTH, BrokenPipe, PipeSink


def _fill(sink: PipeSink, count: int, errors: list[Exception] | None = None) -> threading.Thread:
    def write() -> None:
        try:
            for n in range(count):
                sink.write(bytes([n % 256]) * 1000)
        except OutputError as exc:
            (errors if errors is not None else []).append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def test_commit_from_the_loop_with_a_full_queue_does_not_wait() -> None:
    async def run() -> bytes:
        sink = PipeSink("out.zip")
        writer = _fill(sink, DEPTH)
        await anyio.to_thread.run_sync(writer.join)
        with anyio.fail_after(2):
            sink.commit()  # in the loop's thread, with the queue full: must return at once
        return b"".join([chunk async for chunk in sink.chunks()])

    data = anyio.run(run)
    assert data == b"".join(bytes([n]) * 1000 for n in range(DEPTH))


def test_writes_wait_for_the_reader_and_fail_once_it_left() -> None:
    async def run() -> None:
        sink = PipeSink("out.zip")
        errors: list[Exception] = []
        writer = _fill(sink, DEPTH + 3, errors)
        await anyio.sleep(0.5)
        assert writer.is_alive()  # waiting: at most DEPTH chunks are held
        assert sink.size == DEPTH * 1000
        chunks = sink.chunks()
        assert await chunks.__anext__() == b"\x00" * 1000
        await chunks.aclose()  # the client hung up
        await anyio.to_thread.run_sync(writer.join, 5)
        assert not writer.is_alive() and "reader went away" in str(errors[0])
        with pytest.raises(OutputError, match="reader went away"):
            sink.write(b"more")

    anyio.run(run)


def test_an_aborted_output_is_an_error_for_the_reader() -> None:
    async def run() -> None:
        sink = PipeSink("out.zip")
        sink.write(b"partial")
        sink.abort()
        with pytest.raises(BrokenPipe):
            async for _ in sink.chunks():
                pass

    anyio.run(run)
