"""A sink written by a thread of its own, so that writing and hashing overlap with the caller's
reading, CRC and compression (all release the GIL on large buffers)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from pipeline.sinks.base import Sink

#: blocks handed to the thread are at least this large (small writes are gathered), at most
#: WRITE_QUEUE of them waiting
WRITE_BLOCK = 1 << 18
WRITE_QUEUE = 16

Block = bytes | memoryview


class ThreadedSink:
    """Writes into ``sink`` from a thread; a Sink itself (``commit`` waits for the thread first).

    Large writes are queued as they are, without a copy: ``written(block)`` is called once the
    thread is done with one, so the caller may reuse its buffer. An error of the thread is raised
    by the next ``write`` or by ``drain``/``commit``.
    """

    def __init__(self, sink: Sink, *, written: Callable[[Block], None] | None = None) -> None:
        self.sink = sink
        self._written = written or (lambda block: None)
        self._pending = bytearray()
        self._queue: queue.Queue[Block | None] = queue.Queue(WRITE_QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pipeline-output", daemon=True)
        self._thread.start()

    @property
    def size(self) -> int:
        return self.sink.size

    @property
    def sha256(self) -> str:
        return self.sink.sha256

    @property
    def location(self) -> str:
        return self.sink.location

    @property
    def etag(self) -> str | None:
        return self.sink.etag

    def write(self, data: Block) -> None:
        if len(data) < WRITE_BLOCK:
            self._pending += data
            self._written(data)
            if len(self._pending) < WRITE_BLOCK:
                return
            data = bytes(self._pending)
        elif self._pending:
            self._put(bytes(self._pending))
        self._pending.clear()
        self._put(data)

    def _put(self, block: Block | None) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(block)

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self.sink.write(block)
                except BaseException as exc:  # reported to the producer by _put/drain
                    self._error = exc
            self._written(block)

    def drain(self) -> None:
        """Write what is pending and wait for the thread; re-raise its error."""
        if self._thread.is_alive():
            if self._pending:
                self._put(bytes(self._pending))
                self._pending.clear()
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def commit(self) -> str:
        self.drain()
        return self.sink.commit()

    def stop(self) -> None:
        """Stop the thread, dropping what is queued (the sink stays as it is)."""
        if self._thread.is_alive():
            self._error = self._error or RuntimeError("aborted")
            self._queue.put(None)
            self._thread.join()

    def abort(self) -> None:
        self.stop()
        self.sink.abort()
