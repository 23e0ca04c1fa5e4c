"""Namespaces and the names every stage must agree on, declared once.

Writers, readers, the validator and ``verify`` all take them from here, so an archive's METS file,
its dummy block ids and its schemas cannot drift apart between the module that writes them and the
one that reads them back.
"""

from __future__ import annotations

ALTO = "http://www.loc.gov/standards/alto/ns-v4#"
PAGE = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
PAGE_2013 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2013-07-15"
METS = "http://www.loc.gov/METS/"
XLINK = "http://www.w3.org/1999/xlink"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XSD = "http://www.w3.org/2001/XMLSchema"
XML = "http://www.w3.org/XML/1998/namespace"
TEI = "http://www.tei-c.org/ns/1.0"
XHTML = "http://www.w3.org/1999/xhtml"
SVG = "http://www.w3.org/2000/svg"
#: JSON-LD contexts of IIIF Presentation 3 and of its text granularity extension
IIIF_PRESENTATION_3 = "http://iiif.io/api/presentation/3/context.json"
IIIF_TEXT_GRANULARITY = "http://iiif.io/api/extension/text-granularity/context.json"

#: the METS entry of a page zip (eScriptorium's name); readers match it case-insensitively
METS_NAME = "METS.xml"
#: images that could not be exported with ``on_error="skip"``, added just before METS
REPORT_NAME = "export-report.json"
#: eScriptorium's ids of the pseudo page and of the region holding orphan lines
DUMMY_PAGE = "eSc_dummypage_"
DUMMY_BLOCK = "eSc_dummyblock_"
#: file name suffixes taken for page images when reading folders, zips and METS
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".jp2", ".j2k", ".jpx", ".webp", ".gif", ".bmp"}
)
