"""Reading zips that come from other people's machines.

Member names are checked before anything is read (no absolute paths, no ``..``, no drive
letters), declared sizes and compression ratios are bounded, and actual reads are counted, so
a member that lies about its size is stopped as soon as it exceeds its limit.

This is also the one place that turns what :mod:`zipfile` and :mod:`zlib` raise on a damaged,
encrypted or unsupported archive (``BadZipFile``, ``zlib.error``, ``EOFError``, ``RuntimeError``,
``NotImplementedError``, ``UnicodeDecodeError``, ``OSError``) into a :class:`ZipReadError` naming
the archive and the member; :mod:`pipeline.verify` reads through it too.
"""

from __future__ import annotations

import lzma
import shutil
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from .errors import PipelineError, SourceError, UsageError

#: members larger than this (uncompressed) are refused
MAX_MEMBER_SIZE = 4 << 30
#: uncompressed/compressed ratio above which a member is taken for a zip bomb
MAX_RATIO = 200
#: members smaller than this are never ratio-checked (tiny repetitive files compress well)
RATIO_FLOOR = 1 << 20


class UnsafeArchiveError(SourceError):
    """A member name or size that would escape the destination or exhaust memory or disk."""


class ZipReadError(SourceError):
    """An archive or a member that cannot be read: damaged, encrypted or compressed in a way
    :mod:`zipfile` does not know. ``member`` is None when the archive as a whole is unreadable."""

    def __init__(self, archive: Path, member: str | None, reason: str) -> None:
        self.archive, self.member, self.reason = archive, member, reason
        where = f"member {member!r}: " if member is not None else ""
        super().__init__(f"{archive}: {where}{reason}")


#: what zipfile and its decompressors raise on bad input (RuntimeError: encrypted;
#: NotImplementedError: method; OSError/ValueError: bzip2)
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, RuntimeError, NotImplementedError,
               UnicodeDecodeError, OSError, struct.error, ValueError)
#: a 32-bit size or offset field holding this means "see the zip64 record"
_ZIP64_MARK = 0xFFFFFFFF


def _reason(exc: BaseException, info: zipfile.ZipInfo | None) -> str:
    if isinstance(exc, RuntimeError) and "encrypted" in str(exc):
        return "encrypted (password-protected); not supported"
    if isinstance(exc, NotImplementedError):
        method = f" {info.compress_type}" if info is not None else ""
        return f"compression method{method} not supported"
    if isinstance(exc, zlib.error | lzma.LZMAError):
        return f"corrupt compressed data ({exc})"
    if isinstance(exc, EOFError):
        return "truncated: the archive ends inside this member"
    if isinstance(exc, OSError):
        return f"unreadable ({exc.strerror or exc})"
    return f"corrupt ({exc})"


@contextmanager
def zip_errors(archive: Path, info: zipfile.ZipInfo | None = None) -> Iterator[None]:
    """Turn zipfile/zlib errors raised inside the block into one :class:`ZipReadError`."""
    try:
        yield
    except _ZIP_ERRORS as exc:
        if isinstance(exc, PipelineError):
            raise
        raise ZipReadError(archive, info.filename if info is not None else None, _reason(exc, info)) from None


def open_zip(path: Path, fileobj: IO[bytes] | None = None) -> zipfile.ZipFile:
    """``zipfile.ZipFile(path)``, or ZipReadError naming the archive (or the member whose name
    is flagged UTF-8 but holds other bytes); a device or FIFO is refused before it is opened.
    ``fileobj``: read that seekable file instead (a remote object), ``path`` naming it."""
    if fileobj is None:
        refuse_special(path, folder=False)
    try:
        return zipfile.ZipFile(fileobj if fileobj is not None else path)
    except UnicodeDecodeError as exc:
        name = bytes(exc.object).decode("utf-8", "backslashreplace")
        raise ZipReadError(path, name, "name flagged UTF-8 is not valid UTF-8") from None
    except _ZIP_ERRORS as exc:
        reason = str(exc) if isinstance(exc, zipfile.BadZipFile) else _reason(exc, None)
        raise ZipReadError(path, None, f"not a readable zip archive ({reason})") from None


def check_layout(archive: Path, info: zipfile.ZipInfo, archive_size: int) -> None:
    """Sizes and offsets that cannot be true: 0xFFFFFFFF without a zip64 record, or data said to
    lie before the start or past the end of the file (a damaged central directory or end record)."""
    marks = (info.file_size, info.compress_size, info.header_offset)
    if _ZIP64_MARK in marks and not _has_zip64(info.extra):
        raise ZipReadError(archive, info.filename, "size or offset 0xFFFFFFFF without a zip64 record")
    if info.header_offset < 0 or info.header_offset + info.compress_size > archive_size:
        raise ZipReadError(archive, info.filename, "its data lies past the end of the archive "
                           "(damaged central directory or end record)")


