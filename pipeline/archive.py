"""The archive sink: the only module that knows zipstream-ng.

Entries go in, in order; bytes come out to an :class:`Output`. XML is deflated, images are
stored (they are compressed already); zip64 extensions apply by themselves. Outputs are atomic:
a file is written under a hidden temporary name next to its final name and only renamed when
complete, so a failed or killed export never leaves a file at the final name.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import io
import os
import queue
import shutil
import sys
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import IO, BinaryIO, Literal

import zipstream.ng
from zipstream import ZIP_DEFLATED, ZIP_STORED, ZipStream

from .errors import OutputError

EntryKind = Literal["xml", "image", "data"]

#: compression per entry kind: text compresses well, images do not
COMPRESSION: dict[EntryKind, int] = {"xml": ZIP_DEFLATED, "data": ZIP_DEFLATED, "image": ZIP_STORED}
DEFLATE_LEVEL = 6
TEMP_PREFIX = ".pipeline-partial-"
#: a temporary file's name until its writer holds its lock (then renamed to TEMP_PREFIX...)
CREATING_PREFIX = ".pipeline-creating-"
CHUNK = 1 << 20
#: the output thread writes blocks of at least this size, at most WRITE_QUEUE of them waiting
WRITE_BLOCK = 1 << 18
WRITE_QUEUE = 16
#: written read buffers kept for reuse (each CHUNK bytes)
SPARE_BUFFERS = 4
#: the output thread asks the kernel to start writing a file to disk every this many bytes
WRITEBACK_EVERY = 8 << 20


#: 1980-01-01, the earliest zip timestamp: used when the data has no time of its own
EPOCH = (1980, 1, 1, 0, 0, 0)
_entry_time = threading.local()


class _DataTimedInfo(zipstream.ng.ZipStreamInfo):
    """Entry header whose time comes from the data (set per entry by :class:`ZipSink`).

    zipstream-ng stamps entries with the clock; reproducible archives need the data's time.
    """

    def __init__(self, filename: str, date_time: tuple[int, ...] | None = None) -> None:
        super().__init__(filename, date_time or getattr(_entry_time, "value", None))


zipstream.ng.ZipStreamInfo = _DataTimedInfo  # type: ignore[misc]


class _CentralDirectory:
    """The central directory records of the written entries, in one contiguous buffer.

    zipstream-ng keeps each entry's whole ZipInfo until the footer: over tens of thousands of
    entries those small long-lived objects pin the allocator's pools among transient ones and
    memory creeps up. zipstream's file list keeps one slot per entry (for the count): the first
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


def zip_time(when: datetime | None) -> tuple[int, int, int, int, int, int]:
    """A zip entry time (local fields of ``when``, seconds even) or :data:`EPOCH`."""
    if when is None:
        return EPOCH
    return max(EPOCH, (when.year, when.month, when.day, when.hour, when.minute, when.second))


SYNC_FILE_RANGE_WRITE = 2


