"""Importing an exchange archive, or a plain zip of ``.txt`` documents, into a corpus, all in one
transaction (see :mod:`pipeline.formats.exchange` for the format)."""

from __future__ import annotations

import itertools
import json
import logging
from bisect import bisect_right
from datetime import datetime
from pathlib import Path, PurePosixPath

import anyio

from pipeline.errors import UsageError
from pipeline.formats.brat import (
    BOM,
    OFFSET_UNITS,
    AnnFile,
    Extraction,
    OffsetUnit,
    Section,
    decode_utf8,
    parse_ann,
    resolve,
)
from pipeline.formats.exchange import (
    CHAR_WIDTH,
    IDS_KEY,
    LINE_HEIGHT,
    MARGIN,
    MAX_IMPORT_MEMBER,
    MAX_LINE_CHARS,
    MAX_TEXT_BYTES,
    PASSTHROUGH_KEY,
    KeptIds,
    is_exchange,
    plan,
)
from pipeline.model import Document
from pipeline.safezip import Limits, SafeZip, ZipReadError, open_zip
from pipeline.store.corpus import Corpus
from pipeline.store.summary import ImportedDocument, ImportSummary
from pipeline.store.writer import CorpusWriter

log = logging.getLogger("pipeline")


def is_exchange_archive(path: Path) -> bool:
    """True for a zip with a file under the root folder ``test/`` (spec 1); False for anything else."""
    try:
        with open_zip(path) as zf:
            return is_exchange(i.filename.replace("\\", "/") for i in zf.infolist() if not i.is_dir())
    except (ZipReadError, OSError):
        return False


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


def load_exchange(path: Path, corpus: Corpus, *, layer: str = "manual") -> ImportSummary:
    """Import an exchange archive into ``corpus`` (blocking), one document per text, warnings
    logged: what an exchange archive read as a source starts with. Documents and parts are dated
    by their text member in the zip, not by the time of reading: the same archive read twice gives
    the same documents (and so the same exports, and fingerprints that match)."""
    summary = _import(Path(path), corpus, None, None, layer, "codepoint", member_times=True)
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
    path: Path, corpus: Corpus, target: Document | None, name: str | None, layer: str, unit: OffsetUnit,
    *, member_times: bool = False,
) -> ImportSummary:
    with SafeZip(path, Limits(max_member_size=MAX_IMPORT_MEMBER)) as zf:
        work = plan(zf.members())
        summary = ImportSummary(warnings=list(work.warnings), archive=path, kind=work.kind)
        with corpus.transaction() as writer:
            importer = _Importer(writer, summary, target, name, layer)
            for text_member, ann_member in work.pairs:
                text = _read_text(zf.read(text_member), text_member, summary)
                ann = AnnFile()
                if ann_member:
                    ann = resolve(parse_ann(zf.read(ann_member), ann_member), text, unit, ann_member)
                    summary.warnings.extend(ann.warnings)
                when = datetime(*zf.info(text_member).date_time) if member_times else None
                importer.add(PurePosixPath(text_member).stem, text, ann, when)
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
        self.counts: dict[int, ImportedDocument] = {}
        if target is not None:
            chosen = target.layer(layer)
            layer_id = chosen.id if chosen else w.add_layer(target.id, layer)
            self.target, self.next_order = (target.id, layer_id), target.part_count
            self._count(target.id, target.name)
            self.block_types[target.id] = {t.id for t in target.valid_block_types}
        elif name is not None:
            self.target = self._new_document(name)

    def _count(self, doc_id: int, name: str) -> None:
        self.counts[doc_id] = ImportedDocument(doc_id, name, self.layer)
        self.summary.documents.append(self.counts[doc_id])

    def _new_document(self, name: str, when: datetime | None = None) -> tuple[int, int]:
        doc_id = self.w.add_document(name, created_at=when)
        self._count(doc_id, name)
        self.block_types[doc_id] = set()
        return doc_id, self.w.add_layer(doc_id, self.layer)

    def add(self, stem: str, text: str, ann: AnnFile, when: datetime | None = None) -> None:
        """One text as one part (dated ``when``, else now): lines, regions for its sections, tags,
        annotations, kept state."""
        w, summary = self.w, self.summary
        doc_id, layer_id = self.target or self._new_document(stem, when)
        order = self.next_order
        if self.target:
            self.next_order += 1
        lines = text.split("\n")  # never splitlines(): CR and U+2028 are characters of a line
        width = 2 * MARGIN + max(_line_width(t) for t in lines)
        part_id = w.add_part(doc_id, order, "", original_filename=f"{stem}.txt", name=stem, width=width,
                             height=2 * MARGIN + LINE_HEIGHT * len(lines), created_at=when)
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
        self.counts[doc_id].parts += 1
        self.counts[doc_id].lines += len(lines)
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
