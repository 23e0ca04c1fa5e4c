"""The expert.ai exchange archive: ``test/<name>.txt`` + ``ann/<name>.ann`` (spec exchange-archive.md).

Export turns a part (or a whole document) into a text, the chosen layer's lines in XML reading
order joined by LF, and an ``.ann`` of categories (document tags), sections (typed regions) and
extractions (text annotations). Import reads such an archive, or a plain zip of ``.txt``
documents, into the corpus in one transaction. IDs and passthrough lines read from an archive
are kept in part metadata under reserved keys, so exporting an imported document gives the
archive back.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import unicodedata
from bisect import bisect_right
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.from_thread

from pipeline.archive import ZipSink
from pipeline.errors import PipelineError, UsageError
from pipeline.formats.brat import (
    BODY,
    BOM,
    OFFSET_UNITS,
    AnnFile,
    Category,
    Extraction,
    OffsetMap,
    OffsetUnit,
    Section,
    Span,
    decode_utf8,
    parse_ann,
    resolve,
    write_ann,
)
from pipeline.logcontext import where
from pipeline.model import Document, Part
from pipeline.naming import EntryNamer
from pipeline.safezip import Limits, SafeZip, ZipReadError, open_zip
from pipeline.select import RegionFilter, layout
from pipeline.store import Corpus
from pipeline.store.writer import CorpusWriter

if TYPE_CHECKING:
    from pipeline.export import ExportOptions

log = logging.getLogger("pipeline")

Unit = Literal["part", "document"]
UNITS: tuple[Unit, ...] = ("part", "document")
TEXT_DIR, ANN_DIR = "test", "ann"
#: Platform upload limits (spec 6): warnings only. 10^6 rather than 2^20: never miss a warning
MAX_TEXT_BYTES = 1_000_000
MAX_ARCHIVE_BYTES = 200_000_000
#: no member of an imported archive may unpack larger than this (texts are read whole)
MAX_IMPORT_MEMBER = 256 << 20
#: the extraction group of a taxonomy without a typology
DEFAULT_GROUP = "Annotation"
#: part metadata keys holding what an import read and an export must write back
IDS_KEY = "exchange:ids"
PASSTHROUGH_KEY = "exchange:passthrough"
#: a kept brat id: a letter and at most 18 digits (so that int() of it is cheap and bounded)
_KEPT_ID = re.compile(r"[CT][0-9]{1,18}")
_JUNK_NAMES = frozenset({".DS_Store", "Thumbs.db"})
_JUNK_DIRS = frozenset({"__MACOSX"})
#: synthetic geometry of imported lines (pixels): parts have no image, XML exports need boxes
MARGIN, LINE_HEIGHT, CHAR_WIDTH, MAX_LINE_CHARS = 20, 40, 10, 1000


# --- names ------------------------------------------------------------------------------------


def type_component(name: str) -> str:
    """A taxonomy or region type name as a Platform name: ASCII-folded, ``[A-Za-z0-9_]`` only,
    no leading ``_`` (reserved for ``_SECTION``)."""
    ascii_ = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9_]+", "_", ascii_).lstrip("_") or "Unnamed"


def section_name(type_name: str, names: Mapping[str, str]) -> str | None:
    """The section a region type exports as (mapping first, else upper-cased); None for BODY or ``""``."""
    name = names.get(type_name, type_component(type_name).upper())
    return name if name and name != BODY else None


def _entry_stem(namer: EntryNamer, name: str, order: int) -> str:
    """A unique, case-insensitively distinct, file-system-safe stem (same rules as XML entries)."""
    text_name, _ = namer.part_names(name, order, ".txt")
    return PurePosixPath(text_name).stem


# --- export: model -> text and annotations --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeptIds:
    """The brat IDs an import read, by what they became: tag name, annotation id, region id."""

    tags: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    regions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, part: Part) -> KeptIds:
        """The ids kept in the part's metadata; unreadable JSON is ignored with a warning, an id
        that is no brat id (the metadata is editable) is a PipelineError naming the part."""
        meta = dict(part.metadata)
        try:
            data = json.loads(meta.get(IDS_KEY, "{}"))
            kinds = ("tags", "annotations", "regions")
            kept = cls(*({str(a): str(b) for a, b in data.get(kind, {}).items() if b} for kind in kinds))
        except (ValueError, AttributeError, TypeError):
            log.warning("part %s: unreadable %s metadata ignored", part.id, IDS_KEY)
            return cls()
        for letter, ids in (("C", kept.tags), ("T", kept.annotations), ("T", kept.regions)):
            for ident in ids.values():
                if not _KEPT_ID.fullmatch(ident) or ident[0] != letter:
                    raise PipelineError(f"part {part.id} ({part.image_filename}): metadata {IDS_KEY!r}: "
                                        f"{ident[:40]!r} is not a brat id like {letter}12")
        return kept


def passthrough_of(part: Part) -> list[str]:
    """The passthrough lines an import stored for the part."""
    raw = dict(part.metadata).get(PASSTHROUGH_KEY)
    try:
        lines = json.loads(raw) if raw else []
    except ValueError:
        lines = None
    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        log.warning("part %s: unreadable %s metadata ignored", part.id, PASSTHROUGH_KEY)
        return []
    return lines


@dataclass(frozen=True, slots=True)
class PageText:
    """One part as exchange text: the text, its spans (code points into ``text``) and kept state."""

    text: str
    lines: int
    spans: list[Span]
    ids: KeptIds
    passthrough: list[str]


def page_text(part: Part, flt: RegionFilter, section_names: Mapping[str, str]) -> PageText:
    """The part's text (lines with a row in the layer, XML reading order, joined by LF), its typed
    regions as sections and its text annotations as extractions; unmappable annotations are
    skipped with a warning."""
    ids = KeptIds.of(part)
    page = layout(part, flt)
    pieces: list[str] = []
    starts: dict[int, tuple[int, str]] = {}
    spans: list[Span] = []
    position = 0
    groups = [*page.blocks, (None, page.orphans)]
    for region, lines in groups:
        first = position
        for line in lines:
            if line.text is None:
                continue
            starts[line.id] = (position, line.text)
            pieces.append(line.text)
            position += len(line.text) + 1
        name = section_name(region.type.name, section_names) if region and region.type else None
        if name and position - 1 > first:
            spans.append(Section(name, first, position - 1, ids.regions.get(str(region.id))))
    text = "\n".join(pieces)
    for ann in part.annotations:
        start = _position(starts, ann.start_line_id, ann.start_offset)
        end = _position(starts, ann.end_line_id, ann.end_offset)
        value = _one_line(ann.value or (text[start:end] if start is not None and end is not None else ""))
        if start is None or end is None or end <= start or not value:
            log.warning("part %s: text annotation %s (%s) not exported: its lines are not in the text or "
                        "its span is empty", part.id, ann.id, ann.taxonomy.name)
            continue
        group = type_component(ann.taxonomy.typology or DEFAULT_GROUP)
        kept = ids.annotations.get(str(ann.id))
        spans.append(Extraction(group, type_component(ann.taxonomy.name), start, end, value, kept))
    return PageText(text, len(pieces), spans, ids, passthrough_of(part))


def _position(starts: Mapping[int, tuple[int, str]], line_id: int, offset: int) -> int | None:
    if line_id not in starts:
        return None
    start, text = starts[line_id]
    return start + offset if 0 <= offset <= len(text) else None


def _one_line(value: str) -> str:
    """Values may not hold TAB, CR or LF (an annotation across lines covers an LF)."""
    return re.sub(r"[\t\r\n]+", " ", value)


def _by_kept_id(items: Iterable[Any]) -> list[Any]:
    """Read IDs first, by number, so ties on (start, end) come back in their read order."""
    return sorted(items, key=lambda x: (x.id is None, int(x.id[1:]) if x.id else 0))


def categories(document: Document, key: str | None, ids: Mapping[str, str]) -> list[Category]:
    """Document tags (or the values of metadata ``key``) as categories, read ones with their IDs.

    A category id holds no whitespace: runs of it become ``_`` (``my tag`` → ``my_tag``)."""
    values = document.tags if key is None else [v for k, v in document.metadata if k == key]
    cleaned = (re.sub(r"\s+", "_", v.strip()) for v in values)
    return _by_kept_id(Category(v, ids.get(v)) for v in dict.fromkeys(cleaned) if v)


def _shifted(spans: Iterable[Span], offsets: OffsetMap, base: int) -> list[Span]:
    """Spans in code points of one page → ``offsets.unit`` offsets in the file, starting at ``base``."""
    return [replace(s, start=base + offsets.encode(s.start), end=base + offsets.encode(s.end)) for s in spans]


def _warn_size(name: str, size: int) -> None:
    if size > MAX_TEXT_BYTES:
        log.warning("%s: %d bytes of text; the Platform rejects texts over %d bytes", name, size,
                    MAX_TEXT_BYTES)


def _ann(cats: list[Category], spans: list[Span], passthrough: list[str], length: int, name: str) -> bytes:
    data, warnings = write_ann(cats, _by_kept_id(spans), passthrough, length)
    for message in warnings:
        log.warning("%s: %s", name, message)
    return data


async def write_entries(
    parts: AsyncIterator[Part],
    document: Document,
    options: ExportOptions,
    flt: RegionFilter,
    sink: ZipSink,
    prefix: str = "",
) -> int:
    """Stream ``document``'s ``test/`` and ``ann/`` entries into ``sink`` (flushed, not closed);
    ``prefix`` (a bulk archive's document folder) starts every name. Returns the number of parts."""
    if options.unit not in UNITS or options.offset_unit not in OFFSET_UNITS:
        raise UsageError(f"unit must be one of {UNITS}, offset unit one of {OFFSET_UNITS}")
    return await _WRITERS[options.unit](parts, document, options, flt, sink, f"{prefix}_" if prefix else "")


def warn_archive_size(size: int) -> None:
    if size > MAX_ARCHIVE_BYTES:
        log.warning("archive of %d bytes; the Platform rejects zips over %d bytes", size,
                    MAX_ARCHIVE_BYTES)


async def _write_parts(
    parts: AsyncIterator[Part],
    document: Document,
    options: ExportOptions,
    flt: RegionFilter,
    sink: ZipSink,
    prefix: str,
) -> int:
    """``unit=part``: a text and an ``.ann`` per part, flushed before the next part is read."""
    namer, count = EntryNamer(()), 0
    names = options.section_names or {}
    async for part in parts:
        token = where.set(f"document {document.name!r}, part {part.order + 1} ({part.image_filename})")
        page = page_text(part, flt, names)
        stem = prefix + _entry_stem(namer, part.image_filename, part.order)
        data = page.text.encode()
        _warn_size(f"{TEXT_DIR}/{stem}.txt", len(data))
        sink.add(f"{TEXT_DIR}/{stem}.txt", data, "data", part.updated_at)
        offsets = OffsetMap(page.text, options.offset_unit)
        cats = categories(document, options.categories, page.ids.tags)
        ann = _ann(cats, _shifted(page.spans, offsets, 0), page.passthrough, offsets.length, stem)
        if ann:
            sink.add(f"{ANN_DIR}/{stem}.ann", ann, "data", part.updated_at)
        await anyio.to_thread.run_sync(sink.flush)
        where.reset(token)
        count += 1
    return count


@dataclass(slots=True)
class _DocumentAnnotations:
    """What ``unit=document`` keeps while its text streams: annotations only, never text."""

    spans: list[Span] = field(default_factory=list)
    passthrough: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    started: bool = False
    length: int = 0
    size: int = 0
    parts: int = 0

    def add(self, page: PageText, spans: list[Span]) -> None:
        """Keep a page's spans; an ID already used by an earlier page is renumbered."""
        for span in spans:
            clash = span.id is not None and span.id in self.used
            self.spans.append(replace(span, id=None) if clash else span)
            self.used.add(span.id or "")
        self.passthrough.extend(page.passthrough)
        for tag, ident in page.ids.tags.items():
            self.tags.setdefault(tag, ident)


async def _write_document(
    parts: AsyncIterator[Part],
    document: Document,
    options: ExportOptions,
    flt: RegionFilter,
    sink: ZipSink,
    prefix: str,
) -> int:
    """``unit=document``: one text streamed as the parts arrive (pages joined by LF); the ``.ann``,
    which needs every offset, is written after it from the annotations kept meanwhile."""
    stem = prefix + _entry_stem(EntryNamer(()), re.sub(r"[/\\]", "_", document.name), 0)
    names = options.section_names or {}
    state = _DocumentAnnotations()

    def chunks() -> Iterator[bytes]:
        while (part := anyio.from_thread.run(_next_part, parts)) is not None:
            where.set(f"document {document.name!r}, part {part.order + 1} ({part.image_filename})")
            state.parts += 1
            page = page_text(part, flt, names)
            if not page.lines:
                continue
            separator = "\n" if state.started else ""
            offsets = OffsetMap(page.text, options.offset_unit)
            base = state.length + len(separator)
            state.add(page, _shifted(page.spans, offsets, base))
            state.length = base + offsets.length
            data = f"{separator}{page.text}".encode()
            state.started, state.size = True, state.size + len(data)
            yield data

    sink.add(f"{TEXT_DIR}/{stem}.txt", chunks(), "data", document.updated_at)
    await anyio.to_thread.run_sync(sink.flush)
    _warn_size(f"{TEXT_DIR}/{stem}.txt", state.size)
    cats = categories(document, options.categories, state.tags)
    ann = _ann(cats, state.spans, state.passthrough, state.length, stem)
    if ann:
        sink.add(f"{ANN_DIR}/{stem}.ann", ann, "data", document.updated_at)
    return state.parts


async def _next_part(parts: AsyncIterator[Part]) -> Part | None:
    return await anext(parts, None)


_WRITERS = {"part": _write_parts, "document": _write_document}


# --- import ---------------------------------------------------------------------------------


@dataclass(slots=True)
class ImportSummary:
    """What an import created, and every warning (also logged)."""

    archive: Path
    kind: Literal["exchange", "container"]
    documents: int = 0
    parts: int = 0
    lines: int = 0
    categories: int = 0
    extractions: int = 0
    sections: int = 0
    passthrough: int = 0
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        what = "exchange archive" if self.kind == "exchange" else "text container"
        return (f"{self.archive} ({what}): {self.documents} documents, {self.parts} parts, "
                f"{self.lines} lines, {self.categories} categories, {self.extractions} extractions, "
                f"{self.sections} sections"
                + (f", {self.passthrough} other brat lines kept" if self.passthrough else "")
                + (f", {len(self.warnings)} warnings" if self.warnings else ""))


def _junk(member: str) -> bool:
    path = PurePosixPath(member)
    return path.name in _JUNK_NAMES or any(p in _JUNK_DIRS for p in path.parts)


def _is_exchange(members: Iterable[str]) -> bool:
    return any(m.startswith(f"{TEXT_DIR}/") for m in members)


def is_exchange_archive(path: Path) -> bool:
    """True for a zip with a file under the root folder ``test/`` (spec 1); False for anything else."""
    try:
        with open_zip(path) as zf:
            return _is_exchange(i.filename.replace("\\", "/") for i in zf.infolist() if not i.is_dir())
    except (ZipReadError, OSError):
        return False


@dataclass(frozen=True, slots=True)
class _Plan:
    kind: Literal["exchange", "container"]
    pairs: list[tuple[str, str | None]]
    warnings: list[str]


def plan(members: Sequence[str]) -> _Plan:
    """Pair texts with annotations (by path under ``test/`` and ``ann/``, else by base name) or,
    for a zip without ``test/``, take every ``.txt`` as an unannotated document (spec 1)."""
    members = [m for m in members if not _junk(m)]
    if not _is_exchange(members):
        texts = [m for m in members if m.lower().endswith(".txt")]
        skipped = [f"{m}: not a .txt document; skipped" for m in members if not m.lower().endswith(".txt")]
        return _Plan("container", [(m, None) for m in texts], skipped)
    texts = {m[len(TEXT_DIR) + 1 : -4]: m for m in members
             if m.startswith(f"{TEXT_DIR}/") and m.lower().endswith(".txt")}
    anns = {m[len(ANN_DIR) + 1 : -4]: m for m in members
            if m.startswith(f"{ANN_DIR}/") and m.lower().endswith(".ann")}
    by_base: dict[str, list[str]] = {}
    for rel in anns:
        by_base.setdefault(PurePosixPath(rel).name, []).append(rel)
    warnings = [f"{m}: not a .txt document or .ann file in place; skipped" for m in members
                if not m.startswith(f"{ANN_DIR}/") and m not in texts.values()]
    pairs: list[tuple[str, str | None]] = []
    used: set[str] = set()
    for rel, member in texts.items():
        same_base = by_base.get(PurePosixPath(rel).name, [])
        key = rel if rel in anns else same_base[0] if len(same_base) == 1 else None
        pairs.append((member, anns[key] if key else None))
        used.update([key] if key else [])
    warnings += [f"{m}: annotations without {TEXT_DIR}/{rel}.txt; skipped"
                 for rel, m in anns.items() if rel not in used]
    return _Plan("exchange", pairs, warnings)


async def import_exchange(
    path: Path,
    corpus: Corpus,
    *,
    document: str | None = None,
    layer: str = "manual",
    offset_unit: str = "codepoint",
) -> ImportSummary:
    """Import an exchange archive or a plain zip of ``.txt`` files, all in one transaction.

    Each text becomes a document with one part (or, with ``document``, a part of that document,
    found by id or name, else created), one line per LF-separated text line; categories become
    tags, extractions text annotations, sections typed regions. Raises PipelineError naming the
    member and line on bad input, and then the corpus is unchanged.
    """
    if offset_unit not in OFFSET_UNITS:
        raise UsageError(f"offset unit {offset_unit!r}; accepted: {', '.join(OFFSET_UNITS)}")
    target = await _find_document(corpus, document) if document else None
    summary = await anyio.to_thread.run_sync(_import, Path(path), corpus, target, document, layer,
                                             offset_unit)
    for message in summary.warnings:
        log.warning("%s", message)
    return summary


async def _find_document(corpus: Corpus, ref: str) -> Document | None:
    try:
        found = [d async for d in corpus.documents([ref])]
    except UsageError:
        return None
    if len(found) > 1:
        raise UsageError(f"document name {ref!r} is ambiguous in corpus {corpus.path}; use an id")
    return found[0]


def _import(
    path: Path, corpus: Corpus, target: Document | None, name: str | None, layer: str, unit: OffsetUnit
) -> ImportSummary:
    with SafeZip(path, Limits(max_member_size=MAX_IMPORT_MEMBER)) as zf:
        work = plan(zf.members())
        summary = ImportSummary(path, work.kind, warnings=list(work.warnings))
        with corpus.transaction() as writer:
            importer = _Importer(writer, summary, target, name, layer)
            for text_member, ann_member in work.pairs:
                text = _read_text(zf.read(text_member), text_member, summary)
                ann = AnnFile()
                if ann_member:
                    ann = resolve(parse_ann(zf.read(ann_member), ann_member), text, unit, ann_member)
                    summary.warnings.extend(ann.warnings)
                importer.add(PurePosixPath(text_member).stem, text, ann)
            importer.finish()
    return summary


def _read_text(data: bytes, member: str, summary: ImportSummary) -> str:
    text = decode_utf8(data, member)
    if text.startswith(BOM):
        summary.warnings.append(f"{member}: starts with a BOM, kept as character 0 (offsets count it)")
    if len(data) > MAX_TEXT_BYTES:
        summary.warnings.append(f"{member}: {len(data)} bytes; the Platform rejects texts over "
                                f"{MAX_TEXT_BYTES} bytes")
    return text


def _rect(x0: int, y0: int, x1: int, y1: int) -> tuple[tuple[int, int], ...]:
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def _line_width(text: str) -> int:
    return max(1, min(len(text), MAX_LINE_CHARS)) * CHAR_WIDTH


class _Importer:
    """Writes texts as parts, in the open transaction; caches layers, taxonomies and block types."""

    def __init__(
        self, w: CorpusWriter, summary: ImportSummary, target: Document | None, name: str | None, layer: str
    ) -> None:
        self.w, self.summary, self.layer = w, summary, layer
        self.block_types: dict[int, set[int]] = {}
        self.taxonomies: dict[tuple[int, str, str], int] = {}
        self.target: tuple[int, int] | None = None
        self.next_order = 0
        self.existing: Document | None = target
        if target is not None:
            chosen = target.layer(layer)
            layer_id = chosen.id if chosen else w.add_layer(target.id, layer)
            self.target, self.next_order = (target.id, layer_id), target.part_count
            self.block_types[target.id] = {t.id for t in target.valid_block_types}
        elif name is not None:
            self.target = self._new_document(name)

    def _new_document(self, name: str) -> tuple[int, int]:
        doc_id = self.w.add_document(name)
        self.summary.documents += 1
        self.block_types[doc_id] = set()
        return doc_id, self.w.add_layer(doc_id, self.layer)

    def add(self, stem: str, text: str, ann: AnnFile) -> None:
        """One text as one part: lines, regions for its sections, tags, annotations, kept state."""
        w, summary = self.w, self.summary
        doc_id, layer_id = self.target or self._new_document(stem)
        order = self.next_order
        if self.target:
            self.next_order += 1
        lines = text.split("\n")  # never splitlines(): CR and U+2028 are characters of a line
        width = 2 * MARGIN + max(_line_width(t) for t in lines)
        part_id = w.add_part(doc_id, order, "", original_filename=f"{stem}.txt", name=stem, width=width,
                             height=2 * MARGIN + LINE_HEIGHT * len(lines))
        starts = list(itertools.accumulate((len(t) + 1 for t in lines[:-1]), initial=0))
        sections = sorted((s for s in ann.spans if isinstance(s, Section)), key=lambda s: (s.start, s.end))
        owners = self._owners(sections, starts, lines, stem)
        ids = KeptIds(tags={c.category: c.id for c in ann.categories if c.id})
        line_ids: list[int] = []
        for block_order, (owner, run) in enumerate(itertools.groupby(range(len(lines)), owners.__getitem__)):
            indices = list(run)
            section = sections[owner] if owner is not None else None
            type_id = w.add_block_type(section.name) if section else None
            y0, y1 = MARGIN + LINE_HEIGHT * indices[0], MARGIN + LINE_HEIGHT * (indices[-1] + 1)
            box = _rect(MARGIN, y0, MARGIN + max(_line_width(lines[i]) for i in indices), y1)
            block_id = w.add_block(part_id, block_order, box, type_id)
            if section is not None and type_id is not None:
                self.block_types[doc_id].add(type_id)
                if section.id not in ids.regions.values():
                    ids.regions[str(block_id)] = section.id or ""
                    summary.sections += 1
                else:
                    summary.warnings.append(f"{stem}: section {section.id} split into several regions")
            for i in indices:
                y = MARGIN + LINE_HEIGHT * i
                baseline = ((MARGIN, y + 30), (MARGIN + _line_width(lines[i]), y + 30))
                mask = _rect(MARGIN, y + 2, MARGIN + _line_width(lines[i]), y + LINE_HEIGHT - 2)
                line_ids.append(w.add_line(part_id, i, baseline, mask, block_id))
        w.add_texts([(line_id, layer_id, t, None) for line_id, t in zip(line_ids, lines, strict=True)])
        for category in ann.categories:
            w.add_tag(doc_id, category.category)
        for span in ann.spans:
            if isinstance(span, Extraction):
                (sl, so), (el, eo) = _locate(starts, span.start), _locate(starts, span.end)
                taxonomy = self._taxonomy(doc_id, span.group, span.cls)
                ann_id = w.add_text_annotation(taxonomy, part_id, layer_id, line_ids[sl], so, line_ids[el],
                                               eo, value=span.value)
                ids.annotations[str(ann_id)] = span.id or ""
                summary.extractions += 1
        w.add_part_metadata(part_id, IDS_KEY, json.dumps({"tags": ids.tags, "annotations": ids.annotations,
                                                          "regions": ids.regions}, ensure_ascii=False))
        if ann.passthrough:
            w.add_part_metadata(part_id, PASSTHROUGH_KEY,
                                json.dumps([p.text for p in ann.passthrough], ensure_ascii=False))
        summary.parts += 1
        summary.lines += len(lines)
        summary.categories += len(ann.categories)
        summary.passthrough += len(ann.passthrough)

    def _owners(
        self, sections: list[Section], starts: list[int], lines: list[str], stem: str
    ) -> list[int | None]:
        """Which section each line belongs to: the first covering it (overlaps and partial lines warned)."""
        owners: list[int | None] = [None] * len(lines)
        for k, section in enumerate(sections):
            covered = [i for i in range(_locate(starts, section.start)[0], len(lines))
                       if _covers(section, starts[i], starts[i] + len(lines[i]))]
            if not covered:
                continue
            last = covered[-1]
            if section.start != starts[covered[0]] or section.end != starts[last] + len(lines[last]):
                self.summary.warnings.append(f"{stem}: line {section.line}: section {section.id} widened to "
                                             "whole lines")
            for i in covered:
                if owners[i] is None:
                    owners[i] = k
                else:
                    self.summary.warnings.append(
                        f"{stem}: line {section.line}: section {section.id} overlaps section "
                        f"{sections[owners[i]].id}; text line {i + 1} stays in the first"
                    )
        return owners

    def _taxonomy(self, doc_id: int, group: str, cls: str) -> int:
        key = (doc_id, group, cls)
        if key not in self.taxonomies:
            self.taxonomies[key] = self.w.add_taxonomy(doc_id, cls, typology=group)
        return self.taxonomies[key]

    def finish(self) -> None:
        """Add the section types to each document's ontology (block types stay valid in exports)."""
        for doc_id, type_ids in self.block_types.items():
            if type_ids:
                lines = [t.id for t in self.existing.valid_line_types] if self.existing else []
                self.w.set_valid_types(doc_id, sorted(type_ids), lines)


def _locate(starts: list[int], offset: int) -> tuple[int, int]:
    """Text offset → (line index, offset in the line); an offset at a line start belongs to that line."""
    index = bisect_right(starts, offset) - 1
    return index, offset - starts[index]


def _covers(section: Section, start: int, end: int) -> bool:
    """A non-empty line overlapping the section, or an empty line inside it or at its edges."""
    if start == end:
        return section.start <= start <= section.end
    return start < section.end and end > section.start
