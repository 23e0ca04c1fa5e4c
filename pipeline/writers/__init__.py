"""Formats and the writers that fill archives with them: one table, a row per format.

A :class:`FormatSpec` is data: the name users type, the tag in file names, the suffix of a
one-document export, the writer object of its family, and the namespace its entries validate
against. A new format is one module in ``pipeline/formats`` (model in, bytes out) plus one
``register_format`` line here; a new family of writers is one module in this package.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline import ns
from pipeline.errors import UsageError
from pipeline.formats import alto, page, text
from pipeline.writers.base import Gathering, WriteJob, Writer
from pipeline.writers.dataset import DatasetWriter
from pipeline.writers.exchange import ExchangeWriter
from pipeline.writers.pagezip import PageZipWriter
from pipeline.writers.stream import StreamWriter

__all__ = ["DEFAULT_FORMAT", "FORMATS", "ExchangeWriter", "FormatSpec", "PageZipWriter", "StreamWriter",
           "Gathering", "WriteJob", "Writer", "get", "register_format"]


@dataclass(frozen=True, slots=True)
class FormatSpec:
    """One export format. ``suffix`` is the file suffix of a one-document export (``zip`` for
    archives; a stream format's own, e.g. ``txt``); ``schema`` the namespace of its entries that
    ``verify`` validates (None: not XML)."""

    name: str
    tag: str  #: the ``<format>`` part of output file names (spec 6.1)
    suffix: str
    writer: Writer
    schema: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def zipped(self) -> bool:
        """True when a one-document export is a zip (page zips, exchange archives)."""
        return self.suffix == "zip"


#: name or alias -> format
FORMATS: dict[str, FormatSpec] = {}
DEFAULT_FORMAT = "alto"


def register_format(spec: FormatSpec) -> FormatSpec:
    """Add a row to the table: ``spec.name`` and its aliases become accepted format names."""
    for name in (spec.name, *spec.aliases):
        FORMATS[name.lower()] = spec
    return spec


def get(name: str) -> FormatSpec:
    """The format called ``name`` (case-insensitive), or a UsageError listing the known names."""
    try:
        return FORMATS[name.lower()]
    except KeyError:
        names = dict.fromkeys([spec.name for spec in FORMATS.values()] + list(FORMATS))
        raise UsageError(f"unknown format {name!r}; accepted: {', '.join(names)}") from None


register_format(FormatSpec("alto", "alto", "zip", PageZipWriter(alto.render), ns.ALTO))
register_format(FormatSpec("page", "pagexml", "zip", PageZipWriter(page.render), ns.PAGE,
                           aliases=("pagexml",)))
register_format(FormatSpec("text", "text", "txt", StreamWriter(text.part)))
register_format(FormatSpec("exchange", "exchange", "zip", ExchangeWriter()))
register_format(FormatSpec("lines", "lines", "zip", DatasetWriter()))