def _has_zip64(extra: bytes) -> bool:
    """Whether a member's extra field holds a zip64 record (header id 1)."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        if tag == 1:
            return True
        pos += 4 + size
    return False


def refuse_special(path: Path, *, folder: bool = True) -> None:
    """UsageError unless ``path`` is a regular file (or, with ``folder``, a folder): reading a
    device such as ``/dev/zero`` never ends and opening a FIFO waits for a writer. Checked on the
    name (``stat``), before anything is opened."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file or folder") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror})") from None
    if stat.S_ISREG(mode) or (folder and stat.S_ISDIR(mode)):
        return
    kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a special file")
    what = "a regular file or folder" if folder else "a regular file"
    raise UsageError(f"{path}: not {what} ({kind}); refused")


@dataclass(frozen=True, slots=True)
class Limits:
    max_member_size: int = MAX_MEMBER_SIZE
    max_ratio: int = MAX_RATIO


def member_path(archive: Path, name: str) -> PurePosixPath:
    """The member's relative path, or UnsafeArchiveError for absolute or escaping names."""
    normal = name.replace("\\", "/")
    path = PurePosixPath(normal)
    if (
        normal.startswith("/")
        or (len(normal) > 1 and normal[1] == ":")
        or any(part == ".." for part in path.parts)
        or "\x00" in normal
    ):
        raise UnsafeArchiveError(f"{archive}: member {name!r}: absolute path or '..' refused")
    return path


def check_member(archive: Path, info: zipfile.ZipInfo, limits: Limits = Limits()) -> PurePosixPath:
    """Check one member's name and declared sizes before it is read."""
    path = member_path(archive, info.filename)
    if info.file_size > limits.max_member_size:
        raise UnsafeArchiveError(
            f"{archive}: member {info.filename!r}: declared size {info.file_size:,} bytes "
            f"exceeds the limit of {limits.max_member_size:,}"
        )
    if info.file_size > RATIO_FLOOR and info.file_size > limits.max_ratio * max(info.compress_size, 1):
        raise UnsafeArchiveError(
            f"{archive}: member {info.filename!r}: compression ratio "
            f"{info.file_size // max(info.compress_size, 1)}:1 looks like a zip bomb"
        )
    return path


class _Bounded:
    """A reader that fails once more than ``limit`` bytes came out (sizes in headers can lie), and
    whose read errors are ZipReadErrors naming the member."""

    def __init__(self, fh: IO[bytes], limit: int, archive: Path, info: zipfile.ZipInfo) -> None:
        self._fh, self._left, self._archive, self._info = fh, limit, archive, info

    def read(self, size: int = -1) -> bytes:
        with zip_errors(self._archive, self._info):
            data = self._fh.read(size if size >= 0 else self._left + 1)
        self._left -= len(data)
        if self._left < 0:
            raise UnsafeArchiveError(f"{self._archive}: member {self._info.filename!r}: more data than "
                                     "its declared size; refused")
        return data


@contextmanager
def open_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, archive: Path, limit: int | None = None
                ) -> Iterator[IO[bytes]]:
    """A member's stream whose errors (opening and reading) are ZipReadErrors naming it."""
    with zip_errors(archive, info):
        fh = zf.open(info)
    with fh:
        yield _Bounded(fh, info.file_size if limit is None else limit, archive, info)  # type: ignore[misc]


class SafeZip:
    """A zip opened for untrusted reading: ``members()`` lists checked, non-directory entries."""

    def __init__(self, path: Path, limits: Limits = Limits()) -> None:
        self.path = path
        self.limits = limits
        self._zf = open_zip(path)
        self._infos = {}
        try:
            size = path.stat().st_size
            for info in self._zf.infolist():
                if not info.is_dir():
                    check_layout(path, info, size)
                    self._infos[str(check_member(path, info, limits))] = info
        except BaseException:
            self._zf.close()
            raise

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._zf.close()

    def members(self) -> list[str]:
        """Normalised member paths (``/`` separators, no directories), in archive order."""
        return list(self._infos)

    def size(self, name: str) -> int:
        return self._infos[name].file_size

    def info(self, name: str) -> zipfile.ZipInfo:
        """The member's directory entry (sizes, CRC-32): what it holds, without reading it."""
        return self._infos[name]

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        """A stream of the member that refuses to yield more than its declared size."""
        with open_member(self._zf, self._infos[name], self.path) as fh:
            yield fh

    def read(self, name: str) -> bytes:
        with self.open(name) as fh:
            return fh.read()

    def extract(self, name: str, dest_dir: Path) -> Path:
        """Copy a member below ``dest_dir`` (never outside it) and return the file's path."""
        target = (dest_dir / member_path(self.path, name)).resolve()
        root = dest_dir.resolve()
        if root not in target.parents:
            raise UnsafeArchiveError(f"{self.path}: member {name!r} would land outside {dest_dir}")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.open(name) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)  # type: ignore[misc]
        except BaseException:  # a member that fails part-way leaves no truncated copy
            target.unlink(missing_ok=True)
            raise
        return target
