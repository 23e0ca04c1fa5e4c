"""A folder or zip of ALTO/PAGE files with their images (and maybe ``METS.xml``), as one document.

:class:`Bundle` lists the pages (names only) and pairs each XML file with its image: METS decides
order and pairing when present; otherwise XML files are sorted naturally (``2`` before ``10``) and
paired with the image their XML names, else the image with the same base name. Zips are read
through :class:`~pipeline.safezip.SafeZip` (checked names, bounded sizes).

:class:`XmlSource` turns a bundle into the export ``Source``: a first streaming pass collects the
types for the ``Document``, then parts are parsed one at a time as the export pulls them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, TYPE_CHECKING

import anyio.to_thread

from pipeline import ns
from pipeline.errors import SourceError, UsageError
from pipeline.model import Document, Layer, Line, Part, Region, Selection, Typology
from pipeline.safezip import Limits, SafeZip, refuse_special
from pipeline.sources.mets import read_mets

if TYPE_CHECKING:
    from pipeline.sources.iiif import ManifestBundle
from pipeline.sources.xml import PageData, XmlError, read_page, root_kind
from pipeline.vips import image_size, stream_image_size

IMAGE_SUFFIXES = ns.IMAGE_SUFFIXES
_METS = ns.METS_NAME.lower()
DEFAULT_LIMITS = Limits()
#: eScriptorium's default layer name of an import, by what described the pages (spec 1.2)
DEFAULT_LAYERS = {"mets": "METS Import", "alto": "Default ALTO Import", "page": "Default PAGE Import",
                  "iiif": "IIIF Import"}
#: members never taken for pages (macOS resource forks, thumbnails caches)
_IGNORED = re.compile(r"(^|/)(__MACOSX/|\.DS_Store$|Thumbs\.db$|\._)")


def natural_key(name: str) -> list[int | str]:
    """Sort key that puts ``page2`` before ``page10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class _Folder:
    """Members of a folder: every file below it, by relative POSIX path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def members(self) -> list[str]:
        return [p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()]

    def open(self, name: str) -> AbstractContextManager[IO[bytes]]:
        return (self.path / name).open("rb")

    def local_path(self, name: str) -> Path | None:
        return self.path / name

    def extract(self, name: str, dest_dir: Path) -> Path:
        target = dest_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(self.path / name, target)
        except BaseException:  # a copy that fails part-way (disk full) leaves nothing
            target.unlink(missing_ok=True)
            raise
        return target

    def close(self) -> None:
        """Nothing to release."""


class _Zip(SafeZip):
    """Members of a zip; nothing is on disk until extracted."""

    def local_path(self, name: str) -> Path | None:
        return None


@dataclass(frozen=True, slots=True)
class PageFile:
    """One page of a bundle: its XML member and, if METS or the file names said so, its image."""

    order: int
    xml: str
    image: str | None


class Bundle:
    """An export on disk (folder or zip): its pages in order, paired with their images."""

    #: document metadata the bundle carries (ALTO/PAGE files have none)
    metadata: tuple[tuple[str, str], ...] = ()

    def __init__(self, path: Path, limits: Limits = DEFAULT_LIMITS) -> None:
        refuse_special(path)
        self.path = path
        self.is_zip = not path.is_dir()
        self._store: _Folder | _Zip = _Zip(path, limits) if self.is_zip else _Folder(path)
        members = [m for m in self._store.members() if not _IGNORED.search(m)]
        self._members = set(members)
        self._images: dict[tuple[str, str], str] = {}
        for name in sorted(members, key=natural_key):
            p = PurePosixPath(name)
            if p.suffix.lower() in IMAGE_SUFFIXES:
                self._images.setdefault((str(p.parent), p.stem.lower()), name)
                self._images.setdefault((str(p.parent), p.name.lower()), name)
        mets = sorted((m for m in members if PurePosixPath(m).name.lower() == _METS), key=_depth)
        self.pages, self.kind = self._from_mets(mets[0]) if mets else self._from_names(members)
        if not self.pages:
            raise SourceError(f"{path}: no ALTO or PAGE file found")

    @property
    def name(self) -> str:
        """The document name it gets by default: the folder or zip name without extension."""
        return self.path.stem if self.is_zip else self.path.resolve().name

    def _from_mets(self, mets: str) -> tuple[list[PageFile], str]:
        with self._store.open(mets) as stream:
            entries = read_mets(stream, f"{self.path}: {mets}", IMAGE_SUFFIXES)
        base = PurePosixPath(mets).parent
        pages = []
        for entry in entries:
            if entry.xml is None:
                continue
            xml = self._resolve(base, entry.xml, mets)
            remote = entry.image is None or "://" in entry.image
            image = None if remote else self._resolve(base, entry.image, mets)
            pages.append(PageFile(len(pages), xml, image if image in self._members else None))
        return pages, "mets"

    def _resolve(self, base: PurePosixPath, href: str, mets: str) -> str:
        name = str(base / href) if str(base) != "." else href
        if name not in self._members and href not in self._members:
            raise SourceError(f"{self.path}: {mets} names {href!r}, which is not there")
        return name if name in self._members else href

    def _from_names(self, members: Iterable[str]) -> tuple[list[PageFile], str]:
        xmls = sorted((m for m in members if PurePosixPath(m).suffix.lower() == ".xml"), key=natural_key)
        pages = [PageFile(n, xml, None) for n, xml in enumerate(xmls)]
        kind = "alto"
        if pages:
            with self._store.open(pages[0].xml) as stream:
                kind = root_kind(stream, self.describe(pages[0]))
            if kind not in ("alto", "page"):  # e.g. an undeclared prefix: <x:alto>
                self.read(pages[0])  # raises XmlError naming the root element and its line
        return pages, kind

    def describe(self, page: PageFile) -> str:
        """How messages name a page file: the bundle and the member."""
        return f"{self.path}: {page.xml}"

    def read(self, page: PageFile) -> PageData:
        """Parse one page file (streaming)."""
        with self._store.open(page.xml) as stream:
            return read_page(stream, self.describe(page))

    def image_of(self, page: PageFile, data: PageData) -> str | None:
        """The page's image member: METS's, else the one its XML names, else the same base name."""
        if page.image:
            return page.image
        parent = str(PurePosixPath(page.xml).parent)
        declared = PurePosixPath(data.image_filename.replace("\\", "/")).name.lower()
        return self._images.get((parent, declared)) or self._images.get(
            (parent, PurePosixPath(page.xml).stem.lower())
        )

    def local_path(self, member: str) -> Path | None:
        """Where a member is on disk without copying (folders only)."""
        return self._store.local_path(member)

    def extract(self, member: str, dest_dir: Path) -> Path:
        """Copy a member below ``dest_dir`` (never outside it) and return its path."""
        return self._store.extract(member, dest_dir)

    def extract_temporary(self, member: str, dest_dir: Path) -> Path:
        """Copy a member to a new file of its own in ``dest_dir`` (same suffix): concurrent readers
        of the same member each get their copy, and nobody rewrites a file another is reading."""
        fd, name = tempfile.mkstemp(suffix=PurePosixPath(member).suffix.lower(), dir=dest_dir)
        try:
            with open(fd, "wb") as dst, self._store.open(member) as src:
                shutil.copyfileobj(src, dst, 1 << 20)  # type: ignore[misc]
        except BaseException:
            os.unlink(name)
            raise
        return Path(name)

    def stamp(self, member: str) -> tuple[str, int] | None:
        """What identifies a member's bytes without reading them, and its size: CRC-32, size and
        name in a zip's directory; size and modification time of a folder's file. None if there
        is no such member."""
        if member not in self._members:
            return None
        if self.is_zip:
            info = self._store.info(member)  # type: ignore[union-attr]
            return f"{member}|{info.CRC:08x}|{info.file_size}", info.file_size
        try:
            stat = (self.path / member).stat()
        except OSError:
            return None
        return f"{member}|{stat.st_size}|{stat.st_mtime_ns}", stat.st_size

    def marker(self) -> str:
        """What changes whenever a member is added, removed, renamed or rewritten: every member's
        :meth:`stamp`, from the zip's directory or the file system (no member is read)."""
        digest = hashlib.sha256(f"{self.kind}|{len(self._members)}".encode())
        for member in sorted(self._members):
            stamp = self.stamp(member)
            digest.update(f"\n{stamp[0] if stamp else member + '|gone'}".encode())
        return digest.hexdigest()

    def image_size(self, member: str) -> tuple[int, int]:
        """An image member's width and height from its header, without extracting it."""
        path = self._store.local_path(member)
        if path is not None:
            return image_size(path)
        with self._store.open(member) as stream:
            return stream_image_size(stream, f"{self.path}: {member}")

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _depth(name: str) -> tuple[int, str]:
    return name.count("/"), name


