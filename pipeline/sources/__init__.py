"""Where documents come from: a :class:`Source`, opened by path or URL with :func:`open_source`.

Everything above this package (the CLI, jobs, the export, later the HTTP service) asks a source
for documents and parts through the protocol only and never names a concrete class. Each kind
registers itself with ONE line (:func:`register_source`): a URL scheme, or a sniffer that
recognises a path. Sources are read-only.

Kinds here: the SQLite corpus (``pipeline.store``), a folder or zip of ALTO/PAGE (+ METS)
(``xmlfiles``: :class:`~pipeline.sources.folder.XmlSource`), an exchange archive (``exchange``),
a IIIF manifest (``iiif``, read by the same ``XmlSource``).
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pipeline.errors import SourceError, UsageError
from pipeline.model import Document, Part, Selection
from pipeline.safezip import refuse_special

__all__ = ["DEFAULT_LAYERS", "Bundle", "PageData", "Releasing", "Selection", "Source", "StampsImages",
           "XmlError", "XmlSource", "open_source", "read_page", "register_source"]

#: names this package gives from its kinds' modules, imported when first asked for: an export from a
#: corpus never loads the XML readers
_LAZY = {"DEFAULT_LAYERS": "folder", "Bundle": "folder", "XmlSource": "folder",
         "PageData": "xml", "XmlError": "xml", "read_page": "xml"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"pipeline.sources.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@runtime_checkable
class Source(Protocol):
    """What the CLI, jobs and the HTTP service ask of a source. Also a (sync) context manager."""

    #: reopens the same source with ``open_source`` in another process
    @property
    def url(self) -> str: ...

    def display(self) -> str:
        """How logs and the registry name it (credentials left out)."""
        ...

    def default_registry(self) -> Path | None:
        """Where exports of it are recorded when nobody says (None: nowhere of its own)."""
        ...

    def documents(self, selection: Selection | None = None) -> AsyncIterator[Document]:
        """The selected documents, by id; UsageError for an id or name that matches none."""
        ...

    async def document(self, ref: str | int | None = None) -> Document:
        """One document by id or exact name (None: the only one); UsageError if unknown or ambiguous."""
        ...

    async def part_ids(self, document: Document, pages: Sequence[int]) -> tuple[int, ...]:
        """The ids of the parts at 1-based page numbers, in part order; UsageError past the end."""
        ...

    def parts(
        self, document: Document, layer: str | None = None, part_ids: Sequence[int] | None = None
    ) -> AsyncIterator[Part]:
        """The parts in order (or ``part_ids``), lazily, each complete in ``layer`` (None: the
        document's default layer)."""
        ...

    async def change_marker(self, document: Document, layer: str | None = None) -> str:
        """Cheap evidence of the document's state in ``layer`` (None: its default layer), for
        incremental runs: it changes whenever the parts an export reads could, and is found without
        reading them (aggregates of the rows, a zip's directory, file sizes and times). Stable
        across processes: no temporary path, no time of reading."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Source: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class StampsImages(Protocol):
    """A source whose images are not files of their own (zip members): what identifies a part's
    image bytes and their size (``--dry-run`` estimates) without a temporary path or extracting."""

    def image_stamp(self, part: Part) -> tuple[str, int] | None: ...


@runtime_checkable
class Releasing(Protocol):
    """A source that made something for a part (an image extracted from a zip) and wants to know
    when the export is done with it."""

    def release(self, part: Part) -> None: ...


#: ``factory(path_or_url, **options)``; options a kind does not know are ignored
SourceFactory = Callable[..., Source]
#: (URL scheme, or a function saying whether a local path is of this kind, factory), in order
_KINDS: list[tuple[str | Callable[[Path], bool], SourceFactory]] = []


def register_source(kind: str | Callable[[Path], bool], factory: SourceFactory) -> None:
    """``open_source`` opens ``kind://...`` URLs, or local paths ``kind(path)`` accepts, with
    ``factory``. Sniffers are asked in registration order."""
    _KINDS.append((kind.lower() if isinstance(kind, str) else kind, factory))


def open_source(target: str | Path, **options: Any) -> Source:
    """The source at a path or URL. ``options``: ``images`` (will images be read), ``layer`` (the
    layer name of sources that have one unnamed layer)."""
    text = str(target)
    scheme, sep, _ = text.partition("://")
    if sep and scheme.isidentifier():
        for kind, factory in _KINDS:
            if kind == scheme.lower():
                return factory(text, **options)
        known = ", ".join(f"{k}://" for k, _ in _KINDS if isinstance(k, str)) or "none"
        raise UsageError(f"{text}: no source of kind {scheme}:// (known: {known}, or a path)")
    path = Path(text)
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    refuse_special(path)  # a device or FIFO would never end, or block, once opened
    for kind, factory in _KINDS:
        if not isinstance(kind, str) and kind(path):
            return factory(path, **options)
    raise SourceError(f"{path}: not a corpus, a folder or zip of ALTO/PAGE, an exchange archive "
                      "nor a IIIF manifest")


def _open_postgres(url: str, *, media_root: str | None = None, registry: str | None = None,
                   **_: Any) -> Source:
    from pipeline.sources.postgres import open_postgres  # psycopg is loaded only for such URLs

    return open_postgres(url, media_root=media_root, registry=registry)


def deferred(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, imported when first called: a kind's sniffer and factory cost nothing until
    a path of its kind comes (an export from a corpus never loads the XML or exchange readers)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__qualname__ = call.__name__ = f"{module}.{name}"
    return call


def _register_builtin() -> None:
    register_source(deferred("pipeline.sources.sqlite", "is_corpus"),
                    deferred("pipeline.sources.sqlite", "open_corpus"))
    register_source(deferred("pipeline.sources.exchange", "is_exchange_file"),
                    deferred("pipeline.sources.exchange", "ExchangeSource"))
    register_source(deferred("pipeline.sources.iiif", "is_manifest"),  # XmlSource reads manifests too
                    deferred("pipeline.sources.xmlfiles", "open_bundle"))
    register_source(deferred("pipeline.sources.xmlfiles", "is_xml_bundle"),
                    deferred("pipeline.sources.xmlfiles", "open_bundle"))
    register_source("postgresql", _open_postgres)
    register_source("postgres", _open_postgres)


_register_builtin()
