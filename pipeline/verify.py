"""``pipeline verify``: re-read an archive and say everything that is wrong with it.

Every entry's CRC is checked by reading it fully; every XML entry is parsed (securely) and
validated against its schema; every METS reference must name an entry of the archive, and
every XML entry other than METS must be referenced by it. A bulk archive has one METS per
document folder, whose references are relative to that folder.
"""

from __future__ import annotations

import posixpath
import zipfile
from pathlib import Path, PurePosixPath

from lxml import etree

from . import validate
from .naming import METS_NAME
from .safezip import UnsafeArchiveError, ZipReadError, check_layout, open_member, open_zip

_NS = {"m": validate.METS_NS, "xlink": "http://www.w3.org/1999/xlink"}


def verify_archive(path: Path) -> list[str]:
    """Problems found in the zip at ``path``, one line each; empty when it is sound."""
    try:
        zf = open_zip(path)
        size = path.stat().st_size
    except (ZipReadError, OSError) as exc:
        return [_problem(exc, path)]
    problems: list[str] = []
    with zf:
        names = zf.namelist()
        unreadable: set[str] = set()
        for info in zf.infolist():
            try:
                check_layout(path, info, size)
                with open_member(zf, info, path) as fh:
                    if info.filename.lower().endswith(".xml"):
                        errors = validate.validate(fh)
                        problems += [f"{info.filename}: {e}" for e in errors]
                    else:
                        while fh.read(1 << 20):
                            pass
            except (ZipReadError, UnsafeArchiveError) as exc:
                problems.append(_problem(exc, path))
                unreadable.add(info.filename)
        for mets in (n for n in names if PurePosixPath(n).name == METS_NAME and n not in unreadable):
            problems += _mets_problems(zf, mets, names)
    return problems


def _problem(exc: Exception, path: Path) -> str:
    """One line for an unreadable archive or member, without the archive (the caller names it)."""
    return str(exc).removeprefix(f"{path}: ")


def _mets_problems(zf: zipfile.ZipFile, mets: str, names: list[str]) -> list[str]:
    """References of one METS file, relative to its folder, against the entries of that folder."""
    folder = posixpath.dirname(mets)
    try:
        with open_member(zf, zf.getinfo(mets), Path(zf.filename or "")) as fh:
            root = etree.parse(fh, validate.parser()).getroot()
    except (etree.XMLSyntaxError, ZipReadError):
        return []  # already reported by the entry loop
    hrefs = {
        posixpath.join(folder, el.get(f"{{{_NS['xlink']}}}href") or ""): el.sourceline
        for el in root.iterfind(".//m:FLocat", _NS)
        if not (el.get(f"{{{_NS['xlink']}}}href") or "").startswith(("http://", "https://"))
    }
    entries = set(names)
    problems = [
        f"{mets}: line {line}: FLocat names {href!r}, which is not in the archive"
        for href, line in hrefs.items()
        if href not in entries
    ]
    problems += [
        f"{name}: not referenced by {mets}"
        for name in names
        if posixpath.dirname(name) == folder and name != mets
        and name.lower().endswith(".xml") and name not in hrefs
    ]
    return problems
