"""The expert.ai exchange archive as data (spec exchange-archive.md): ``test/<name>.txt`` +
``ann/<name>.ann``. Pure: model objects in, texts and brat spans out; member names in, a pairing
plan out. :mod:`pipeline.writers.exchange` writes archives with it, :mod:`pipeline.store.exchange`
imports them.

Export turns a part (or a whole document) into a text, the chosen layer's lines in XML reading
order joined by LF, and an ``.ann`` of categories (document tags), sections (typed regions) and
extractions (text annotations). IDs and passthrough lines read from an archive are kept in part
metadata under reserved keys, so exporting an imported document gives the archive back.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any, Literal

from pipeline.errors import PipelineError
from pipeline.formats.brat import BODY, Category, Extraction, OffsetMap, Section, Span, write_ann
from pipeline.model import Document, Part
from pipeline.naming import EntryNamer
from pipeline.select import RegionFilter, layout

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


def entry_stem(namer: EntryNamer, name: str, order: int) -> str:
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


def by_kept_id(items: Iterable[Any]) -> list[Any]:
    """Read IDs first, by number, so ties on (start, end) come back in their read order."""
    return sorted(items, key=lambda x: (x.id is None, int(x.id[1:]) if x.id else 0))


def categories(document: Document, key: str | None, ids: Mapping[str, str]) -> list[Category]:
    """Document tags (or the values of metadata ``key``) as categories, read ones with their IDs.

    A category id holds no whitespace: runs of it become ``_`` (``my tag`` → ``my_tag``)."""
    values = document.tags if key is None else [v for k, v in document.metadata if k == key]
    cleaned = (re.sub(r"\s+", "_", v.strip()) for v in values)
    return by_kept_id(Category(v, ids.get(v)) for v in dict.fromkeys(cleaned) if v)


def shifted(spans: Iterable[Span], offsets: OffsetMap, base: int) -> list[Span]:
    """Spans in code points of one page → ``offsets.unit`` offsets in the file, starting at ``base``."""
    return [replace(s, start=base + offsets.encode(s.start), end=base + offsets.encode(s.end)) for s in spans]


def warn_size(name: str, size: int) -> None:
    if size > MAX_TEXT_BYTES:
        log.warning("%s: %d bytes of text; the Platform rejects texts over %d bytes", name, size,
                    MAX_TEXT_BYTES)


def ann_bytes(
    cats: list[Category], spans: list[Span], passthrough: list[str], length: int, name: str
) -> bytes:
    data, warnings = write_ann(cats, by_kept_id(spans), passthrough, length)
    for message in warnings:
        log.warning("%s: %s", name, message)
    return data


def junk(member: str) -> bool:
    path = PurePosixPath(member)
    return path.name in _JUNK_NAMES or any(p in _JUNK_DIRS for p in path.parts)


def is_exchange(members: Iterable[str]) -> bool:
    return any(m.startswith(f"{TEXT_DIR}/") for m in members)


@dataclass(frozen=True, slots=True)
class _Plan:
    kind: Literal["exchange", "container"]
    pairs: list[tuple[str, str | None]]
    warnings: list[str]


def plan(members: Sequence[str]) -> _Plan:
    """Pair texts with annotations (by path under ``test/`` and ``ann/``, else by base name) or,
    for a zip without ``test/``, take every ``.txt`` as an unannotated document (spec 1)."""
    members = [m for m in members if not junk(m)]
    if not is_exchange(members):
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
