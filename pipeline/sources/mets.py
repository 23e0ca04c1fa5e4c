"""METS reader: the page sequence of an export and, per page, its XML file and image (if listed).

Reads what eScriptorium writes (section 5 of the formats spec) and what its importer accepts:
``structMap TYPE="physical"`` in any case, page divs whose ``TYPE`` contains "page", files found
through ``fptr/@FILEID``. A file is an image or a page XML by its group's ``USE`` or its extension.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO

from pipeline import ns
from pipeline.sources.xml import XmlError, iterparse_secure, local_name

XLINK_HREF = f"{{{ns.XLINK}}}href"


@dataclass(frozen=True, slots=True)
class MetsPage:
    """One page div: its XML and image references (``href`` as written, relative to the METS)."""

    xml: str | None
    image: str | None


def read_mets(stream: IO[bytes], name: str, image_suffixes: frozenset[str]) -> list[MetsPage]:
    """The physical structMap's pages in order; XmlError when the file is not usable METS."""
    files: dict[str, tuple[str, str]] = {}  # file ID -> (href, USE of its group)
    pages: list[list[str]] = []
    in_physical = False
    for event, el in iterparse_secure(stream, name, ("start", "end")):
        tag = local_name(el.tag)
        if event == "start":
            if tag == "structMap":
                in_physical = (el.get("TYPE") or "").lower() == "physical"
            elif tag == "div" and in_physical and "page" in (el.get("TYPE") or "").lower():
                pages.append([])
            continue
        if tag == "file":
            group = el.getparent()
            use = (group.get("USE") or "") if group is not None else ""
            href = next((loc.get(XLINK_HREF) for loc in el if local_name(loc.tag) == "FLocat"), None)
            if el.get("ID") and href:
                files[el.get("ID")] = (href, use.lower())
            el.clear()
        elif tag == "fptr" and in_physical and pages and el.get("FILEID"):
            pages[-1].append(el.get("FILEID"))
        elif tag == "structMap":
            in_physical = False
    result = []
    for number, ids in enumerate(pages, start=1):
        missing = [i for i in ids if i not in files]
        if missing:
            raise XmlError(f"{name}: page {number}: fptr FILEID {missing[0]!r} names no file")
        refs = [files[i] for i in ids]
        images = [h for h, use in refs if use == "image" or PurePosixPath(h).suffix.lower() in image_suffixes]
        xmls = [h for h, use in refs if h not in images and PurePosixPath(h).suffix.lower() == ".xml"]
        result.append(MetsPage(xmls[0] if xmls else None, images[0] if images else None))
    return result
