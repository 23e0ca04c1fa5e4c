"""An IIIF Presentation 3 manifest (``manifest.json``, alone, in a folder or in a zip) as one document.

Reads what ``--format iiif`` writes, and the common shapes of other producers: a canvas per page
(label, size, the painting annotation's image), and per canvas ``supplementing`` annotations
with a ``TextualBody``: ``textGranularity`` ``block`` ones become regions (their ``classifying``
body the type), the others lines (``partOf`` names their region; the SVG selector's ``polygon``
is the mask and its ``polyline`` the baseline, else an ``xywh`` fragment gives a rectangle).
Ids are the last segment of the annotation ids. :class:`ManifestBundle` offers what the importer
and the direct-export source ask of a bundle of page files, so both take manifests as they are.

The manifest is parsed whole (``json``): a document's manifest is held in memory while it is
imported, unlike ALTO/PAGE files, which are read one page at a time.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from lxml import etree

from pipeline.errors import UsageError
from pipeline.formats.iiif import is_provenance
from pipeline.model import Polygon
from pipeline.safezip import Limits, SafeZip
from pipeline.sources.xml import PageData, PageLine, PageRegion, XmlError, rectangle

MANIFEST_NAME = "manifest.json"
DEFAULT_LIMITS = Limits()
_XYWH = re.compile(r"xywh=(?:pixel:)?(\d+(?:\.\d+)?),(\d+(?:\.\d+)?),(\d+(?:\.\d+)?),(\d+(?:\.\d+)?)$")
_TEXT_MOTIVATIONS = ("supplementing", "commenting")
_SVG_PARSER = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True)


class ManifestError(XmlError):
    """A manifest that is not JSON, not a IIIF Presentation 3 manifest, or holds unusable values."""


def is_manifest(path: Path) -> bool:
    """A ``.json`` file, or a folder or zip holding ``manifest.json`` at its top."""
    if path.is_file() and path.suffix.lower() == ".json":
        return True
    if path.is_dir():
        return (path / MANIFEST_NAME).is_file()
    import zipfile

    try:  # a damaged zip is not a manifest: the ALTO/PAGE source opening it says what is wrong
        with zipfile.ZipFile(path) as zf:
            return MANIFEST_NAME in zf.namelist()
    except (zipfile.BadZipFile, UnicodeDecodeError, OSError, EOFError, ValueError, NotImplementedError):
        return False


@dataclass(frozen=True, slots=True)
class CanvasPage:
    """One page of a manifest: its position and, when the archive holds it, its image member."""

    order: int
    xml: str  #: how messages name it (the bundle protocol's page file name)
    image: str | None


class ManifestBundle:
    """A manifest and the images beside it, in the shape of :class:`~pipeline.sources.folder.Bundle`."""

    kind = "iiif"

    def __init__(self, path: Path, limits: Limits = DEFAULT_LIMITS) -> None:
        if not path.exists():
            raise UsageError(f"{path}: no such file or folder")
        self.path = path
        self.is_zip = path.is_file() and path.suffix.lower() != ".json"
        self._zip = SafeZip(path, limits) if self.is_zip else None
        folder = path if path.is_dir() else path.parent
        self._folder = None if self.is_zip else folder
        manifest_name = path.name if path.is_file() and not self.is_zip else MANIFEST_NAME
        self._where = f"{path}" if not path.is_dir() else f"{path / MANIFEST_NAME}"
        try:
            if self._zip is not None:
                with self._zip.open(MANIFEST_NAME) as fh:
                    data = json.load(fh)
            else:
                with (folder / manifest_name).open("rb") as fh:
                    data = json.load(fh)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{self._where}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("type") != "Manifest":
            raise ManifestError(f"{self._where}: not a IIIF Presentation 3 manifest (type is not Manifest)")
        manifest_id = str(data.get("id") or "")
        self._base = manifest_id.rsplit("/", 1)[0] + "/" if "/" in manifest_id else ""
        self.label = _text(data.get("label")) or (path.stem if path.suffix else path.name)
        # the provenance entries an export of ours adds say who made THAT manifest: not the
        # document's metadata, and a re-export says anew who made it
        self.metadata = tuple(
            (_text(item.get("label")), _text(item.get("value")))
            for item in data.get("metadata") or () if isinstance(item, dict) and not is_provenance(item)
        )
        items = data.get("items") or ()
        self._canvases = [c for c in items if isinstance(c, dict) and c.get("type") == "Canvas"]
        members = set(self._zip.members()) if self._zip is not None else None
        self.pages = []
        for n, item in enumerate(self._canvases):
            member = self._member(_image_id(item), members)
            self.pages.append(CanvasPage(n, f"{MANIFEST_NAME}#canvas {n + 1}", member))
        if not self.pages:
            raise ManifestError(f"{self._where}: the manifest has no canvas")

    @property
    def name(self) -> str:
        """The document name: the manifest's label."""
        return self.label

    def _member(self, image_id: str | None, members: set[str] | None) -> str | None:
        """The image's path in the archive or folder when the body id points below the manifest."""
        if not image_id or not self._base or not image_id.startswith(self._base):
            return None
        relative = unquote(image_id[len(self._base):])
        if members is not None:
            return relative if relative in members else None
        assert self._folder is not None
        candidate = PurePosixPath(relative)
        if candidate.is_absolute() or ".." in candidate.parts:
            return None
        return relative if (self._folder / relative).is_file() else None

    def describe(self, page: CanvasPage) -> str:
        return f"{self._where}: canvas {page.order + 1}"

    def read(self, page: CanvasPage) -> PageData:
        """The canvas as a parsed page: size, image name, regions and lines in order."""
        return _read_canvas(self._canvases[page.order], self.describe(page), self._base)

    def image_of(self, page: CanvasPage, data: PageData) -> str | None:
        return page.image

    def local_path(self, member: str) -> Path | None:
        return None if self._folder is None else self._folder / member

    def extract(self, member: str, dest_dir: Path) -> Path:
        if self._zip is not None:
            return self._zip.extract(member, dest_dir)
        import shutil

        assert self._folder is not None
        target = dest_dir / member
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._folder / member, target)
        return target

    def marker(self) -> str:
        """What changes whenever the manifest or an image beside it does: the zip's directory
        (names, CRC-32s, sizes), or the names, sizes and modification times of the folder's files
        (or of the manifest file alone); nothing is read."""
        digest = hashlib.sha256(b"iiif")
        if self._zip is not None:
            for name in sorted(self._zip.members()):
                info = self._zip.info(name)
                digest.update(f"\n{name}|{info.CRC:08x}|{info.file_size}".encode())
            return digest.hexdigest()
        files = [self.path] if self.path.is_file() else sorted(p for p in self.path.rglob("*") if p.is_file())
        for file in files:
            stat = file.stat()
            digest.update(f"\n{file.name if file == self.path else file.relative_to(self.path)}|"
                          f"{stat.st_size}|{stat.st_mtime_ns}".encode())
        return digest.hexdigest()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> ManifestBundle:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _text(value: Any) -> str:
    """A IIIF language map's first value (``{"none": ["x"]}`` → ``x``); strings as they are."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for values in value.values():
            if isinstance(values, list) and values:
                return "\n".join(str(v) for v in values)
    return ""


def _image_id(canvas: dict[str, Any]) -> str | None:
    for page in canvas.get("items") or ():
        for annotation in page.get("items") or () if isinstance(page, dict) else ():
            body = annotation.get("body") if isinstance(annotation, dict) else None
            if isinstance(body, dict) and body.get("id"):
                return str(body["id"])
    return None


def _image_name(canvas: dict[str, Any], base: str) -> str:
    """The image's file name: its path below the manifest, else an Image API identifier, else the
    last segment of its URL."""
    image_id = _image_id(canvas)
    if not image_id:
        return ""
    if base and image_id.startswith(base):
        return unquote(image_id[len(base):])
    for page in canvas.get("items") or ():
        for annotation in page.get("items") or ():
            for service in (annotation.get("body") or {}).get("service") or ():
                sid = service.get("id") or service.get("@id")
                if sid:
                    return unquote(str(sid).rstrip("/").rsplit("/", 1)[-1])
    return unquote(urlsplit(image_id).path.rsplit("/", 1)[-1])


def _read_canvas(canvas: dict[str, Any], where: str, base: str) -> PageData:
    try:
        width, height = int(canvas.get("width") or 0), int(canvas.get("height") or 0)
    except (TypeError, ValueError):
        raise ManifestError(f"{where}: width/height are not numbers") from None
    page = PageData(where, "iiif", image_filename=_image_name(canvas, base), width=width, height=height)
    page.title = _text(canvas.get("label"))
    regions: dict[str, PageRegion] = {}
    for annotation in _supplementing(canvas):
        aid = str(annotation.get("id") or "")
        text, kind = _bodies(annotation.get("body"))
        mask, baseline = _shape(annotation.get("target"), where, aid)
        external = unquote(aid.rstrip("/").rsplit("/", 1)[-1]) or None
        if annotation.get("textGranularity") == "block":
            region = PageRegion(len(page.regions), external, kind, mask)
            region.order = region.key
            page.regions.append(region)
            regions[aid] = region
            continue
        parent = next((regions[p.get("id")] for p in annotation.get("partOf") or ()
                       if isinstance(p, dict) and p.get("id") in regions), None)
        line = PageLine(len(page.lines), parent.key if parent else None, external, kind, baseline, mask, text,
                        None)
        line.order = line.key
        page.lines.append(line)
    return page


def _supplementing(canvas: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for page in canvas.get("annotations") or ():
        if not isinstance(page, dict):
            continue
        for annotation in page.get("items") or ():
            if isinstance(annotation, dict) and annotation.get("motivation") in _TEXT_MOTIVATIONS:
                found.append(annotation)
    return found


def _bodies(body: Any) -> tuple[str, str | None]:
    """The text (the first TextualBody without a purpose, or ``transcribing``) and the type."""
    text, kind = "", None
    for item in body if isinstance(body, list) else [body]:
        if not isinstance(item, dict) or item.get("type") != "TextualBody":
            continue
        if item.get("purpose") in ("classifying", "tagging"):
            kind = kind or str(item.get("value") or "") or None
        elif not text:
            text = str(item.get("value") or "")
    return text, kind


def _shape(target: Any, where: str, aid: str) -> tuple[Polygon | None, Polygon | None]:
    """``(mask, baseline)`` of a target: SVG polygon and polyline, else an ``xywh`` rectangle."""
    if isinstance(target, list):
        target = target[0] if target else None
    if isinstance(target, str):
        match = _XYWH.search(target)
        return (_rect(match), None) if match else (None, None)
    if not isinstance(target, dict):
        return None, None
    selectors = target.get("selector") or []
    selectors = selectors if isinstance(selectors, list) else [selectors]
    rect = None
    for selector in selectors:
        if not isinstance(selector, dict):
            continue
        if selector.get("type") == "SvgSelector":
            return _svg(str(selector.get("value") or ""), where, aid)
        if selector.get("type") == "FragmentSelector":
            match = _XYWH.search(str(selector.get("value") or ""))
            rect = _rect(match) if match else rect
    return rect, None


def _rect(match: re.Match[str]) -> Polygon:
    x, y, w, h = (_number(v) for v in match.groups())
    return rectangle(x, y, x + w, y + h)


def _svg(value: str, where: str, aid: str) -> tuple[Polygon | None, Polygon | None]:
    try:
        root = etree.fromstring(value.encode(), _SVG_PARSER)
    except etree.XMLSyntaxError as exc:
        message = f"{where}: annotation {aid}: SVG selector is not well-formed ({exc.msg})"
        raise ManifestError(message) from None
    mask = baseline = None
    for element in root.iter():
        name = etree.QName(element).localname if isinstance(element.tag, str) else ""
        if name == "polygon" and mask is None:
            mask = _points(element.get("points"), where, aid)
        elif name == "polyline" and baseline is None:
            baseline = _points(element.get("points"), where, aid)
    return mask, baseline


def _points(text: str | None, where: str, aid: str) -> Polygon | None:
    numbers = (text or "").replace(",", " ").split()
    if not numbers:
        return None
    if len(numbers) % 2:
        raise ManifestError(f"{where}: annotation {aid}: odd number of coordinates in {text!r}")
    try:
        values = [_number(v) for v in numbers]
    except ValueError:
        raise ManifestError(f"{where}: annotation {aid}: not a point list: {text!r}") from None
    return tuple(zip(values[::2], values[1::2], strict=True))


def _number(text: str) -> float:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value
