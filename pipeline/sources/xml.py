"""Incremental readers of ALTO (v2–v4) and PAGE (2013, 2019) pages from eScriptorium, Transkribus, ….

Files come from other people's machines, so they are parsed with ``etree.iterparse`` and the secure
options of :mod:`pipeline.validate` (no entity expansion, no DTD, no network, no huge trees); a
document whose DTD declares entities is refused outright. Each line's subtree is read when it ends
and then dropped, so the tree never holds more than the current line: a page costs its parsed
values only (:class:`PageData`), whatever the file size. Elements are matched by local name, so
every ALTO and PAGE namespace version (and none) is read the same way.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO

from lxml import etree

from pipeline import ns
from pipeline.errors import SourceError
from pipeline.model import Polygon, bbox
from pipeline.validate import PARSER_OPTIONS, syntax_message

log = logging.getLogger("pipeline")

#: block ids eScriptorium writes for the region of orphan lines: its lines get no block
DUMMY_PREFIX = ns.DUMMY_BLOCK
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
#: the largest page width or height believed (libvips' own limit on an image side)
MAX_PAGE_SIZE = 10_000_000
_UNICODE_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")
#: ALTO OtherTag ID prefixes / DESCRIPTION words that say whether a tag is a block or a line type
_TAG_KINDS = {"BT": "block", "LT": "line", "block": "block", "line": "line"}


class XmlError(SourceError):
    """A page file that is not well-formed, not ALTO/PAGE, or holds unusable values."""


@dataclass(slots=True)
class PageRegion:
    """A region as read: ``key`` is its position in the file; ``order`` is set once the page ends."""

    key: int
    external_id: str | None
    type: str | None
    box: Polygon | None
    dummy: bool = False
    rank: float = float("inf")
    order: int = 0


@dataclass(slots=True)
class PageLine:
    """A line as read; ``region`` is the key of its enclosing region, None for an orphan line."""

    key: int
    region: int | None
    external_id: str | None
    type: str | None
    baseline: Polygon | None
    mask: Polygon | None
    text: str
    confidence: float | None
    rank: float = float("inf")
    order: int = 0


@dataclass(slots=True)
class PageData:
    """One parsed page file: what a Part needs, with types as names (ids are the store's business)."""

    name: str
    format: str
    image_filename: str = ""
    #: the page's own name, where the format has one (a IIIF canvas label)
    title: str = ""
    width: int = 0
    height: int = 0
    source: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    regions: list[PageRegion] = field(default_factory=list)
    lines: list[PageLine] = field(default_factory=list)
    #: types declared by the file (ALTO Tags) whether used or not
    block_types: set[str] = field(default_factory=set)
    line_types: set[str] = field(default_factory=set)

    def blocks(self) -> Iterator[PageRegion]:
        """Real regions (the orphan dummy region is not one), by order."""
        return (r for r in sorted(self.regions, key=_by_order) if not r.dummy)

    def used_types(self) -> tuple[set[str], set[str]]:
        """Block and line type names declared or used on the page."""
        blocks = self.block_types | {r.type for r in self.regions if r.type and not r.dummy}
        return blocks, self.line_types | {li.type for li in self.lines if li.type}


def _by_order(item: PageRegion | PageLine) -> int:
    return item.order


# --- small value parsers --------------------------------------------------------------------------


def points(text: str | None, what: str, minimum: int = 1) -> Polygon | None:
    """``x y x y`` or ``x,y x,y`` (Transkribus writes commas in ALTO too) → points; None if absent."""
    if not text or not text.strip():
        return None
    values = [_number(v) for v in _NUMBER.findall(text)]
    if len(values) % 2 or len(values) < 2 * minimum:
        raise ValueError(f"{what}: {text[:60]!r} is not a list of x,y points")
    return tuple(zip(values[::2], values[1::2], strict=True))


def _number(text: str) -> float:
    value = _finite(float(text), text)
    return int(value) if value.is_integer() else value


def _float(text: str | None) -> float | None:
    return None if text is None or not text.strip() else _finite(float(text.replace(",", ".")), text)


def _finite(value: float, text: str) -> float:
    """``inf`` and ``nan`` (``HEIGHT="Infinity"``, ``1e999``) are no coordinates: ValueError."""
    if not math.isfinite(value):
        raise ValueError(f"{text[:60]!r} is not a finite number")
    return value


def _size(text: str | None, what: str) -> int:
    """A page width or height in pixels: 0 when absent, ValueError when no image could be that big."""
    value = round(_float(text) or 0)
    if not 0 <= value <= MAX_PAGE_SIZE:
        raise ValueError(f"{what} {text[:60]!r} is not a page size (0 to {MAX_PAGE_SIZE:,} pixels)")
    return value


def rectangle(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def custom(text: str | None) -> dict[str, dict[str, str]]:
    """PAGE ``custom="structure {type:X;} readingOrder {index:3;}"`` → ``{"structure": {"type": "X"}, …}``.

    A key is the word right before a ``{``, its body runs to the next ``}``. Scanned with ``find``
    (linear time): the attribute comes from other people's files, and a regular expression with
    a word before the brace backtracked quadratically on a megabyte of letters.
    """
    result: dict[str, dict[str, str]] = {}
    text = text or ""
    pos = end = 0
    while (start := text.find("{", pos)) != -1:
        if end <= start and (end := text.find("}", start + 1)) == -1:
            break
        key = _last_word(text, pos, start)
        if not key:  # no word before this brace: a later one may still start an item
            pos = start + 1
            continue
        pairs = (item.split(":", 1) for item in text[start + 1 : end].split(";") if ":" in item)
        result[key] = {k.strip(): _UNICODE_ESCAPE.sub(_unescape, v.strip()) for k, v in pairs}
        pos = end + 1
    return result


def _last_word(text: str, start: int, end: int) -> str:
    """The run of word characters that ends ``text[start:end]`` (before trailing whitespace)."""
    stop = end
    while stop > start and text[stop - 1].isspace():
        stop -= 1
    first = stop
    while first > start and (text[first - 1].isalnum() or text[first - 1] == "_"):
        first -= 1
    return text[first:stop]


def _unescape(match: re.Match[str]) -> str:
    """Transkribus writes ``\\u0020`` for a space inside a custom value."""
    return chr(int(match[1], 16))


def local_name(tag: object) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _timestamp(text: str | None, name: str) -> datetime | None:
    if not text or not text.strip():
        return None
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        log.warning("%s: timestamp %r not understood, ignored", name, text.strip())
        return None


def _children(el: etree._Element) -> Iterator[tuple[str, etree._Element]]:
    return ((local_name(child.tag), child) for child in el)


def _drop(el: etree._Element) -> None:
    """Free a processed element and the already-processed siblings before it."""
    el.clear(keep_tail=False)
    parent = el.getparent()
    if parent is not None:
        while el.getprevious() is not None:
            del parent[0]


# --- the readers ----------------------------------------------------------------------------------


class _Reader:
    """State of one page while its file streams by; subclasses map element ends to handlers."""

    format = ""
    start_handlers: dict[str, Callable[[_Reader, etree._Element], None]] = {}
    end_handlers: dict[str, Callable[[_Reader, etree._Element], None]] = {}

    def __init__(self, name: str) -> None:
        self.page = PageData(name, self.format)
        self.stack: list[PageRegion] = []

    def open_region(self, external_id: str | None, type_: str | None, box: Polygon | None) -> PageRegion:
        region = PageRegion(len(self.page.regions), external_id, type_, box,
                            dummy=bool(external_id and external_id.startswith(DUMMY_PREFIX)))
        self.page.regions.append(region)
        self.stack.append(region)
        return region

    def add_line(
        self, el: etree._Element, type_: str | None, baseline: Polygon | None, mask: Polygon | None,
        text: str, confidence: float | None,
    ) -> PageLine:
        """A line of the innermost open region (none for the orphans' dummy region)."""
        region = self.stack[-1] if self.stack else None
        line = PageLine(len(self.page.lines), None if region is None or region.dummy else region.key,
                        el.get("ID") or el.get("id"), type_, baseline, mask, text, confidence)
        self.page.lines.append(line)
        return line

    def finish(self) -> PageData:
        """Fill region boxes from their lines (or the page), then number regions and lines."""
        page = self.page
        lines_of: dict[int, list[PageLine]] = {}
        for line in page.lines:
            lines_of.setdefault(line.region if line.region is not None else -1, []).append(line)
        for region in page.regions:
            if region.box is None and not region.dummy:
                geometry = [p for li in lines_of.get(region.key, ()) for p in (li.mask or li.baseline or ())]
                box = bbox(tuple(geometry)) or (0, 0, page.width, page.height)
                region.box = rectangle(*box)
        ranked = sorted(page.regions, key=lambda r: (r.rank, r.key))
        for order, region in enumerate(ranked):
            region.order = order
        # line order runs across the page: by region, then reading order within it; orphan lines
        # sit where their dummy region is, or after every region
        position = {r.key: r.order for r in page.regions}
        orphans = next((r.order for r in page.regions if r.dummy), len(page.regions))
        for order, line in enumerate(sorted(page.lines, key=lambda li: (
            orphans if li.region is None else position[li.region], li.rank, li.key,
        ))):
            line.order = order
        return page


class AltoReader(_Reader):
    """ALTO: types from ``Tags`` + ``TAGREFS``, one line text from its ``String`` CONTENTs joined."""

    format = "alto"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.tags: dict[str, str] = {}

    def on_tags(self, el: etree._Element) -> None:
        for _, tag in _children(el):
            tag_id, label = tag.get("ID"), tag.get("LABEL")
            if not tag_id or not label:
                continue
            self.tags[tag_id] = label
            kind = _TAG_KINDS.get(tag_id[:2]) or _TAG_KINDS.get((tag.get("DESCRIPTION") or "").split(" ")[0])
            if kind:
                (self.page.block_types if kind == "block" else self.page.line_types).add(label)
        _drop(el)

    def type_of(self, el: etree._Element) -> str | None:
        refs = (el.get("TAGREFS") or "").split()
        return next((self.tags[r] for r in refs if r in self.tags), None)

    def on_file_name(self, el: etree._Element) -> None:
        self.page.image_filename = (el.text or "").strip()

    def on_file_identifier(self, el: etree._Element) -> None:
        self.page.source = (el.text or "").strip()

    def on_page(self, el: etree._Element) -> None:
        self.page.width = _size(el.get("WIDTH"), "WIDTH")
        self.page.height = _size(el.get("HEIGHT"), "HEIGHT")

    def on_block_start(self, el: etree._Element) -> None:
        self.open_region(el.get("ID"), self.type_of(el), _alto_box(el))

    def on_block_end(self, el: etree._Element) -> None:
        self.stack.pop()
        _drop(el)

    def on_polygon(self, el: etree._Element) -> None:
        """A block's Shape polygon: better than its box (a line's is read with the line)."""
        shape = el.getparent()
        owner = shape.getparent() if shape is not None else None
        if owner is not None and local_name(owner.tag) == "TextBlock" and self.stack:
            self.stack[-1].box = points(el.get("POINTS"), f"block {owner.get('ID')}", 3) or self.stack[-1].box

    def on_line(self, el: etree._Element) -> None:
        what = f"line {el.get('ID')}"
        mask = None
        words: list[str] = []
        confidences: list[float] = []
        for kind, child in _children(el):
            if kind == "Shape":
                polygon = next(iter(child), None)
                mask = points(polygon.get("POINTS"), what, 3) if polygon is not None else None
            elif kind == "String":
                words.append(child.get("CONTENT") or "")
                if (wc := _float(child.get("WC"))) is not None:
                    confidences.append(wc)
            elif kind == "HYP":
                words[-1:] = [(words[-1] if words else "") + (child.get("CONTENT") or "")]
        baseline = _alto_baseline(el, what)
        if mask is None and baseline is None:  # ALTO v2/v3 lines: only a box
            mask = _alto_box(el)
        self.add_line(el, self.type_of(el), baseline, mask, " ".join(words),
                      sum(confidences) / len(confidences) if confidences else None)
        _drop(el)

    start_handlers = {"TextBlock": on_block_start, "Page": on_page}
    end_handlers = {
        "Tags": on_tags, "fileName": on_file_name, "fileIdentifier": on_file_identifier,
        "TextBlock": on_block_end, "Polygon": on_polygon, "TextLine": on_line,
    }


def _alto_box(el: etree._Element) -> Polygon | None:
    values = [_float(el.get(k)) for k in ("HPOS", "VPOS", "WIDTH", "HEIGHT")]
    if any(v is None for v in values):
        return None
    x, y, w, h = (_number(str(v)) for v in values)
    return rectangle(x, y, x + w, y + h)


def _alto_baseline(el: etree._Element, what: str) -> Polygon | None:
    """ALTO 4.2+ polyline; ALTO ≤ 4.1 gives one y value: a horizontal line across the line box."""
    text = el.get("BASELINE")
    values = _NUMBER.findall(text or "")
    if len(values) == 1:
        x, w = _float(el.get("HPOS")), _float(el.get("WIDTH"))
        y = _number(values[0])
        return ((_number(str(x)), y), (_number(str(x + w)), y)) if x is not None and w is not None else None
    return points(text, what, 2)


class PageReader(_Reader):
    """PAGE: types from ``custom`` structure (else region ``@type``), order from ReadingOrder / custom."""

    format = "page"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.reading_order: dict[str, int] = {}

    def on_page(self, el: etree._Element) -> None:
        self.page.image_filename = el.get("imageFilename") or ""
        self.page.width = _size(el.get("imageWidth"), "imageWidth")
        self.page.height = _size(el.get("imageHeight"), "imageHeight")

    def on_metadata(self, el: etree._Element) -> None:
        """Created/LastChange and externalRef; anything else (TranskribusMetadata) is ignored."""
        self.page.source = el.get("externalRef") or ""
        for kind, child in _children(el):
            if kind == "Created":
                self.page.created_at = _timestamp(child.text, self.page.name)
            elif kind == "LastChange":
                self.page.updated_at = _timestamp(child.text, self.page.name)
        _drop(el)

    def on_reading_order(self, el: etree._Element) -> None:
        """Flatten the (possibly nested) groups into one region sequence, by ``index`` within a group."""
        def walk(group: etree._Element) -> Iterator[str]:
            members = sorted(enumerate(group), key=lambda m: (_float(m[1].get("index")) or 0, m[0]))
            for _, member in members:
                if ref := member.get("regionRef"):
                    yield ref
                yield from walk(member)
        self.reading_order = {ref: n for n, ref in enumerate(dict.fromkeys(walk(el)))}
        _drop(el)

    def on_region_start(self, el: etree._Element) -> None:
        attrs = custom(el.get("custom"))
        type_ = attrs.get("structure", {}).get("type") or el.get("type")
        region = self.open_region(el.get("id"), type_, None)
        index = attrs.get("readingOrder", {}).get("index")
        region.rank = self.reading_order.get(el.get("id") or "", _float(index) if index else float("inf"))

    def on_region_end(self, el: etree._Element) -> None:
        self.stack.pop()
        _drop(el)

    def on_coords(self, el: etree._Element) -> None:
        """A region's Coords (a line's are read with the line)."""
        owner = el.getparent()
        if owner is not None and local_name(owner.tag) == "TextRegion" and self.stack:
            self.stack[-1].box = points(_page_points(el), f"region {owner.get('id')}", 2)

    def on_line(self, el: etree._Element) -> None:
        what = f"line {el.get('id')}"
        mask = baseline = None
        text: str | None = None
        confidence = None
        words: list[str] = []
        for kind, child in _children(el):
            if kind == "Coords":
                mask = points(_page_points(child), what, 2)
            elif kind == "Baseline":
                baseline = points(_page_points(child), what, 2)
            elif kind == "TextEquiv" and text is None:  # the first (preferred) one
                text, confidence = _text_equiv(child)
            elif kind == "Word":  # used only when the line has no TextEquiv of its own
                equiv = next((c for k, c in _children(child) if k == "TextEquiv"), None)
                if equiv is not None:
                    words.append(_text_equiv(equiv)[0])
        attrs = custom(el.get("custom"))
        index = attrs.get("readingOrder", {}).get("index")
        line = self.add_line(el, attrs.get("structure", {}).get("type"), baseline, mask,
                             text if text is not None else " ".join(words), confidence)
        line.rank = _float(index) if index else float("inf")
        _drop(el)

    start_handlers = {"Page": on_page, "TextRegion": on_region_start}
    end_handlers = {
        "Metadata": on_metadata, "ReadingOrder": on_reading_order, "TextRegion": on_region_end,
        "Coords": on_coords, "TextLine": on_line,
    }


def _page_points(el: etree._Element) -> str | None:
    """``points`` attribute (2010+), or PAGE 2009-style ``Point`` children."""
    if (text := el.get("points")) is not None:
        return text
    return " ".join(f"{p.get('x')},{p.get('y')}" for p in el if local_name(p.tag) == "Point") or None


def _text_equiv(el: etree._Element) -> tuple[str, float | None]:
    unicode = next((c for kind, c in _children(el) if kind == "Unicode"), None)
    return (unicode.text or "") if unicode is not None else "", _float(el.get("conf"))


#: root element local name -> reader
READERS: dict[str, type[_Reader]] = {"alto": AltoReader, "PcGts": PageReader}


def root_kind(stream: IO[bytes], name: str) -> str:
    """``"alto"``, ``"page"`` or ``"mets"`` from the root element, reading no further than it."""
    for _, el in iterparse_secure(stream, name, ("start",)):
        local = local_name(el.tag)
        return {"alto": "alto", "PcGts": "page", "mets": "mets"}.get(local, local)
    return ""


def read_page(stream: IO[bytes], name: str) -> PageData:
    """Parse one ALTO or PAGE file; XmlError with the file name and line when it is unusable."""
    reader: _Reader | None = None
    for event, el in iterparse_secure(stream, name, ("start", "end")):
        if reader is None:
            kind = READERS.get(local_name(el.tag))
            if kind is None:
                root = local_name(el.tag)
                raise XmlError(f"{name}: line {el.sourceline}: root <{root}> is neither ALTO nor PAGE")
            reader = kind(name)
        handlers = reader.start_handlers if event == "start" else reader.end_handlers
        handler = handlers.get(local_name(el.tag))
        if handler is not None:
            try:
                handler(reader, el)
            except ValueError as exc:
                raise XmlError(f"{name}: line {el.sourceline}: {exc}") from None
    if reader is None:
        raise XmlError(f"{name}: empty file")
    return reader.finish()


def iterparse_secure(
    stream: IO[bytes], name: str, events: tuple[str, ...]
) -> Iterator[tuple[str, etree._Element]]:
    """Secure incremental parse; syntax errors and entity declarations become XmlError."""
    context = etree.iterparse(stream, events=events, remove_comments=True, remove_pis=True, **PARSER_OPTIONS)
    checked = False
    try:
        for event, el in context:
            if not checked:
                checked = True
                dtd = el.getroottree().docinfo.internalDTD
                if dtd is not None and any(True for _ in dtd.iterentities()):
                    raise XmlError(f"{name}: line 1: DTD declares entities; refused (XXE / entity expansion)")
            yield event, el
    except etree.XMLSyntaxError as exc:
        raise XmlError(f"{name}: line {exc.lineno}: not well-formed XML: {syntax_message(exc)}") from None
