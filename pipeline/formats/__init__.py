"""Format registry: what each export format is called, how it renders and how its file is named.

Per-page formats turn one ``Part`` into one XML zip entry (with METS alongside); document formats
see parts go by and produce the whole output. The table is the only place a new format goes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from pipeline.errors import UsageError
from pipeline.formats import alto, mets, page, text
from pipeline.model import Document, Part
from pipeline.select import RegionFilter

__all__ = ["DEFAULT_FORMAT", "FORMATS", "FormatSpec", "alto", "get", "mets", "page", "text"]

PageRenderer = Callable[[Part, Document, RegionFilter], Iterator[bytes]]
DocumentRenderer = Callable[[Iterable[Part], RegionFilter], Iterator[bytes]]


@dataclass(frozen=True, slots=True)
class FormatSpec:
    """One export format. Exactly one of ``render_part`` / ``render_document`` / ``writer`` is set;
    ``writer`` names a dedicated archive writer (export.py's ``WRITERS``) for formats that are
    neither per-page XML nor one stream of text."""

    name: str
    tag: str  #: the ``<format>`` part of the output file name (spec 6.1)
    ext: str
    render_part: PageRenderer | None = None
    render_document: DocumentRenderer | None = None
    writer: str | None = None

    @property
    def zipped(self) -> bool:
        """True for a zip of one XML file per page plus ``METS.xml`` (and optional images)."""
        return self.render_part is not None


_SPECS = (
    FormatSpec("alto", "alto", "zip", render_part=alto.render),
    FormatSpec("page", "pagexml", "zip", render_part=page.render),
    FormatSpec("text", "text", "txt", render_document=text.render),
    FormatSpec("exchange", "exchange", "zip", writer="exchange"),
    FormatSpec("lines", "lines", "zip", writer="lines"),
)
#: name or alias -> format; ``pagexml`` is upstream's name for PAGE
FORMATS: dict[str, FormatSpec] = {spec.name: spec for spec in _SPECS} | {"pagexml": _SPECS[1]}
DEFAULT_FORMAT = "alto"


def get(name: str) -> FormatSpec:
    """The format called ``name`` (case-insensitive), or a UsageError listing the known names."""
    try:
        return FORMATS[name.lower()]
    except KeyError:
        raise UsageError(f"unknown format {name!r}; accepted: {', '.join(FORMATS)}") from None
