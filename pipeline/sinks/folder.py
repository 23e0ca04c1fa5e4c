"""A folder instead of a zip, for datasets that training tools read from disk.

A :class:`FolderSink` takes entries as the zip archive does (``add``, ``flush``, ``close``) and
publishes like a sink (``commit`` returns the location; ``abort`` leaves nothing). Entries are
written as files under a hidden temporary folder beside the final one, which is renamed once
everything is written and synced: a failed or killed export leaves no folder at the
final name. The folder's ``sha256`` is that of its manifest (each file's name and sha256, one per
line, in the order written), so the registry can still tell two exports apart; the manifest is
written in the folder as :data:`MANIFEST`, which also marks it as ours: retention deletes only
folders that hold one.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import io
import os
import shutil
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from pipeline.errors import OutputError, UsageError
from pipeline.sinks.local import TEMP_PREFIX

CHUNK = 1 << 20
#: the manifest of a published folder: ``<sha256>  <name>`` per file, as ``sha256sum -c`` reads it
MANIFEST = ".pipeline-manifest.sha256"


class FolderSink:
    """Files under ``path`` (a folder published atomically), added like zip entries: ``add``
    queues, ``flush`` writes (blocking: a worker thread), ``commit`` publishes. With
    ``overwrite=False`` an existing folder is never replaced (``name_2``... instead); with
    ``overwrite=True`` an existing folder at ``path`` is an error rather than merged into."""

    def __init__(self, path: Path, *, overwrite: bool = True) -> None:
        self.final_path = path
        self.overwrite = overwrite
        self.size = 0
        self._manifest = hashlib.sha256()
        self._queue: list[tuple[str, Path | BinaryIO | Iterable[bytes] | bytes, datetime | None]] = []
        self._made: set[str] = set()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp: Path | None = path.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}-{path.name}"
            self._tmp.mkdir()
            self._lock = os.open(self._tmp, os.O_RDONLY)
            self._list = open(self._tmp / MANIFEST, "xb")  # noqa: SIM115 - closed by commit/abort
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a live writer, for stale-partial sweeps
        except OSError as exc:
            raise self._failed(exc) from None

    @property
    def sha256(self) -> str:
        return self._manifest.hexdigest()

    @property
    def location(self) -> str:
        return str(self.final_path)

    #: what an object store calls the upload (a folder is local: none)
    etag: str | None = None

    def add(self, name: str, data: Path | BinaryIO | Iterable[bytes] | bytes, kind: str,
            when: datetime | None = None) -> None:
        """Queue a file ``name`` (a relative POSIX path) with ``data``; ``kind`` is ignored."""
        parts = PurePosixPath(name).parts
        if not parts or name.startswith("/") or ".." in parts:
            raise ValueError(f"not a relative entry name: {name!r}")
        self._queue.append((name, data, when))

    def flush(self) -> None:
        """Write every queued file."""
        assert self._tmp is not None, "flushed after commit or abort"
        queue, self._queue = self._queue, []
        for name, data, when in queue:
            target = self._tmp / name
            folder = str(PurePosixPath(name).parent)
            if folder not in self._made:
                target.parent.mkdir(parents=True, exist_ok=True)
                self._made.add(folder)
            digest = hashlib.sha256()
            try:
                with open(target, "xb") as fh:
                    for chunk in _chunks(data):
                        fh.write(chunk)
                        digest.update(chunk)
                        self.size += len(chunk)
                if when is not None:
                    stamp = when.timestamp()
                    os.utime(target, (stamp, stamp))
            except OSError as exc:
                raise self._failed(exc) from None
            line = f"{digest.hexdigest()}  {name}\n".encode()
            self._manifest.update(line)
            try:
                self._list.write(line)
            except OSError as exc:
                raise self._failed(exc) from None

    def close(self) -> None:
        self.flush()

    def commit(self) -> str:
        """Sync everything written, then rename the folder to its final name; return it."""
        self.flush()
        assert self._tmp is not None
        try:
            self._list.close()
            _syncfs(self._lock)
            final = self.final_path
            if self.overwrite:
                if final.exists():
                    raise OutputError(f"cannot write {final}: it exists; give a new folder name or a "
                                      "folder to create the dataset in (ending with /)")
                os.rename(self._tmp, final)
            else:
                n = 1
                while True:
                    try:
                        _rename_no_replace(self._tmp, final)
                        break
                    except FileExistsError:
                        n += 1
                        final = self.final_path.with_name(f"{self.final_path.name}_{n}")
            self.final_path = final
            self._tmp = None
            os.close(self._lock)
            fd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise self._failed(exc) from None
        return str(self.final_path)

    def abort(self) -> None:
        """Remove the temporary folder; nothing appears at the final name."""
        if self._tmp is not None:
            self._list.close()
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
            os.close(self._lock)

    def _failed(self, exc: OSError) -> OutputError:
        return OutputError(f"cannot write {self.final_path}: {exc.strerror or exc}")

    def __enter__(self) -> FolderSink:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()


def is_ours(path: Path) -> bool:
    """Whether ``path`` is a folder a :class:`FolderSink` published (it holds a manifest)."""
    return path.is_dir() and (path / MANIFEST).is_file()


def open_folder(target: str | Path | None, *, name: str) -> FolderSink:
    """The folder for ``-o`` values, as :func:`~pipeline.sinks.open_sink` reads them: a folder to
    create ``name`` in (an existing one, or a path ending in ``/``; never overwriting), else the
    folder to create at that path. Local only."""
    text = "." if target is None else str(target)
    if text == "-" or "://" in text:
        raise UsageError(f"{text}: a dataset folder is written to a local folder; give one, "
                         "or drop --unzipped")
    path = Path(text)
    if path.is_dir() or text.endswith(("/", "\\")):
        return FolderSink(path / name, overwrite=False)
    return FolderSink(path, overwrite=True)


def _chunks(data: Path | BinaryIO | Iterable[bytes] | bytes) -> Iterable[bytes]:
    if isinstance(data, bytes | bytearray | memoryview):
        yield bytes(data)
    elif isinstance(data, Path):
        with open(data, "rb") as fh:
            while block := fh.read(CHUNK):
                yield block
    elif isinstance(data, io.IOBase):
        while block := data.read(CHUNK):  # type: ignore[attr-defined]
            yield block
    else:
        yield from data  # type: ignore[misc]


def _rename_no_replace(source: Path, target: Path) -> None:
    """Rename a folder unless ``target`` exists (:class:`FileExistsError`)."""
    if _renameat2 is not None:
        if _renameat2(-100, os.fsencode(source), -100, os.fsencode(target), 1) == 0:
            return
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise FileExistsError(code, os.strerror(code), str(target))
        if code not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
            raise OSError(code, os.strerror(code), str(target))
    os.mkdir(target)  # claims the name (FileExistsError if taken); rename replaces an empty folder
    os.rename(source, target)


def _load(name: str) -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None


_renameat2 = _load("renameat2")
if _renameat2 is not None:
    _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    _renameat2.restype = ctypes.c_int
_syncfs_c = _load("syncfs")


def _syncfs(fd: int) -> None:
    """Flush the file system holding ``fd`` (one call for thousands of files, Linux), else sync."""
    if _syncfs_c is None or _syncfs_c(fd) != 0:
        os.sync()
