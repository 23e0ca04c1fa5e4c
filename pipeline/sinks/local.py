"""A local file, published atomically: written under a hidden temporary name beside its final
name, synced, renamed, and its folder synced, so a failed or killed export never leaves a file
at the final name and a published one survives a power cut.

In directory mode (``overwrite=False``) an existing name is never replaced: ``commit`` picks
``name_2``, ``name_3``... instead, also where the file system has no hard links. The disk writes
are started every :data:`WRITEBACK_EVERY` bytes, so the final sync waits for the tail only.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import OutputError
from pipeline.sinks.base import ByteSink

#: the hidden name of a file being written: ``<prefix><random>-<final name>``
TEMP_PREFIX = ".pipeline-partial-"
#: a temporary file's name until its writer holds its lock (then renamed to TEMP_PREFIX...)
CREATING_PREFIX = ".pipeline-creating-"
#: the kernel is asked to start writing a file to disk every this many bytes
WRITEBACK_EVERY = 8 << 20
SYNC_FILE_RANGE_WRITE = 2


def partial_name(final: str) -> str:
    """The temporary name of a file on its way to ``final``."""
    return f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}-{final}"


class LocalFileSink(ByteSink):
    """``path``, replaced atomically (``overwrite``) or never replaced (directory mode)."""

    def __init__(self, path: Path, *, overwrite: bool = True) -> None:
        super().__init__(str(path))
        self.path, self.overwrite = path, overwrite
        if path.exists() and not path.is_file():  # a device, a FIFO...: never replaced by a file
            raise OutputError(f"{path}: not a regular file; give a file or a folder to write to")
        self._tmp: Path | None = path.parent / partial_name(path.name)
        self._written = self._synced = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = _create_locked(self._tmp)
        except OSError as exc:
            self._tmp = None
            raise self.failed(exc) from None

    @property
    def temporary(self) -> Path | None:
        """Where the bytes are until ``commit`` (None once published or dropped)."""
        return self._tmp

    def _write(self, data: bytes | memoryview) -> None:
        self._fh.write(data)
        self._written += len(data)
        if _start_writeback is not None and self._written - self._synced >= WRITEBACK_EVERY:
            self._fh.flush()
            _start_writeback(self._fh.fileno(), self._synced, self._written - self._synced)
            self._synced = self._written

    def _publish(self) -> str:
        assert self._tmp is not None, "committed twice"
        self._fh.flush()
        os.fsync(self._fh.fileno())
        try:  # published while still locked: nobody takes it for a dead writer's partial file
            if self.overwrite:
                os.replace(self._tmp, self.path)
            else:
                self.path = _publish_unique(self._tmp, self.path)
        finally:
            self._fh.close()
        self._tmp = None  # published: nothing for abort() to remove from now on
        self._location = str(self.path)
        _sync_folder(self.path.parent)
        return str(self.path)

    def _discard(self) -> None:
        if self._tmp is not None:
            self._fh.close()
            self._tmp.unlink(missing_ok=True)
            self._tmp = None


def _create_locked(path: Path) -> BinaryIO:
    """Create ``path`` for writing, holding an exclusive ``flock`` on it as long as it is open.

    The lock tells :func:`remove_stale_partials` that the writer is alive (the kernel drops it
    when the process dies). The file is created under another name and renamed once locked, so
    it is never seen unlocked under its temporary name.
    """
    hidden = path.with_name(CREATING_PREFIX + path.name.removeprefix(TEMP_PREFIX))
    handle = open(hidden, "xb")  # noqa: SIM115 - closed by commit/abort
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
            if path.is_dir():  # a dataset folder (pipeline.sinks.folder)
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


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




#: the lock file of a folder a job writes into
LOCK_NAME = ".pipeline-job.lock"


@contextmanager
def locked_folder(directory: Path) -> Iterator[list[str]]:
    """Hold ``directory`` for one job at a time (OutputError if another holds it); temporary files
    left there by killed runs are deleted first. Yields the names deleted."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_NAME, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"{directory}: another job is writing here") from None
        yield [path.name for path in remove_stale_partials(directory)]
