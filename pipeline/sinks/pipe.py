"""A sink read by a coroutine in this process as it is written: an HTTP response of an export
made on the fly. Nothing is stored; ``write`` waits while a few chunks are unread (memory stays
flat however large the export), and fails once the reader has gone (the client hung up), which
stops the export. ``commit`` and ``abort`` never wait: they may be called from the event loop
that runs the reader."""

from __future__ import annotations

import errno
import queue
import threading
from collections.abc import AsyncIterator

import anyio

from pipeline.sinks.base import ByteSink

#: chunks written but not yet read before ``write`` waits
DEPTH = 4
_POLL = 0.2


class BrokenPipe(Exception):
    """The writer of a :class:`PipeSink` aborted: what was read is not a whole output."""


class PipeSink(ByteSink):
    """Bytes written from threads, read with :meth:`chunks` in the event loop.

    ``commit`` ends the stream once the reader has every chunk; ``abort`` ends it with
    :class:`BrokenPipe` at once, so that the reader cuts the response short instead of ending it
    as if it were complete.
    """

    def __init__(self, location: str, *, depth: int = DEPTH) -> None:
        super().__init__(location)
        self._queue: queue.Queue[bytes] = queue.Queue(depth)
        self._gone = threading.Event()  # the reader left
        self._ended = threading.Event()  # committed or aborted: no more writes
        self._failed: BrokenPipe | None = None

    def _write(self, data: bytes | memoryview) -> None:
        if not len(data):
            return
        item = bytes(data)  # the writer reuses its buffers
        while not self._gone.is_set():
            try:
                self._queue.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue
        raise BrokenPipeError(errno.EPIPE, "the reader went away")

    def _publish(self) -> str:
        self._ended.set()
        return self.location

    def _discard(self) -> None:
        self._failed = BrokenPipe(f"{self.location}: the export failed")
        self._ended.set()

    def _get(self) -> bytes | None:
        """The next chunk; None at the end (BrokenPipe if aborted, or the reader left)."""
        while not self._gone.is_set():
            if self._failed is not None:
                raise self._failed
            ended = self._ended.is_set()  # then every write was queued before: take, don't wait
            try:
                return self._queue.get(block=not ended, timeout=_POLL)
            except queue.Empty:
                if ended:
                    if self._failed is not None:
                        raise self._failed from None
                    return None
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The bytes as they come, until the export commits; raises :class:`BrokenPipe` if it
        aborts. Leaving the loop early (a client that hung up) makes the writer's next write fail."""
        try:
            while (item := await anyio.to_thread.run_sync(self._get, abandon_on_cancel=True)) is not None:
                yield item
        finally:
            self._gone.set()

    def close(self) -> None:
        """The reader is gone (or never came): writes fail from now on."""
        self._gone.set()