def _writeback() -> Callable[[int, int, int], object] | None:
    """``start(fd, offset, length)``: sync_file_range(2) with SYNC_FILE_RANGE_WRITE, which starts
    writing dirty pages to disk and returns at once (Linux); None elsewhere."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return lambda fd, offset, length: function(fd, offset, length, SYNC_FILE_RANGE_WRITE)


_start_writeback = _writeback()


class _ReadBuffer(bytearray):
    """A buffer that :meth:`Output.read_file` fills and the output thread hands back once written."""

    __slots__ = ()


class Output:
    """A byte sink with a running size and sha256; atomic when it is a file.

    Writing and hashing run on a thread of their own, fed through a bounded queue, so they overlap
    with reading, CRC and compression on the caller's thread (both release the GIL on large
    buffers). That thread also starts the disk writes every :data:`WRITEBACK_EVERY` bytes, so the
    final sync waits for the tail only (it took 10 % of a pass-through export when it waited for
    everything). ``commit()`` waits for them, syncs the file, publishes it under its final name and
    syncs the folder (so the name survives a power cut);
    ``abort()`` (or leaving the ``with`` block on an exception) removes the temporary file. With
    ``overwrite=False`` an existing final name is never replaced: ``commit`` picks ``name_2``,
    ``name_3``... instead, also where the file system has no hard links. Once published, the
    archive is never removed by ``abort()``.
    """

    def __init__(self, path: Path | None, *, overwrite: bool = True) -> None:
        self.final_path = path
        self.overwrite = overwrite
        self.size = 0
        self._sha = hashlib.sha256()
        self._tmp: Path | None = None
        self._fh: BinaryIO
        if path is None:
            self._fh = sys.stdout.buffer
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = path.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}-{path.name}"
            self._fh = _create_locked(self._tmp)
        self._pending = bytearray()
        self._queue: queue.Queue[bytes | memoryview | None] = queue.Queue(WRITE_QUEUE)
        self._spare: deque[_ReadBuffer] = deque()
        self._error: BaseException | None = None
        self._writer = threading.Thread(target=self._drain, name="pipeline-output", daemon=True)
        self._writer.start()

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def write(self, data: bytes | memoryview) -> None:
        """Queue ``data``; small writes are gathered into blocks of :data:`WRITE_BLOCK` bytes,
        large ones go as they are (no copy)."""
        self.size += len(data)
        if len(data) < WRITE_BLOCK:
            self._pending += data
            self._reuse(data)
            if len(self._pending) < WRITE_BLOCK:
                return
            data = bytes(self._pending)
        elif self._pending:
            self._put(bytes(self._pending))
        self._pending.clear()
        self._put(data)

    def read_file(self, source: Path | BinaryIO) -> Iterator[memoryview]:
        """A file's bytes (a path, or an open file from where it stands), lazily, in chunks read
        into buffers that come back once written.

        A fresh megabyte per chunk is paged in by the kernel on every read (large blocks are
        mmapped, see :mod:`pipeline.memory`): reusing a few buffers halves the cost of copying
        an image. Each chunk is valid until it is passed to :meth:`write`.
        """
        with open(source, "rb", buffering=0) if isinstance(source, Path) else nullcontext(source) as fh:
            while True:
                buffer = self._spare.pop() if self._spare else _ReadBuffer(CHUNK)
                if not (n := fh.readinto(buffer)):
                    self._spare.append(buffer)
                    return
                yield memoryview(buffer)[:n]

    def _reuse(self, block: bytes | memoryview) -> None:
        """Hand a written chunk's buffer back to :meth:`read_file`."""
        if type(block) is memoryview and type(block.obj) is _ReadBuffer and len(self._spare) < SPARE_BUFFERS:
            self._spare.append(block.obj)

    def _put(self, block: bytes | memoryview | None) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(block)

    def _drain(self) -> None:
        written = synced = 0
        writeback = _start_writeback if self._tmp is not None else None
        while (block := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._fh.write(block)
                    self._sha.update(block)
                    written += len(block)
                    if writeback is not None and written - synced >= WRITEBACK_EVERY:
                        self._fh.flush()
                        writeback(self._fh.fileno(), synced, written - synced)
                        synced = written
                except BaseException as exc:  # reported to the producer by _put/_finish
                    self._error = self._failed(exc)
            self._reuse(block)

    def _failed(self, exc: BaseException) -> BaseException:
        """A failed write as the user sees it: :class:`OutputError` naming the output."""
        if not isinstance(exc, OSError):
            return exc
        where = self.final_path if self.final_path is not None else "standard output"
        return OutputError(f"cannot write {where}: {exc.strerror or exc}")

    def _finish(self) -> None:
        """Write what is pending and wait for the writer thread; re-raise its error."""
        if self._writer.is_alive():
            if self._pending:
                self._put(bytes(self._pending))
                self._pending.clear()
            self._queue.put(None)
            self._writer.join()
        if self._error is not None:
            raise self._error
        try:
            self._fh.flush()
        except OSError as exc:
            raise self._failed(exc) from None

    def commit(self) -> Path | None:
        """Finish writing, sync and move the file to its final name; return that name."""
        self._finish()
        if self._tmp is None:
            return None
        assert self.final_path is not None
        try:
            os.fsync(self._fh.fileno())
            try:  # published while still locked: nobody takes it for a dead writer's partial file
                if self.overwrite:
                    os.replace(self._tmp, self.final_path)
                else:
                    self.final_path = _publish_unique(self._tmp, self.final_path)
            finally:
                self._fh.close()
        except OSError as exc:
            raise self._failed(exc) from None
        self._tmp = None  # published: nothing for abort() to remove from now on
        try:
            _sync_folder(self.final_path.parent)
        except OSError as exc:
            raise self._failed(exc) from None
        return self.final_path

    def abort(self) -> None:
        """Drop the temporary file; nothing appears at the final name."""
        if self._writer.is_alive():
            self._error = self._error or RuntimeError("aborted")
            self._queue.put(None)
            self._writer.join()
        if self._tmp is not None:
            self._fh.close()
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __enter__(self) -> Output:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()


def _create_locked(path: Path) -> BinaryIO:
    """Create ``path`` for writing, holding an exclusive ``flock`` on it as long as it is open.

    The lock tells :func:`remove_stale_partials` that the writer is alive (the kernel drops it
    when the process dies). The file is created under another name and renamed once locked, so
    it is never seen unlocked under its temporary name.
    """
    hidden = path.with_name(CREATING_PREFIX + path.name.removeprefix(TEMP_PREFIX))
    handle = open(hidden, "xb")  # noqa: SIM115 - closed by Output.commit/abort
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(hidden, path)
    except BaseException:
        handle.close()
        hidden.unlink(missing_ok=True)
        raise
    return handle


def remove_stale_partials(directory: Path) -> list[Path]:
    """Delete the temporary files in ``directory`` whose writer is gone (their lock can be taken);
    those of live exports, in this process or another, are left alone. Returns what was deleted."""
    removed = []
    for path in directory.glob(f"{TEMP_PREFIX}*"):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # published or aborted meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its writer is alive
            os.close(fd)
            continue
        try:
            if path.is_dir():  # a dataset folder (pipeline.folderout)
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


def _publish_unique(tmp: Path, final: Path) -> Path:
    """Move ``tmp`` to ``final`` or the first free ``final_N``, atomically, never clobbering."""
    candidate, n = final, 1
    while True:
        try:
            _move_no_replace(tmp, candidate)
            return candidate
        except FileExistsError:
            n += 1
            candidate = final.with_name(f"{final.stem}_{n}{final.suffix}")


#: errors of link(2) on file systems without hard links (FUSE, SMB, vfat...)
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK, errno.EXDEV}
#: errors of renameat2(2) where the file system or kernel lacks RENAME_NOREPLACE
_NO_NOREPLACE = {errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}
RENAME_NOREPLACE = 1
AT_FDCWD = -100


