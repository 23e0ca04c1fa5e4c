"""Sources other than the corpus store: folders and zips of ALTO/PAGE/METS files.

Readers parse page files incrementally into :class:`~pipeline.sources.xml.PageData`; the folder
source pairs them with images and serves them to the importer and, as ``Part``s, to exports.
"""

from pipeline.sources.folder import DEFAULT_LAYERS, Bundle, XmlSource
from pipeline.sources.xml import PageData, XmlError, read_page

__all__ = ["DEFAULT_LAYERS", "Bundle", "PageData", "XmlError", "XmlSource", "read_page"]
