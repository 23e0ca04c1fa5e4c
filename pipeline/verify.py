"""``pipeline verify``: re-read an archive and say everything that is wrong with it.

Every entry's CRC is checked by reading it fully; every XML entry is parsed (securely) and
validated against its schema; every METS reference must name an entry of the archive, and
every XML entry other than METS must be referenced by it. A bulk archive has one METS per
document folder, whose references are relative to that folder. In a folder with images, every
page XML must name an image entry of the archive (the one METS puts on its page), and an image
entry's bytes must be what its extension says. Text exports (``.txt``) are checked for what a
reader needs: UTF-8, page headers, no truncation. TEI entries are validated against ``tei_all``
with Jing in one run (without Jing: well-formedness only, and a note says the schema was not
checked); hOCR pages (``.html``) must be well-formed and listed by METS; JSON entries (IIIF
manifests) must parse.
"""

from __future__ import annotations

import json
import posixpath
import re
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO

from lxml import etree

from . import sinks, validate
from .errors import OutputError
from .ns import METS_NAME, XLINK
from .safezip import UnsafeArchiveError, ZipReadError, check_layout, open_member, open_zip

_NS = {"m": validate.METS_NS, "xlink": XLINK}
_HREF = f"{{{_NS['xlink']}}}href"

#: what image files start with, per extension (lower case), and the format's name
_MAGIC: dict[str, tuple[tuple[bytes, ...], str]] = {
    **dict.fromkeys((".jpg", ".jpeg", ".jpe", ".jfif"), ((b"\xff\xd8\xff",), "JPEG")),
    ".png": ((b"\x89PNG\r\n\x1a\n",), "PNG"),
    **dict.fromkeys((".tif", ".tiff"), ((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), "TIFF")),
    ".webp": ((b"RIFF",), "WebP"),
    **dict.fromkeys((".jp2", ".jpx"), ((b"\x00\x00\x00\x0cjP  \r\n\x87\n",), "JPEG 2000")),
    ".j2k": ((b"\xff\x4f\xff\x51",), "JPEG 2000 codestream"),
}


def verify_archive(path: Path, notes: list[str] | None = None, fileobj: IO[bytes] | None = None
                   ) -> list[str]:
    """Problems found in the zip at ``path``, one line each; empty when it is sound. ``notes``
    receives what could not be checked (TEI without Jing), which is not a problem.

    ``fileobj`` (with a ``size``): read that instead, e.g. an object read in place by ranged
    reads (zipfile reads the end record and central directory first, then each entry)."""
    try:
        zf = open_zip(path, fileobj)
        size = path.stat().st_size if fileobj is None else fileobj.size  # type: ignore[attr-defined]
    except (ZipReadError, OSError) as exc:
        return [_problem(exc, path)]
    problems: list[str] = []
    #: page XML entry -> (its image reference, line)
    references: dict[str, tuple[str, int | None]] = {}
    with zf, tempfile.TemporaryDirectory(prefix="pipeline-verify-") as tmp:
        tei: dict[Path, str] = {}
        names = zf.namelist()
        unreadable: set[str] = set()
        for info in zf.infolist():
            try:
                check_layout(path, info, size)
                with open_member(zf, info, path) as fh:
                    lower = info.filename.lower()
                    if lower.endswith((".xml", ".html")):
                        try:
                            tree = etree.parse(fh, validate.parser())
                        except etree.XMLSyntaxError as exc:
                            message = validate.syntax_message(exc)
                            problems.append(f"{info.filename}: line {exc.lineno}: not well-formed: {message}")
                            continue
                        if lower.endswith(".html"):  # hOCR: well-formed (polyglot XHTML) is what we check
                            continue
                        if etree.QName(tree.getroot()).namespace == validate.TEI_NS:
                            copy = Path(tmp) / f"{len(tei)}.xml"
                            tree.write(str(copy), encoding="UTF-8", xml_declaration=True)
                            tei[copy] = info.filename
                            continue
                        problems += [f"{info.filename}: {e}" for e in validate.validate_tree(tree)]
                        if (found := _image_reference(tree)) is not None:
                            references[info.filename] = found
                    elif info.filename.lower().endswith(".json"):
                        try:
                            json.load(fh)
                        except (ValueError, UnicodeDecodeError) as exc:
                            problems.append(f"{info.filename}: not valid JSON ({exc})")
                    else:
                        head = fh.read(16)
                        problems += _magic_problems(info.filename, head)
                        while fh.read(1 << 20):
                            pass
            except (ZipReadError, UnsafeArchiveError) as exc:
                problems.append(_problem(exc, path))
                unreadable.add(info.filename)
        problems += _tei_problems(tei, notes)
        for mets in (n for n in names if PurePosixPath(n).name == METS_NAME and n not in unreadable):
            problems += _mets_problems(zf, mets, names, references)
    return problems


def _tei_problems(files: dict[Path, str], notes: list[str] | None) -> list[str]:
    """TEI entries against ``tei_all`` with Jing (one run); without Jing, a note."""
    if not files:
        return []
    if validate.jing() is None:
        if notes is not None:
            notes.append(f"TEI schema not checked ({len(files)} file(s)): jing is not installed "
                         "(Debian package jing); checked for well-formedness only")
        return []
    found = validate.validate_tei(list(files))
    return [f"{files[path]}: {error}" for path, errors in found.items() for error in errors]


