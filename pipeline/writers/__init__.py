"""Formats and the writers that fill archives with them: one table, a row per format.

A :class:`FormatSpec` is data: the name users type, the tag in file names, the suffix of a
one-document export, the writer object of its family, and the namespace its entries validate
against. A new format is one module in ``pipeline/formats`` (model in, bytes out) plus one
``register_format`` line here; a new family of writers is one module in this package.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any

from pipeline import __version__, ns
from pipeline.errors import UsageError
from pipeline.formats import alto, hocr, iiif, page, tei, text
from pipeline.naming import slug
from pipeline.writers.base import Gathering, WriteJob, Writer
from pipeline.writers.dataset import DatasetWriter
from pipeline.writers.pagezip import PageZipWriter
from pipeline.writers.stream import DocumentZipWriter, StreamWriter

__all__ = ["DEFAULT_FORMAT", "FORMATS", "DeferredWriter", "ExchangeWriter", "FormatSpec", "Gathering",
           "PageZipWriter", "StreamWriter", "WriteJob", "Writer", "get", "register_format"]


def __getattr__(name: str) -> Any:
    if name == "ExchangeWriter":  # its module (and the brat format) loads only when asked for
        from pipeline.writers.exchange import ExchangeWriter

        return ExchangeWriter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class DeferredWriter:
    """``module.name()``, made when it first writes: a format whose family is heavy to import (the
    exchange writer and its brat format) costs an export of another format nothing."""

    def __init__(self, module: str, name: str) -> None:
        self._module, self._name = module, name
        self._writer: Writer | None = None

    async def write(self, job: WriteJob) -> None:
        if self._writer is None:
            self._writer = getattr(importlib.import_module(self._module), self._name)()
        await self._writer.write(job)


class TeiWriter:
    """TEI: one file per document (the stream family's document zip), or per page with
    ``unit="part"`` (a page zip with METS); its header names this program and the layer."""

    async def write(self, job: WriteJob) -> None:
        app = tei.Application("pipeline", __version__, job.layer)
        if job.options.unit == "part":
            await PageZipWriter(functools.partial(tei.render, app=app)).write(job)
            return
        name = f"{slug(job.document.name) or 'document'}.xml"
        writer = DocumentZipWriter(lambda job: tei.TeiDocument(job.document, job.regions, app),
                                   lambda document: name, pieces=2)
        await writer.write(job)


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
register_format(FormatSpec("exchange", "exchange", "zip",
                           DeferredWriter("pipeline.writers.exchange", "ExchangeWriter")))
register_format(FormatSpec("tei", "tei", "zip", TeiWriter(), ns.TEI))
register_format(FormatSpec("iiif", "iiif", "zip", DocumentZipWriter(
    lambda job: iiif.IiifManifest(job.document, job.regions, iiif.Urls(job.options.iiif_base,
                                                                       job.options.iiif_image_base)),
    lambda document: iiif.MANIFEST_NAME)))
register_format(FormatSpec("hocr", "hocr", "zip", PageZipWriter(hocr.render, suffix=".html"), ns.XHTML))
register_format(FormatSpec("lines", "lines", "zip", DatasetWriter()))