# --- export source ---------------------------------------------------------------------------------


class TypeTable:
    """Type names → ``Typology`` with ids numbered from 1 in first-seen order (one per kind)."""

    def __init__(self) -> None:
        self.by_name: dict[str, Typology] = {}

    def add(self, names: Iterable[str]) -> None:
        for name in sorted(names):
            self.by_name.setdefault(name, Typology(len(self.by_name) + 1, name))

    def get(self, name: str | None) -> Typology | None:
        return self.by_name.get(name) if name else None

    def all(self) -> tuple[Typology, ...]:
        return tuple(self.by_name.values())


def to_part(
    data: PageData, *, part_id: int, document_id: int, order: int, image: str, image_path: str | None,
    size: tuple[int, int], block_types: TypeTable, line_types: TypeTable,
) -> Part:
    """A model part from a parsed page: regions and lines numbered from 1 within the part."""
    region_ids = {r.key: n for n, r in enumerate(data.blocks(), start=1)}
    regions = tuple(
        Region(region_ids[r.key], r.order, r.box or (), block_types.get(r.type), r.external_id)
        for r in data.blocks()
    )
    lines = tuple(
        Line(n, li.order, li.baseline, li.mask, region_ids.get(li.region) if li.region is not None else None,
             line_types.get(li.type), li.external_id, li.text, li.confidence)
        for n, li in enumerate(sorted(data.lines, key=lambda li: li.order), start=1)
    )
    return Part(
        id=part_id, document_id=document_id, order=order, image=image, width=size[0], height=size[1],
        name=data.title, original_filename=PurePosixPath(image).name, source=data.source,
        created_at=data.created_at,
        updated_at=data.updated_at, image_path=image_path, regions=regions, lines=lines,
    )


