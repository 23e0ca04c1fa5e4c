"""Plain-text export (spec 6.3): per page a header, then the kept line texts; UTF-8, LF."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pipeline.model import Part
from pipeline.select import RegionFilter, text_rows

_RULE = "-" * 15


def part(part: Part, flt: RegionFilter) -> Iterator[bytes]:
    """One chunk for a page with at least one kept line (none otherwise); contents raw, unescaped."""
    body = "".join([f"{line.text}\n" for line in text_rows(part, flt)])
    if body:
        yield f"{_RULE} {part.title} ({part.image_filename}) {_RULE}\n{body}".encode()


def render(parts: Iterable[Part], flt: RegionFilter) -> Iterator[bytes]:
    """A whole document's text: the pages one after the other (no header, no footer)."""
    for one in parts:
        yield from part(one, flt)
