"""Names: output files and zip entries. One place decides them, so METS and the zip agree.

eScriptorium names entries after the image's original file name; two parts whose names clash
(``a.jpg`` + ``a.png`` both give ``a.xml``, a page called ``METS.jpg``) are disambiguated
deterministically by appending ``_<part order>`` to the stem.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterator
from datetime import datetime
from pathlib import PurePosixPath, PureWindowsPath

from pipeline.ns import METS_NAME

_FORBIDDEN = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')


def slug(name: str, limit: int = 32) -> str:
    """eScriptorium's document slug: ASCII-folded, lower-cased, punctuation removed, ``_`` runs."""
    ascii_ = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    words = re.sub(r"[^\w\s-]", "", ascii_.lower())
    return re.sub(r"[-\s]+", "_", words).strip("_")[:limit]


def output_name(document_id: int, document_name: str, fmt: str, ext: str, when: datetime, uid: str) -> str:
    """``export_doc{id}_{slug}_{format}_{YYYYmmddHHMMSS}_{uid}.{ext}``."""
    return f"export_doc{document_id}_{slug(document_name)}_{fmt}_{when:%Y%m%d%H%M%S}_{uid}.{ext}"


def safe_basename(name: str) -> str:
    """A file name without directories or characters that break archives or file systems."""
    base = PureWindowsPath(PurePosixPath(name).name).name
    base = _FORBIDDEN.sub("_", base).strip(" .")
    return base or "image"


class NameSet:
    """Names seen so far (case-insensitively), in two flat buffers instead of a set of strings.

    An archive of 100,000 pages keeps 200,000 names until it is complete; as strings, those small
    long-lived objects pin the allocator's pools among the transient ones and memory creeps up
    with every page. Here a Bloom filter answers "new" at once, and a "maybe" is checked exactly
    against one buffer of all names. Deterministic (no per-process hash seed).
    """

    BITS = 1 << 20  #: 128 KiB of filter: about 1 % false "maybe" at 100,000 names
    HASHES = 5

    def __init__(self, names: tuple[str, ...] = ()) -> None:
        self._bits = bytearray(self.BITS // 8)
        self._names = bytearray(b"\0")
        for name in names:
            self.add(name)

    def _positions(self, key: bytes) -> list[int]:
        digest = hashlib.blake2b(key, digest_size=16).digest()
        a, b = int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little") | 1
        return [(a + i * b) % self.BITS for i in range(self.HASHES)]

    def __contains__(self, name: str) -> bool:
        key = name.lower().encode()
        if not all(self._bits[p >> 3] & (1 << (p & 7)) for p in self._positions(key)):
            return False
        return b"\0" + key + b"\0" in self._names

    def add(self, name: str) -> None:
        key = name.lower().encode()
        for p in self._positions(key):
            self._bits[p >> 3] |= 1 << (p & 7)
        self._names += key + b"\0"


class PageIndex:
    """The METS index of an archive: per page, its image entry name (or None) and XML entry name,
    appended to one buffer and read back lazily, for the same reason as :class:`NameSet`."""

    def __init__(self) -> None:
        self._data = bytearray()

    def append(self, image: str | None, xml: str | None) -> None:
        # names are never empty and hold no NUL (safe_basename), so "" stands for None
        self._data += f"{image or ''}\0{xml or ''}\0".encode()

    def __iter__(self) -> Iterator[tuple[str | None, str | None]]:
        data, start = self._data, 0
        while start < len(data):
            middle = data.index(0, start)
            end = data.index(0, middle + 1)
            image, xml = data[start:middle].decode(), data[middle + 1 : end].decode()
            yield image or None, xml or None
            start = end + 1


class EntryNamer:
    """Hands out unique entry names for the parts of one archive, in part order.

    Comparison is case-insensitive, so the archive also unpacks cleanly on Windows and macOS.
    """

    def __init__(self, reserved: tuple[str, ...] = (METS_NAME,)) -> None:
        self._used = NameSet(reserved)

    def part_names(self, image_filename: str, order: int, image_suffix: str | None = None) -> tuple[str, str]:
        """``(image entry, xml entry)`` for a part; ``image_suffix`` replaces the image's extension.

        Both names share one stem: when either would clash, both get ``_<order>``.
        """
        base = PurePosixPath(safe_basename(image_filename))
        stem, suffix = base.stem or "image", image_suffix if image_suffix is not None else base.suffix
        candidate, n = stem, 0
        while True:
            image, xml = f"{candidate}{suffix}", f"{candidate}.xml"
            if image not in self._used and xml not in self._used and image.lower() != xml.lower():
                break
            n += 1
            candidate = f"{stem}_{order}" if n == 1 else f"{stem}_{order}_{n}"
        self._used.add(image)
        self._used.add(xml)
        return image, xml