class XmlSource:
    """Export straight from a folder or zip (``pipeline export --source``): satisfies ``Source``.

    With ``images`` each part's image of a zip is extracted when the part is read, to a file of its
    own (exports of the same source running at once never share one), and deleted as soon as the
    export hands the part back (:meth:`release`): disk use stays at the parts in flight (an export
    that fails leaves its few in-flight images to :meth:`close`). A folder's images are used in
    place. Without ``images`` nothing is extracted; sizes missing from the XML come from the image
    headers.
    """

    DOCUMENT_ID = 1

    def __init__(self, path: Path, *, layer: str = "manual", images: bool = False) -> None:
        self.bundle = open_bundle(path)
        self.layer = layer
        self._tmp = tempfile.TemporaryDirectory(prefix="pipeline-source-") if images and self.bundle.is_zip \
            else None
        self._extracted: set[str] = set()
        self._block_types = TypeTable()
        self._line_types = TypeTable()

    def close(self) -> None:
        self.bundle.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> XmlSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the Source protocol ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return str(self.bundle.path.resolve())

    def display(self) -> str:
        return f"{'zip' if self.bundle.is_zip else 'folder'} {self.bundle.path}"

    def default_registry(self) -> Path | None:
        """Nothing of its own: exports of a folder or zip are recorded where the caller says."""
        return None

    async def part_ids(self, document: Document, pages: Sequence[int]) -> tuple[int, ...]:
        """Part ids are the page numbers; UsageError naming pages past the end."""
        beyond = [p for p in pages if not 1 <= p <= document.part_count]
        if beyond:
            raise UsageError(f"no page {', '.join(map(str, beyond))} in {self.bundle.path}, which has "
                             f"{document.part_count} pages")
        return tuple(pages)

    async def document(self, ref: str | int | None = None) -> Document:
        """The document: name from the path, one layer, the types of a first pass over every page;
        ``ref`` (if given) must be its id or name."""
        if ref is not None:
            return await anext(self.documents(Selection((ref,))))
        await anyio.to_thread.run_sync(self._scan_types)
        blocks, lines = self._block_types.all(), self._line_types.all()
        return Document(
            id=self.DOCUMENT_ID, name=self.bundle.name, valid_block_types=blocks, valid_line_types=lines,
            block_types=blocks, layers=(Layer(1, self.layer),), part_count=len(self.bundle.pages),
            metadata=self.bundle.metadata,
        )

    async def documents(self, selection: Selection | None = None) -> AsyncIterator[Document]:
        """The one document, as a corpus lists its documents (jobs select the same way); a ref that
        is neither its id nor its name is a UsageError."""
        selection = selection or Selection()
        document = await self.document()
        for ref in selection.documents or ():
            if str(ref) not in (str(document.id), document.name):
                raise UsageError(f"{self.bundle.path}: no document {ref!r} (this source holds "
                                 f"{document.id} {document.name!r})")
        if selection.keeps(document):
            yield document

    def _scan_types(self) -> None:
        for page in self.bundle.pages:
            blocks, lines = self.bundle.read(page).used_types()
            self._block_types.add(blocks)
            self._line_types.add(lines)

    async def parts(
        self, document: Document, layer: str = "manual", part_ids: Sequence[int] | None = None
    ) -> AsyncIterator[Part]:
        """Parts in bundle order (ids are 1-based page numbers), parsed as they are pulled."""
        wanted = set(part_ids) if part_ids else None
        for page in self.bundle.pages:
            if wanted is None or page.order + 1 in wanted:
                yield await anyio.to_thread.run_sync(self._part, page, document)

    def release(self, part: Part) -> None:
        """The export is done with the part (its image is in the archive): delete its extracted image."""
        if part.image_path is not None:
            self._delete(part.image_path)

    def _delete(self, path: str) -> None:
        if path in self._extracted:
            self._extracted.discard(path)
            Path(path).unlink(missing_ok=True)

    def image_stamp(self, part: Part) -> tuple[str, int] | None:
        """What identifies the part's image bytes (zip CRC/size, file size/mtime) and its size, read
        from the zip's directory or the file system only: planning reads no image."""
        return self.bundle.stamp(part.image)

    async def change_marker(self, document: Document, layer: str | None = None) -> str:
        """Every member's name with its CRC-32 and size (zip) or size and modification time (folder),
        and the layer name: an edited page, a replaced image, a page added or removed changes it."""
        stamp = await anyio.to_thread.run_sync(self.bundle.marker)
        return f"{self.layer}|{stamp}"

    def _part(self, page: PageFile, document: Document) -> Part:
        data = self.bundle.read(page)
        member = self.bundle.image_of(page, data)
        path = None
        size = (data.width, data.height)
        if member is not None:
            if not data.width or not data.height:
                size = self.bundle.image_size(member)
            path = self.bundle.local_path(member)
            if path is None and self._tmp is not None:
                path = self.bundle.extract_temporary(member, Path(self._tmp.name))
                self._extracted.add(str(path))
        if not size[0] or not size[1]:
            raise XmlError(f"{self.bundle.describe(page)}: no page size and no image to read it from")
        return to_part(
            data, part_id=page.order + 1, document_id=document.id, order=page.order,
            image=member or data.image_filename or PurePosixPath(page.xml).with_suffix(".jpg").name,
            image_path=str(path) if path else None, size=size,
            block_types=self._block_types, line_types=self._line_types,
        )


def open_bundle(path: Path) -> Bundle | ManifestBundle:
    """The pages of a folder or zip of ALTO/PAGE, or of a IIIF manifest (a ``.json`` file, or a
    folder or zip with ``manifest.json``)."""
    from pipeline.sources.iiif import ManifestBundle, is_manifest

    return ManifestBundle(path) if path.exists() and is_manifest(path) else Bundle(path)
