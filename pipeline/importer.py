"""Import folders and zips of ALTO/PAGE (with or without METS) into a corpus, one document each.

Each document is parsed page by page (see :mod:`pipeline.sources.xml`) and written in one
transaction on a worker thread: a malformed file rolls the whole document back and removes the
images copied for it, so nothing of it is left. Images are copied into the corpus media folder,
or referenced in place with ``link``; their size comes from the header only and is checked
against ``max_pixels`` before the page is written.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import anyio.to_thread

from pipeline.errors import SourceError, UsageError
from pipeline.sources.folder import DEFAULT_LAYERS, Bundle, PageFile, open_bundle
from pipeline.sources.iiif import CanvasPage, ManifestBundle
from pipeline.sources.xml import PageData
from pipeline.store import Corpus
from pipeline.store.summary import ImportedDocument, ImportSummary
from pipeline.store.writer import CorpusWriter
from pipeline.vips import image_size

log = logging.getLogger("pipeline")

#: images larger than this many pixels are refused (checked from the header, nothing decoded)
DEFAULT_MAX_PIXELS = 500_000_000


class ImageTooLarge(SourceError):
    """An image whose header announces more pixels than allowed (a decompression bomb, or a mistake)."""


async def import_paths(
    paths: Sequence[Path],
    corpus: Corpus,
    *,
    document: str | None = None,
    layer: str | None = None,
    link: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImportSummary:
    """Import each folder or zip as one document, each in its own transaction.

    ``document`` names the document (one path only; default: the folder or zip name); ``layer``
    names the layer (default as eScriptorium: ``METS Import``, ``Default ALTO Import`` or
    ``Default PAGE Import``). ``link`` stores the images' absolute paths instead of copying them.
    """
    if document is not None and len(paths) > 1:
        raise UsageError("--document names one document: give one path, or leave it out")
    if max_pixels < 1:
        raise UsageError(f"--max-pixels: {max_pixels} is not a positive number of pixels")
    summary = ImportSummary()
    for path in paths:
        with open_bundle(Path(path)) as bundle:
            if link and bundle.is_zip:
                raise UsageError(f"{path}: --link needs a folder; images inside a zip must be copied")
            job = _DocumentImport(corpus, bundle, document or bundle.name,
                                  layer or DEFAULT_LAYERS[bundle.kind], link, max_pixels, summary.warnings)
            summary.documents.append(await anyio.to_thread.run_sync(job.run))
    return summary


class _DocumentImport:
    """One bundle into one document, in one transaction (run on a worker thread)."""

    def __init__(
        self, corpus: Corpus, bundle: Bundle | ManifestBundle, name: str, layer: str, link: bool,
        max_pixels: int,        warnings: list[str],
    ) -> None:
        self.corpus, self.bundle, self.name, self.layer = corpus, bundle, name, layer
        self.link, self.max_pixels, self.warnings = link, max_pixels, warnings
        self.copied: list[Path] = []
        self.lines = 0

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("%s", message)

    def run(self) -> ImportedDocument:
        media = None
        try:
            with self.corpus.transaction() as writer:
                doc_id = writer.add_document(self.name)
                for key, value in self.bundle.metadata:
                    writer.add_metadata(doc_id, key, value)
                layer_id = writer.add_layer(doc_id, self.layer)
                media = self.corpus.media_root / "documents" / str(doc_id)
                block_types: set[int] = set()
                line_types: set[int] = set()
                for page in self.bundle.pages:
                    data = self.bundle.read(page)
                    blocks, lines = data.used_types()
                    block_types.update(writer.add_block_type(n) for n in blocks)
                    line_types.update(writer.add_line_type(n) for n in lines)
                    self._part(writer, doc_id, layer_id, media, page, data)
                writer.set_valid_types(doc_id, sorted(block_types), sorted(line_types))
        except BaseException:
            self._undo_copies(media)
            raise
        return ImportedDocument(doc_id, self.name, self.layer, len(self.bundle.pages), self.lines)

    def _part(
        self, writer: CorpusWriter, doc_id: int, layer_id: int, media: Path, page: PageFile | CanvasPage,
        data: PageData,
    ) -> None:
        image, size = self._image(media, page, data)
        part_id = writer.add_part(
            doc_id, page.order, image, name=data.title, original_filename=PurePosixPath(image).name,
            source=data.source,
            width=size[0], height=size[1], created_at=data.created_at, updated_at=data.updated_at,
        )
        blocks: dict[int, int] = {}
        for region in data.blocks():
            blocks[region.key] = writer.add_block(
                part_id, region.order, region.box or (), writer.add_block_type(region.type) if region.type
                else None, region.external_id,
            )
        texts = []
        for line in data.lines:
            line_id = writer.add_line(
                part_id, line.order, line.baseline, line.mask,
                blocks[line.region] if line.region is not None else None,
                writer.add_line_type(line.type) if line.type else None, line.external_id,
            )
            texts.append((line_id, layer_id, line.text, line.confidence))
        writer.add_texts(texts)
        self.lines += len(texts)

    def _image(self, media: Path, page: PageFile | CanvasPage, data: PageData) -> tuple[str, tuple[int, int]]:
        """The stored image path and the page size: from the image header, else from the XML."""
        where = self.bundle.describe(page)
        member = self.bundle.image_of(page, data)
        xml_size = (data.width, data.height)
        if member is None:
            described = "the manifest" if data.format == "iiif" else "the XML"
            if not all(xml_size):
                raise SourceError(f"{where}: no image found and {described} gives no page size")
            self.warn(f"{where}: image {data.image_filename or '(unnamed)'} not found; size from {described}")
            stored = data.image_filename or PurePosixPath(page.xml).with_suffix(".jpg").name
            return f"documents/{media.name}/{PurePosixPath(stored).name}", xml_size
        source = self.bundle.local_path(member)
        if source is not None:  # check before copying anything
            self._check_pixels(where, member, image_size(source))
        if self.link:
            assert source is not None
            path, image = source.resolve(), str(source.resolve())
        else:
            path = self.bundle.extract(member, media)
            self.copied.append(path)
            image = path.relative_to(self.corpus.media_root).as_posix()
        size = image_size(path)
        self._check_pixels(where, member, size)
        if all(xml_size) and size != xml_size:
            self.warn(f"{where}: image {member} is {size[0]}x{size[1]}, the XML says "
                      f"{xml_size[0]}x{xml_size[1]}; keeping the image's size")
        return image, size

    def _check_pixels(self, where: str, member: str, size: tuple[int, int]) -> None:
        if size[0] * size[1] > self.max_pixels:
            raise ImageTooLarge(f"{where}: image {member} is {size[0]}x{size[1]} = {size[0] * size[1]:,} "
                                f"pixels, over the limit of {self.max_pixels:,} (--max-pixels)")

    def _undo_copies(self, media: Path | None) -> None:
        """Remove the images copied for a document that was rolled back."""
        for path in self.copied:
            path.unlink(missing_ok=True)
        if media is not None and media.is_dir() and not any(p.is_file() for p in media.rglob("*")):
            shutil.rmtree(media, ignore_errors=True)