def _problem(exc: Exception, path: Path) -> str:
    """One line for an unreadable archive or member, without the archive (the caller names it)."""
    return str(exc).removeprefix(f"{path}: ")


def _image_reference(tree: etree._ElementTree) -> tuple[str, int | None] | None:
    """An ALTO ``sourceImageInformation/fileName`` or a PAGE ``Page/@imageFilename`` and its line."""
    root = tree.getroot()
    for el in root.iterfind("{*}Description/{*}sourceImageInformation/{*}fileName"):
        return (el.text or "").strip(), el.sourceline
    for el in root.iterfind("{*}Page"):
        return el.get("imageFilename") or "", el.sourceline
    return None


def _magic_problems(name: str, head: bytes) -> list[str]:
    """An image entry whose first bytes are not what its extension says."""
    known = _MAGIC.get(posixpath.splitext(name)[1].lower())
    if known is None or head.startswith(known[0]):
        return []
    if known[1] == "WebP" and head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return []
    return [f"{name}: not a {known[1]} file, though its extension says so"]


def _mets_problems(
    zf: zipfile.ZipFile, mets: str, names: list[str], references: dict[str, tuple[str, int | None]]
) -> list[str]:
    """References of one METS file, relative to its folder, against the entries of that folder;
    the image references of the page XML of that folder."""
    folder = posixpath.dirname(mets)
    try:
        with open_member(zf, zf.getinfo(mets), Path(zf.filename or "")) as fh:
            root = etree.parse(fh, validate.parser()).getroot()
    except (etree.XMLSyntaxError, ZipReadError):
        return []  # already reported by the entry loop
    hrefs = {
        posixpath.join(folder, el.get(_HREF) or ""): el.sourceline
        for el in root.iterfind(".//m:FLocat", _NS)
        if not (el.get(_HREF) or "").startswith(("http://", "https://"))
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
        and name.lower().endswith((".xml", ".html")) and name not in hrefs
    ]
    return problems + _image_reference_problems(root, folder, entries, references)


def _image_reference_problems(
    root: etree._Element, folder: str, entries: set[str], references: dict[str, tuple[str, int | None]]
) -> list[str]:
    """In a folder with images, each page XML names the image entry METS puts on its page; a page
    that METS gives no image (one skipped as bad) may name an image that is not there."""
    files = {
        el.get("ID"): posixpath.join(folder, loc.get(_HREF) or "")
        for el in root.iterfind(".//m:file", _NS)
        if (loc := el.find("m:FLocat", _NS)) is not None
    }
    images = {files[el.get("ID")] for el in root.iterfind(".//m:fileGrp[@USE='image']/m:file", _NS)}
    if not images and not any(
        posixpath.dirname(n) == folder and posixpath.splitext(n)[1].lower() in _MAGIC for n in entries
    ):
        return []  # no images: the XML names the source's image file
    page_image: dict[str, str | None] = {}
    for page in root.iterfind(".//m:div[@TYPE='page']", _NS):
        pointed = [files.get(fptr.get("FILEID")) for fptr in page.iterfind("m:fptr", _NS)]
        image = next((f for f in pointed if f in images), None)
        for xml in pointed:
            if xml is not None and xml not in images:
                page_image[xml] = image
    problems = []
    for xml, (reference, line) in references.items():
        if posixpath.dirname(xml) != folder:
            continue
        expected = page_image.get(xml)
        if xml in page_image and expected is None:
            continue  # METS: this page has no image
        named = posixpath.join(folder, reference)
        if named not in entries:
            problems.append(f"{xml}: line {line}: names the image {reference!r}, which is not in the archive")
        elif expected is not None and named != expected:
            problems.append(f"{xml}: line {line}: names the image {reference!r}, but its page's image is "
                            f"{posixpath.relpath(expected, folder or '.')!r}")
    return problems


#: first line of each page of a text export (spec 6.3): ``--------------- title (file) ---------------``
_TEXT_HEADER = re.compile(r"-{15} .* \(.*\) -{15}")


def verify_text(path: Path, fileobj: IO[bytes] | None = None) -> list[str]:
    """Problems of a text export: strict UTF-8, a page header first, a final line break.

    An empty file is sound (a document without kept lines exports nothing)."""
    try:
        data = path.read_bytes() if fileobj is None else fileobj.read()
    except OSError as exc:
        return [f"cannot read: {exc.strerror}"]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return [f"line {line}: not UTF-8 (byte {exc.start}: {exc.reason})"]
    if not text:
        return []
    problems = []
    if not _TEXT_HEADER.fullmatch(text.split("\n", 1)[0]):
        problems.append("line 1: not a page header ('--------------- title (file) ---------------')")
    if not text.endswith("\n"):
        problems.append("does not end with a line break (truncated?)")
    return problems


def verify_path(path: Path | str, notes: list[str] | None = None) -> list[str]:
    """A text export (``.txt``) or an archive, a file or a URL (``s3://...``, read where it is):
    the problems ``verify`` reports for it (and, in ``notes``, what it could not check)."""
    text = str(path).lower().endswith(".txt")
    if "://" not in str(path):
        return verify_text(Path(path)) if text else verify_archive(Path(path), notes)
    try:
        with sinks.open_reader(str(path)) as fh:
            return verify_text(path, fh) if text else verify_archive(path, notes, fh)  # type: ignore[arg-type]
    except OutputError as exc:  # missing, refused, unreachable: a problem of this one
        return [str(exc).removeprefix(f"{path}: ")]
