"""Reading zips that come from other people's machines.

Member names are checked before anything is read (no absolute paths, no ``..``, no drive
letters), declared sizes and compression ratios are bounded, and actual reads are counted, so
a member that lies about its size is stopped as soon as it exceeds its limit.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from .errors import PipelineError

#: members larger than this (uncompressed) are refused
MAX_MEMBER_SIZE = 4 << 30
#: uncompressed/compressed ratio above which a member is taken for a zip bomb
MAX_RATIO = 200
#: members smaller than this are never ratio-checked (tiny repetitive files compress well)
RATIO_FLOOR = 1 << 20


class UnsafeArchiveError(PipelineError):
    """A member name or size that would escape the destination or exhaust memory or disk."""


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
    """A reader that fails once more than ``limit`` bytes came out (sizes in headers can lie)."""

    def __init__(self, fh: IO[bytes], limit: int, what: str) -> None:
        self._fh, self._left, self._what = fh, limit, what

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size if size >= 0 else self._left + 1)
        self._left -= len(data)
        if self._left < 0:
            raise UnsafeArchiveError(f"{self._what}: more data than its declared size; refused")
        return data


class SafeZip:
    """A zip opened for untrusted reading: ``members()`` lists checked, non-directory entries."""

    def __init__(self, path: Path, limits: Limits = Limits()) -> None:
        self.path = path
        self.limits = limits
        try:
            self._zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise PipelineError(f"{path}: not a readable zip archive ({exc})") from None
        self._infos = {}
        for info in self._zf.infolist():
            if not info.is_dir():
                self._infos[str(check_member(path, info, limits))] = info

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

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        """A stream of the member that refuses to yield more than its declared size."""
        info = self._infos[name]
        try:
            with self._zf.open(info) as fh:
                yield _Bounded(fh, info.file_size, f"{self.path}: member {name!r}")  # type: ignore[misc]
        except zipfile.BadZipFile as exc:
            raise PipelineError(f"{self.path}: member {name!r}: corrupt ({exc})") from None

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
        with self.open(name) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)  # type: ignore[misc]
        return target
