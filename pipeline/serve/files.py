"""A local archive read for a download: in the event loop when the page cache holds it, else in a
thread.

A permanent link serves archives of a gigabyte to many clients at once from one event loop.
Reading each chunk in a worker thread (what :class:`starlette.responses.FileResponse` does) costs
a hop to a thread and back per chunk. An archive just written, or being read by other clients, is
in the page cache: whether a chunk is there is asked of the kernel with ``preadv(RWF_NOWAIT)`` of
one byte at each end of the chunk (it answers ``EAGAIN`` rather than wait for the disk), and only
a chunk that is not is read in a thread. (Reading the whole chunk with ``RWF_NOWAIT`` would need a
zero-filled buffer per chunk, which cost 12% of the throughput: ``os.pread`` makes its bytes
without one.) The kernel evicts a file's pages oldest first, so a chunk whose two ends are cached
has its middle cached but in a race with memory pressure, when that read blocks the loop briefly.
Where ``RWF_NOWAIT`` does not exist (not Linux), every chunk is read in a thread.
"""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

#: bytes per chunk sent: 2 MiB halves the loop's work per byte against 1 MiB at loopback speeds,
#: and bounds what a slow client holds (one chunk read, one in the socket's buffer)
CHUNK = 2 << 20

_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)


async def read_file(
    path: Path, start: int, end: int, chunk: int = CHUNK
) -> AsyncIterator[bytes]:
    """Bytes ``start`` to ``end`` (exclusive) of ``path``, ``chunk`` at a time; OSError if the file
    ends before ``end`` (cut short behind our back: the response is then cut short too)."""
    fd = await anyio.to_thread.run_sync(os.open, path, os.O_RDONLY)
    try:
        offset = start
        while offset < end:
            size = min(chunk, end - offset)
            if cached(fd, offset, size):
                data = os.pread(fd, size, offset)
            else:
                data = await anyio.to_thread.run_sync(os.pread, fd, size, offset)
            if not data:
                raise OSError(errno.EIO, f"{path}: ends at {offset:,} bytes, {end:,} expected")
            offset += len(data)
            yield data
    finally:
        os.close(fd)


def cached(fd: int, offset: int, size: int) -> bool:
    """Whether the page cache holds the first and the last byte of ``size`` bytes at ``offset``
    (False where that cannot be asked without blocking)."""
    if _NOWAIT is None:
        return False
    probe = bytearray(1)
    try:
        return all(os.preadv(fd, [probe], at, _NOWAIT) == 1 for at in {offset, offset + size - 1})
    except BlockingIOError:
        return False
    except OSError as exc:  # a file system without RWF_NOWAIT; or past the end: read in a thread
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            return False
        raise
