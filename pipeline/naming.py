"""Names: output files and zip entries. One place decides them, so METS and the zip agree.

eScriptorium names entries after the image's original file name; two parts whose names clash
(``a.jpg`` + ``a.png`` both give ``a.xml``, a page called ``METS.jpg``) are disambiguated
deterministically by appending ``_<part order>`` to the stem.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from pathlib import PurePosixPath, PureWindowsPath

METS_NAME = "METS.xml"
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


class EntryNamer:
    """Hands out unique entry names for the parts of one archive, in part order.

    Comparison is case-insensitive, so the archive also unpacks cleanly on Windows and macOS.
    """

    def __init__(self, reserved: tuple[str, ...] = (METS_NAME,)) -> None:
        self._used = {r.lower() for r in reserved}

    def part_names(self, image_filename: str, order: int, image_suffix: str | None = None) -> tuple[str, str]:
        """``(image entry, xml entry)`` for a part; ``image_suffix`` replaces the image's extension.

        Both names share one stem: when either would clash, both get ``_<order>``.
        """
        base = PurePosixPath(safe_basename(image_filename))
        stem, suffix = base.stem or "image", image_suffix if image_suffix is not None else base.suffix
        candidate, n = stem, 0
        while True:
            image, xml = f"{candidate}{suffix}", f"{candidate}.xml"
            if image.lower() not in self._used and xml.lower() not in self._used and image != xml:
                break
            n += 1
            candidate = f"{stem}_{order}" if n == 1 else f"{stem}_{order}_{n}"
        self._used.update((image.lower(), xml.lower()))
        return image, xml
