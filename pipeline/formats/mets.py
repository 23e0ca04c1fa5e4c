"""METS 1.12 index of an ALTO/PAGE zip (spec section 5, with the listed defects fixed)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from lxml import etree

from pipeline import ns
from pipeline.formats.xmlutil import DECLARATION, Chunks, clean
from pipeline.ocrmodel import Provenance

METS_NS = ns.METS
_NSMAP = {None: METS_NS, "xlink": ns.XLINK}
_HREF = f"{{{ns.XLINK}}}href"
METS, FILE_SEC, FILE_GRP, FILE, FLOCAT, STRUCT_MAP, DIV, FPTR, METS_HDR, AGENT, NAME, NOTE = (
    f"{{{METS_NS}}}{name}"
    for name in ("mets", "fileSec", "fileGrp", "file", "FLocat", "structMap", "div", "fptr", "metsHdr",
                 "agent", "name", "note")
)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")

#: (fileGrp USE, file ID prefix, position of the entry name in a page tuple), in output order
_GROUPS = (("image", "image", 0), ("export", "export", 1))


#: rendered bytes handed out at a time
FLUSH_EVERY = 1 << 16


def render(
    pages: Iterable[tuple[str | None, str | None]], provenance: Provenance | None = None
) -> Iterator[bytes]:
    """METS for ``(image entry, xml entry)`` per exported part, in order; None = absent.

    Page *n* (1-based) gets ``image<n>``/``export<n>``, so a part that failed still uses its index.
    ``pages`` is read once per file group and once for the structMap, so it must be re-iterable
    (a :class:`~pipeline.naming.PageIndex` or a list): nothing but the compact index is held, and
    the output goes out in chunks of about :data:`FLUSH_EVERY` bytes.
    """
    if iter(pages) is pages:
        raise TypeError("mets.render reads its pages several times: pass a PageIndex or a list")
    out = Chunks(DECLARATION)
    with etree.xmlfile(out, encoding="UTF-8") as xf, xf.element(METS, nsmap=_NSMAP):
        xf.write("\n")
        if provenance is not None:
            _header(xf, provenance)
        groups = [g for g in _GROUPS if any(names[g[2]] for names in pages)]
        if groups:
            with xf.element(FILE_SEC):
                xf.write("\n")
                for use, prefix, pos in groups:
                    with xf.element(FILE_GRP, {"USE": use}):
                        xf.write("\n")
                        for n, names in enumerate(pages, 1):
                            if names[pos]:
                                _file(xf, f"{prefix}{n}", names[pos])
                            if out.size >= FLUSH_EVERY:
                                yield out.take()
                    xf.write("\n")
            xf.write("\n")
        with xf.element(STRUCT_MAP, {"TYPE": "physical"}), xf.element(DIV, {"TYPE": "document"}):
            xf.write("\n")
            for n, names in enumerate(pages, 1):
                with xf.element(DIV, {"TYPE": "page"}):
                    for _, prefix, pos in _GROUPS:
                        if names[pos]:
                            with xf.element(FPTR, {"FILEID": f"{prefix}{n}"}):
                                pass
                xf.write("\n")
                if out.size >= FLUSH_EVERY:
                    yield out.take()
        xf.write("\n")
    yield out.take()


def _header(xf: etree._IncrementalFileWriter, prov: Provenance) -> None:
    """``metsHdr``: this program as the creating agent (with the layer it exported), then each
    model whose work the files hold; no CREATEDATE (the clock would change the bytes)."""
    software = {"TYPE": "OTHER", "OTHERTYPE": "SOFTWARE"}
    with xf.element(METS_HDR):
        xf.write("\n")
        with xf.element(AGENT, {"ROLE": "CREATOR", **software}):
            _text(xf, NAME, prov.producer)
            _text(xf, NOTE, clean(f"transcription layer: {prov.layer}", "layer", prov.layer))
        xf.write("\n")
        for step in prov.steps:
            with xf.element(AGENT, {"ROLE": "OTHER", "OTHERROLE": step.job.upper(), **software}):
                _text(xf, NAME, clean(f"kraken model {step.name}", "model", step.model_id))
                _text(xf, NOTE, clean(step.summary, "model", step.model_id))
                if step.executed_on is not None:
                    _text(xf, NOTE, f"run on the document at {step.executed_on.isoformat()}")
                if step.job == "recognition":
                    _text(xf, NOTE, clean(f"made transcription layer: {prov.layer}", "layer", prov.layer))
            xf.write("\n")
    xf.write("\n")


def _text(xf: etree._IncrementalFileWriter, tag: str, text: str) -> None:
    with xf.element(tag):
        xf.write(text)


def _file(xf: etree._IncrementalFileWriter, file_id: str, name: str) -> None:
    """LOCTYPE is required (defect 1): URL for absolute URLs, else a zip member (OTHER/FILE)."""
    where = {"LOCTYPE": "URL"} if _URL.match(name) else {"LOCTYPE": "OTHER", "OTHERLOCTYPE": "FILE"}
    where[_HREF] = clean(name, "entry", file_id)
    with xf.element(FILE, {"ID": file_id}), xf.element(FLOCAT, where):
        pass
    xf.write("\n")
