"""Plain-text export (spec 6.3): per page a header, then the kept line texts; UTF-8, LF."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pipeline.model import Part
from pipeline.select import RegionFilter, text_rows

_RULE = "-" * 15


def render(parts: Iterable[Part], flt: RegionFilter) -> Iterator[bytes]:
    """One chunk per page with at least one kept line; contents are written raw, unescaped."""
    for part in parts:
        body = "".join([f"{line.text}\n" for line in text_rows(part, flt)])
        if body:
            yield f"{_RULE} {part.title} ({part.image_filename}) {_RULE}\n{body}".encode()
