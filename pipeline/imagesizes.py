"""Image sizes from file headers, remembered in an SQLite file keyed by path, size and mtime.

eScriptorium stores no image size: its exporters open every image. Reading a header costs far
more than a row, so sizes read once are kept in our own SQLite file (the registry file), never in
the source database; a file replaced or touched since is read again.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import SourceError
from pipeline.vips import image_size

SCHEMA = """
CREATE TABLE IF NOT EXISTS pipeline_image_size_cache (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL
)
"""

#: a size, or why there is none (the file is missing, unreadable, not an image)
Size = tuple[int, int] | str


def header_size(path: str | Path) -> Size:
    """``(width, height)`` from the header (:func:`pipeline.vips.image_size`), or why not."""
    if not os.path.exists(path):
        return "image file not found"
    try:
        return image_size(path)
    except SourceError as exc:
        return f"cannot read the image header: {str(exc).partition('(')[2].rstrip(')') or exc}"


class ImageSizeCache:
    """Sizes of many files at once; thread-safe (sources call it from worker threads)."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute(SCHEMA)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def sizes(self, paths: Sequence[str | Path | None]) -> list[Size]:
        """The size of each file (None: the part has no image), from the cache when the file's size
        and mtime still match, else from its header (then remembered)."""
        stats: list[os.stat_result | None] = []
        for path in paths:
            try:
                stats.append(os.stat(path) if path is not None else None)
            except OSError:
                stats.append(None)
        keys = [str(p) for p, st in zip(paths, stats, strict=True) if p is not None and st is not None]
        known = self._lookup(keys)
        result: list[Size] = []
        learned: list[tuple[str, int, int, int, int]] = []
        for path, st in zip(paths, stats, strict=True):
            if path is None:
                result.append("the part has no image")
                continue
            if st is None:
                result.append("image file not found")
                continue
            hit = known.get(str(path))
            if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
                result.append((hit[2], hit[3]))
                continue
            size = header_size(path)
            result.append(size)
            if not isinstance(size, str):
                learned.append((str(path), st.st_size, st.st_mtime_ns, *size))
        if learned and self._db is not None:
            with self._lock, contextlib.suppress(sqlite3.OperationalError):  # a busy cache is no error
                self._db.execute("BEGIN")  # one commit (one sync) per page of parts, not one per image
                try:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO pipeline_image_size_cache"
                        " (path, size, mtime_ns, width, height) VALUES (?, ?, ?, ?, ?)",
                        learned,
                    )
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
        return result

    def _lookup(self, keys: Sequence[str]) -> dict[str, tuple[int, int, int, int]]:
        if not keys or self._db is None:
            return {}
        marks = ", ".join("?" * len(keys))
        with self._lock:
            rows = self._db.execute(
                "SELECT path, size, mtime_ns, width, height FROM pipeline_image_size_cache"
                f" WHERE path IN ({marks})",
                keys,
            ).fetchall()
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}