def _move_no_replace(tmp: Path, target: Path) -> None:
    """``tmp`` to ``target`` unless ``target`` exists (:class:`FileExistsError`).

    A hard link then unlink where the file system has them; else renameat2(RENAME_NOREPLACE);
    else an O_EXCL placeholder at ``target`` that the rename replaces (its owner is us).
    """
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
    else:
        tmp.unlink()
        return
    if _renameat2 is not None:
        if _renameat2(AT_FDCWD, os.fsencode(tmp), AT_FDCWD, os.fsencode(target), RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in _NO_NOREPLACE:
            raise OSError(code, os.strerror(code), str(target))
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    os.replace(tmp, target)


def _load_renameat2() -> Callable[..., int] | None:
    """renameat2(2) from the C library (glibc 2.28+), or None."""
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so that a name just made in it survives a power cut. File systems that
    cannot sync a folder (EINVAL) have nothing more to offer."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # not openable as a folder (e.g. Windows): nothing to sync
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


class ZipSink:
    """Streams entries into a zip, in the order they are added.

    ``add`` queues an entry (a file path, an open file, or an iterable of byte chunks consumed lazily);
    ``flush`` encodes everything queued into the output, and ``close`` writes the central
    directory. Between flushes only the queued entries' iterators are held, never their data.
    Entry times come from the data (``when``), so the same data gives the same bytes.
    """

    def __init__(self, out: Output, *, deflate_level: int = DEFLATE_LEVEL) -> None:
        self._zs = ZipStream(compress_type=ZIP_STORED)
        self._level = deflate_level
        self._out = out
        self._times: deque[tuple[int, ...]] = deque()
        self._central = _CentralDirectory()

    def add(
        self, name: str, data: Path | BinaryIO | Iterable[bytes] | bytes, kind: EntryKind,
        when: datetime | None = None,
    ) -> None:
        compress = COMPRESSION[kind]
        level = self._level if compress == ZIP_DEFLATED else None
        size = None
        if isinstance(data, Path):
            data, size = self._out.read_file(data), data.stat().st_size
        elif isinstance(data, io.IOBase):  # an open file, read from where it stands
            size = os.fstat(data.fileno()).st_size - data.tell()
            data = self._out.read_file(data)
        self._zs.add(data, name, size=size, compress_type=compress, compress_level=level)
        self._times.append(zip_time(when))

    def flush(self) -> None:
        """Encode and write every queued entry (blocking: run it in a worker thread)."""
        write = self._out.write
        written = self._zs._filelist
        while self._times:
            _entry_time.value = self._times.popleft()
            for chunk in self._zs.file():
                write(chunk)
            self._central.data += written[-1]._central_directory_header_data()
            written[-1] = self._central if len(written) == 1 else _RECORDED

    def close(self) -> None:
        self.flush()
        for chunk in self._zs.footer():
            self._out.write(chunk)


def iter_chunks(handle: IO[bytes], chunk: int = CHUNK) -> Iterator[bytes]:
    """An open file's remaining bytes, lazily, in chunks."""
    while block := handle.read(chunk):
        yield block
