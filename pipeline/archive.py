"""The streaming zip: the only module that knows zipstream-ng.

Entries go in, in order; bytes come out into any :class:`~pipeline.sinks.Sink`, written by a
thread of their own so that writing and hashing overlap with reading, CRC and compression. XML is
deflated, images are stored (they are compressed already); zip64 extensions apply by themselves.
Entry times come from the data, so the same data gives the same bytes.
"""

from __future__ import annotations

import io
import os
import threading
import types
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import IO, BinaryIO, Literal

import zipstream.ng
from zipstream import ZIP_DEFLATED, ZIP_STORED

from pipeline.sinks import Sink
from pipeline.sinks.threaded import Block, ThreadedSink

EntryKind = Literal["xml", "image", "data", "binary"]

#: compression per entry kind: text compresses well, images and model weights do not
COMPRESSION: dict[EntryKind, int] = {
    "xml": ZIP_DEFLATED, "data": ZIP_DEFLATED, "image": ZIP_STORED, "binary": ZIP_STORED,
}
DEFLATE_LEVEL = 6
CHUNK = 1 << 20
#: written read buffers kept for reuse (each CHUNK bytes)
SPARE_BUFFERS = 4
#: 1980-01-01, the earliest zip timestamp: used when the data has no time of its own
EPOCH = (1980, 1, 1, 0, 0, 0)


def zip_time(when: datetime | None) -> tuple[int, int, int, int, int, int]:
    """A zip entry time (local fields of ``when``, seconds even) or :data:`EPOCH`."""
    if when is None:
        return EPOCH
    return max(EPOCH, (when.year, when.month, when.day, when.hour, when.minute, when.second))


# --- zipstream-ng, with the two hooks it lacks ---------------------------------------------------

_entry_time = threading.local()


class _DataTimedInfo(zipstream.ng.ZipStreamInfo):
    """Entry header whose time comes from the data (set per entry, on the generating thread)."""

    def __init__(self, filename: str, date_time: tuple[int, ...] | None = None) -> None:
        super().__init__(filename, date_time or getattr(_entry_time, "value", None))


class _CentralDirectory:
    """The central directory records of the written entries, in one contiguous buffer.

    zipstream-ng keeps each entry's whole ZipInfo until the footer: over tens of thousands of
    entries those small long-lived objects pin the allocator's pools among transient ones and
    memory creeps up. The stream's file list keeps one slot per entry (for the count): the first
    slot yields the whole buffer, the others nothing.
    """

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = bytearray()

    def _central_directory_header_data(self) -> bytes:
        return bytes(self.data)


class _Recorded:
    """The slot of an entry whose record is already in the :class:`_CentralDirectory`."""

    __slots__ = ()

    def _central_directory_header_data(self) -> bytes:
        return b""


_RECORDED = _Recorded()


def _rebound(function: types.FunctionType, **names: object) -> types.FunctionType:
    """``function`` with some of its module's global names bound to other objects, for this
    class only (the module itself is left alone)."""
    namespace = {**function.__globals__, **names}
    clone = types.FunctionType(function.__code__, namespace, function.__name__, function.__defaults__,
                               function.__closure__)
    clone.__kwdefaults__ = function.__kwdefaults__
    return clone


class DataTimedZipStream(zipstream.ng.ZipStream):
    """zipstream-ng's ZipStream with entry times from the data and a flat central directory.

    The only place that touches zipstream-ng's private state, for the two things it has no hook
    for (tested against the pinned versions in ``tests/test_archive.py``, which fails when that
    state changes):

    * entries are stamped with the clock: ``_gen_file_entry`` is used with ``ZipStreamInfo``
      bound to :class:`_DataTimedInfo` for this class only;
    * ``_filelist`` keeps a ZipInfo per entry until the footer: after each entry its record goes
      into a :class:`_CentralDirectory` and the slot is replaced (see :meth:`entry`).
    """

    _gen_file_entry = _rebound(zipstream.ng.ZipStream._gen_file_entry, ZipStreamInfo=_DataTimedInfo)

    def __init__(self) -> None:
        super().__init__(compress_type=ZIP_STORED)
        self._central = _CentralDirectory()

    def entry(self, when: tuple[int, ...]) -> Iterator[bytes]:
        """The bytes of the next queued entry, stamped ``when``; its record then joins the
        central directory buffer."""
        _entry_time.value = when
        yield from self.file()
        written = self._filelist
        self._central.data += written[-1]._central_directory_header_data()
        written[-1] = self._central if len(written) == 1 else _RECORDED


