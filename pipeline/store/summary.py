"""What an import wrote: one summary for every kind of import (folders and zips of XML,
exchange archives), printed by ``pipeline import`` and returned to callers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(slots=True)
class ImportedDocument:
    """A document an import created or added parts to, and how much of it."""

    id: int
    name: str
    layer: str
    parts: int = 0
    lines: int = 0


@dataclass(slots=True)
class ImportSummary:
    """What an import wrote, and the warnings it gave (also logged as they happen).

    An exchange import also says what it read (``archive``, ``kind``: ``exchange`` or
    ``container``) and counts the brat annotations it turned into corpus rows."""

    documents: list[ImportedDocument] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    archive: Path | None = None
    kind: str = ""
    categories: int = 0
    extractions: int = 0
    sections: int = 0
    passthrough: int = 0

    @property
    def parts(self) -> int:
        return sum(d.parts for d in self.documents)

    @property
    def lines(self) -> int:
        return sum(d.lines for d in self.documents)

    def __str__(self) -> str:
        if self.archive is None:
            return "\n".join(
                f"document {d.id} {d.name!r}: {d.parts} parts, {d.lines} lines, layer {d.layer!r}"
                for d in self.documents
            )
        what = "exchange archive" if self.kind == "exchange" else "text container"
        return (f"{self.archive} ({what}): {len(self.documents)} documents, {self.parts} parts, "
                f"{self.lines} lines, {self.categories} categories, {self.extractions} extractions, "
                f"{self.sections} sections"
                + (f", {self.passthrough} other brat lines kept" if self.passthrough else "")
                + (f", {len(self.warnings)} warnings" if self.warnings else ""))
