"""Shared helpers of the XML writers: the one place for numbers, points, IDs and text cleaning.

Everything here is locale-independent (``str``/``%`` formatting never consult the locale) and
tuned for the per-line hot path: the common case (integer coordinates, ASCII ids, clean text)
is handled by C-level string operations, the rare case falls back to per-value Python code.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
from array import array
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache

from lxml import etree

from pipeline import ns
from pipeline.model import Polygon, bbox

log = logging.getLogger("pipeline")


#: the XML declaration written by hand: lxml's own uses single quotes
DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
DECLARATION_STANDALONE = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'

#: the timestamp written when a part has none: fixed, so output never depends on the clock
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- numbers -------------------------------------------------------------------------------------


def num(value: float) -> str:
    """``%g``-style number (spec 3.1): integral values without a point, others 6 significant digits."""
    if type(value) is int:
        return str(value)
    return str(int(value)) if value == int(value) else f"{value:g}"


def conf(value: float) -> str:
    """A confidence clamped to [0, 1], shortest round-trip form (``0.0`` stays, defect 5)."""
    return repr(min(1.0, max(0.0, float(value))))


def alto_points(points: Polygon) -> str:
    """``x y x y …`` with :func:`num` formatting."""
    text = " ".join(map("%s %s".__mod__, points))
    if "." in text or "e" in text or "n" in text:  # floats present: format each value
        text = " ".join([f"{num(x)} {num(y)}" for x, y in points])
    return text


def page_points(points: Polygon | None) -> str | None:
    """``x,y x,y …`` truncated toward zero and clamped at 0 (PAGE defect 3); None if < 2 points."""
    if not points or len(points) < 2:
        return None
    text = " ".join(map("%s,%s".__mod__, points))
    if "." in text or "e" in text or "n" in text or "-" in text:
        text = " ".join([f"{max(0, int(x))},{max(0, int(y))}" for x, y in points])
    return text


def rect_points(x0: float, y0: float, x1: float, y1: float) -> str:
    """PAGE points of an axis-aligned rectangle, clockwise from the top-left corner."""
    a, b, c, d = (max(0, int(v)) for v in (x0, y0, x1, y1))
    return f"{a},{b} {c},{b} {c},{d} {a},{d}"


def decimal(value: float) -> str:
    """A coordinate for formats whose numbers take no exponent (TEI points, SVG, IIIF): integral
    values without a point, others with up to two decimals."""
    if type(value) is int or value == int(value):
        return str(int(value))
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def pixel_box(points: Polygon | None) -> tuple[int, int, int, int] | None:
    """The integer box covering ``points`` (floor of the minima, ceiling of the maxima, >= 0)."""
    box = bbox(points)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    return max(0, math.floor(x0)), max(0, math.floor(y0)), max(0, math.ceil(x1)), max(0, math.ceil(y1))


def timestamp(value: datetime | None) -> str:
    """ISO 8601 with offset (naive values are taken as UTC); microseconds only if non-zero."""
    value = value or EPOCH
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


# --- text ------------------------------------------------------------------------------------------

_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def clean(text: str, what: str, ident: object) -> str:
    """``text`` without XML 1.0-forbidden characters (defect 8), with a warning naming its owner."""
    if _FORBIDDEN.search(text) is None:
        return text
    cleaned, count = _FORBIDDEN.subn("", text)
    log.warning("%s %s: dropped %d character(s) not allowed in XML", what, ident, count)
    return cleaned


# --- IDs -------------------------------------------------------------------------------------------

_ASCII_NCNAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_UNICODE_CANDIDATE = re.compile(r"[^\W\d][\w.\-\u00b7\u0300-\u036f\u203f\u2040]*")
_NCNAME_XSD = (
    f'<xs:schema xmlns:xs="{ns.XSD}">'
    '<xs:element name="n" type="xs:NCName"/></xs:schema>'
)
_local = threading.local()


@lru_cache(maxsize=4096)
def _libxml2_ncname(value: str) -> bool:
    """libxml2 checks xs:ID against the older XML 1.0 4th-edition name tables: ask it directly."""
    xsd = getattr(_local, "xsd", None)
    if xsd is None:  # XMLSchema objects must not be shared between threads
        xsd = _local.xsd = etree.XMLSchema(etree.fromstring(_NCNAME_XSD.encode()))
    el = etree.Element("n")
    el.text = value
    return xsd.validate(el)


def is_ncname(value: str) -> bool:
    """True if ``value`` is an ``xs:ID`` every validator accepts."""
    if value.isascii():
        return _ASCII_NCNAME.fullmatch(value) is not None
    return _UNICODE_CANDIDATE.fullmatch(value) is not None and _libxml2_ncname(value)


class IdSet:
    """Ids seen so far in one file, as 64-bit fingerprints in one flat table, not a set of strings.

    A document-wide file (TEI) keeps an id per line of every page until it is complete; as
    strings, those small long-lived objects pin the allocator's pools and memory creeps with every
    page. Here an open-addressing table of blake2b fingerprints (one ``array``, doubled when half
    full) answers. Two ids sharing a fingerprint only make the second one take its fallback, so
    ids stay unique; fingerprints are deterministic (no per-process hash seed).
    """

    __slots__ = ("_count", "_mask", "_table")

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._table = array("Q", bytes(8 * 1024))
        self._mask = 1023
        self._count = 0
        for value in ids:
            self.add(value)

    @staticmethod
    def _fingerprint(value: str) -> int:
        return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little") | 1

    def _slot(self, fingerprint: int) -> int:
        table, mask = self._table, self._mask
        slot = fingerprint & mask
        while (found := table[slot]) and found != fingerprint:
            slot = (slot + 1) & mask
        return slot

    def __contains__(self, value: str) -> bool:
        return bool(self._table[self._slot(self._fingerprint(value))])

    def add(self, value: str) -> None:
        fingerprint = self._fingerprint(value)
        slot = self._slot(fingerprint)
        if self._table[slot]:
            return
        self._table[slot] = fingerprint
        self._count += 1
        if self._count * 2 > self._mask:
            old = self._table
            self._table = array("Q", bytes(16 * len(old)))
            self._mask = 2 * len(old) - 1
            for fingerprint in old:
                if fingerprint:
                    self._table[self._slot(fingerprint)] = fingerprint


class Ids:
    """Unique ``xs:ID`` values of one file (defect 1): keep a valid unused id, else a fallback.

    ``used`` replaces the default set (an :class:`IdSet` for files that span a whole document).
    """

    __slots__ = ("_used",)

    def __init__(self, reserved: Iterable[str] = (), used: set[str] | IdSet | None = None) -> None:
        self._used = set() if used is None else used
        for value in reserved:
            self._used.add(value)

    def take_or_prefix(self, wanted: str | None, prefix: str, fallback: str) -> str:
        """``wanted`` if it is a valid, unused NCName; ``prefix + wanted`` if it is valid but used;
        else ``fallback`` (each made unique as :meth:`take` does)."""
        if wanted and is_ncname(wanted):
            if wanted not in self._used:
                self._used.add(wanted)
                return wanted
            return self.take(None, prefix + wanted)
        return self.take(None, fallback)

    def take(self, wanted: str | None, fallback: str) -> str:
        """``wanted`` if it is a valid, unused NCName, else ``fallback``, ``fallback_2``, …"""
        used = self._used
        if wanted and wanted not in used and is_ncname(wanted):
            used.add(wanted)
            return wanted
        candidate, n = fallback, 2
        while candidate in used:
            candidate, n = f"{fallback}_{n}", n + 1
        used.add(candidate)
        return candidate


# --- streaming -----------------------------------------------------------------------------------


class Chunks:
    """File-like target for ``etree.xmlfile`` that lets a generator hand out what was written."""

    __slots__ = ("_parts", "size")

    def __init__(self, first: bytes = b"") -> None:
        self._parts: list[bytes] = [first] if first else []
        self.size = len(first)  #: bytes written since the last take()

    def write(self, data: bytes) -> None:
        self._parts.append(data)
        self.size += len(data)

    def take(self) -> bytes:
        """Everything written since the last call (``b""`` if nothing)."""
        data = b"".join(self._parts)
        self._parts.clear()
        self.size = 0
        return data