# --- the archive ----------------------------------------------------------------------------------


class _ReadBuffer(bytearray):
    """A buffer that :meth:`ZipArchive._read` fills and that comes back once written."""

    __slots__ = ()


class ZipArchive:
    """Streams entries into a zip written into ``sink``, in the order they are added.

    ``add`` queues an entry (a file path, an open file, bytes, or an iterable of byte chunks
    consumed lazily); ``flush`` encodes everything queued, and ``close`` writes the central
    directory and waits until the sink has every byte (committing the sink is its owner's call).
    Between flushes only the queued entries' iterators are held, never their data.
    """

    def __init__(self, sink: Sink, *, deflate_level: int = DEFLATE_LEVEL) -> None:
        self._zs = DataTimedZipStream()
        self._level = deflate_level
        self._spare: deque[_ReadBuffer] = deque()
        self._out = ThreadedSink(sink, written=self._give_back)
        self._times: deque[tuple[int, ...]] = deque()

    @property
    def size(self) -> int:
        """Bytes written so far (all of them once closed)."""
        return self._out.size

    def add(
        self, name: str, data: Path | BinaryIO | Iterable[bytes] | bytes, kind: EntryKind,
        when: datetime | None = None,
    ) -> None:
        compress = COMPRESSION[kind]
        level = self._level if compress == ZIP_DEFLATED else None
        size = None
        if isinstance(data, Path):
            data, size = self._read(data), data.stat().st_size
        elif isinstance(data, io.IOBase):  # an open file, read from where it stands
            size = os.fstat(data.fileno()).st_size - data.tell()
            data = self._read(data)
        self._zs.add(data, name, size=size, compress_type=compress, compress_level=level)
        self._times.append(zip_time(when))

    def flush(self) -> None:
        """Encode and write every queued entry (blocking: run it in a worker thread)."""
        write = self._out.write
        while self._times:
            for chunk in self._zs.entry(self._times.popleft()):
                write(chunk)

    def close(self) -> None:
        """Write the rest and the central directory; wait until the sink has it all."""
        self.flush()
        for chunk in self._zs.footer():
            self._out.write(chunk)
        self._out.drain()

    def abort(self) -> None:
        """Stop writing (the sink is left to its owner to abort)."""
        self._out.stop()

    def _read(self, source: Path | BinaryIO) -> Iterator[memoryview]:
        """A file's bytes (a path, or an open file from where it stands), lazily, in chunks read
        into buffers that come back once written.

        A fresh megabyte per chunk is paged in by the kernel on every read (large blocks are
        mmapped, see :mod:`pipeline.memory`): reusing a few buffers halves the cost of copying
        an image. Each chunk is valid until it is written.
        """
        with open(source, "rb", buffering=0) if isinstance(source, Path) else nullcontext(source) as fh:
            while True:
                buffer = self._spare.pop() if self._spare else _ReadBuffer(CHUNK)
                if not (n := fh.readinto(buffer)):
                    self._spare.append(buffer)
                    return
                yield memoryview(buffer)[:n]

    def _give_back(self, block: Block) -> None:
        """A written chunk's buffer, back for :meth:`_read`."""
        if type(block) is memoryview and type(block.obj) is _ReadBuffer and len(self._spare) < SPARE_BUFFERS:
            self._spare.append(block.obj)


def iter_chunks(handle: IO[bytes], chunk: int = CHUNK) -> Iterator[bytes]:
    """An open file's remaining bytes, lazily, in chunks."""
    while block := handle.read(chunk):
        yield block
