"""A sink read by a coroutine in this process as it is written: an HTTP response of an export
made on the fly. Nothing is stored; ``write`` waits while a few chunks are unread (memory stays
flat however large the export), and fails once the reader has gone (the client hung up), which
stops the export."""

from __future__ import annotations

import contextlib
import errno
import queue
import threading
from collections.abc import AsyncIterator

import anyio

from pipeline.sinks.base import ByteSink

#: chunks written but not yet read before ``write`` waits
DEPTH = 4
_POLL = 0.2
_END = b""


class PipeSink(ByteSink):
    """Bytes written from a thread, read with :meth:`chunks` in the event loop.

    ``commit`` ends the stream; ``abort`` ends it with :class:`BrokenPipe`, so that the reader
    can cut the response short instead of ending it as if it were complete.
    """

    def __init__(self, location: str, *, depth: int = DEPTH) -> None:
        super().__init__(location)
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(depth)
        self._gone = threading.Event()

    def _write(self, data: bytes | memoryview) -> None:
        if len(data):
            self._put(bytes(data))  # the writer reuses its buffers

    def _publish(self) -> str:
        self._put(_END)
        return self.location

    def _discard(self) -> None:
        with contextlib.suppress(OSError):  # nobody is reading
            self._put(BrokenPipe(f"{self.location}: the export failed"))

    def _put(self, item: bytes | BaseException) -> None:
        while not self._gone.is_set():
            try:
                self._queue.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue
        raise BrokenPipeError(errno.EPIPE, "the reader went away")

    def _get(self) -> bytes | BaseException | None:
        while not self._gone.is_set():
            try:
                return self._queue.get(timeout=_POLL)
            except queue.Empty:
                continue
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The bytes as they come, until the export commits; raises :class:`BrokenPipe` if it
        aborts. Leaving the loop early (a client that hung up) makes the writer's next write fail."""
        try:
            while True:
                item = await anyio.to_thread.run_sync(self._get, abandon_on_cancel=True)
                if isinstance(item, BaseException):
                    raise item
                if not item:
                    return
                yield item
        finally:
            self._gone.set()

    def close(self) -> None:
        """The reader is gone (or never came): writes fail from now on."""
        self._gone.set()


class BrokenPipe(Exception):
    """The writer of a :class:`PipeSink` aborted: what was read is not a whole output."""
