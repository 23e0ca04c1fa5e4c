"""Which blocks and lines an export writes, and in which order (spec section 2).

The one place for the region filter, block/line ordering and the text-export row filter, so
every format agrees on them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from operator import attrgetter

from pipeline.errors import UsageError
from pipeline.model import Document, Line, Part, Region

_KEYWORDS = ("undefined", "orphan")
_by_order = attrgetter("order", "id")


@dataclass(frozen=True, slots=True)
class RegionFilter:
    """The selected region types: block type ids (None = every type, valid or not), plus the
    pseudo-types ``undefined`` (untyped blocks) and ``orphan`` (lines without a block)."""

    types: frozenset[int] | None = None
    undefined: bool = True
    orphan: bool = True

    @classmethod
    def parse(cls, spec: str | None, document: Document) -> RegionFilter:
        """Parse ``"Main,Title,undefined,orphan"``: type names or ids of ``document.block_types``
        and the case-insensitive keywords; None or empty selects everything."""
        tokens = [t.strip() for t in (spec or "").split(",") if t.strip()]
        if not tokens:
            return cls()
        by_name = {t.name: t.id for t in document.block_types}
        by_id = {str(t.id): t.id for t in document.block_types}
        types: set[int] = set()
        keywords: set[str] = set()
        for token in tokens:
            if token.lower() in _KEYWORDS:
                keywords.add(token.lower())
            elif token in by_name or token in by_id:
                types.add(by_name[token] if token in by_name else by_id[token])
            else:
                accepted = ", ".join([*by_name, *_KEYWORDS])
                raise UsageError(f"unknown region type {token!r}; accepted: {accepted} (or a type id)")
        return cls(frozenset(types), "undefined" in keywords, "orphan" in keywords)

    def keeps(self, region: Region) -> bool:
        """True if ``region`` is exported (XML formats)."""
        if region.type is None:
            return self.undefined
        return self.types is None or region.type.id in self.types


@dataclass(frozen=True, slots=True)
class PageLayout:
    """What an XML writer walks: exported blocks with their lines, then the orphan lines
    (empty unless ``orphan`` is selected), all in spec order."""

    blocks: list[tuple[Region, list[Line]]]
    orphans: list[Line]


def layout(part: Part, flt: RegionFilter) -> PageLayout:
    """Blocks by mean order of all their lines (blocks without lines last, ties by block order
    then id), lines by order; lines of dropped blocks are dropped, not moved to the orphans.
    A line whose block is missing from the part counts as an orphan rather than vanishing."""
    regions = {r.id: r for r in part.regions}
    grouped: dict[int | None, list[Line]] = {}
    for line in sorted(part.lines, key=_by_order):
        key = line.region_id if line.region_id in regions else None
        grouped.setdefault(key, []).append(line)

    def rank(region: Region) -> tuple[bool, float, int, int]:
        lines = grouped.get(region.id)
        mean = sum(line.order for line in lines) / len(lines) if lines else 0.0
        return (not lines, mean, region.order, region.id)

    blocks = [(r, grouped.get(r.id, [])) for r in sorted(part.regions, key=rank) if flt.keeps(r)]
    return PageLayout(blocks, grouped.get(None, []) if flt.orphan else [])


def text_rows(part: Part, flt: RegionFilter) -> Iterator[Line]:
    """Lines kept by the text export, in line order: a row in the layer with content other than
    ``''``, whose block is selected, or which is an orphan and ``orphan`` is selected."""
    regions: dict[int | None, Region] = {r.id: r for r in part.regions}
    for line in sorted(part.lines, key=_by_order):
        if not line.text:  # None = no row in the layer, '' = empty row: both absent
            continue
        region = regions.get(line.region_id)
        if flt.orphan if region is None else flt.keeps(region):
            yield line
