"""The SQLite corpus as a source: any SQLite file, opened read-only (``pipeline.store`` checks
that it is a corpus of the schema this program reads, and says so in one line if not)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.store.schema import SQLITE_MAGIC

if TYPE_CHECKING:
    from pipeline.store import Corpus

#: file suffixes taken for a corpus even when the file is not SQLite (the corpus then says why)
SUFFIXES = (".sqlite", ".sqlite3", ".db")


def is_corpus(path: Path) -> bool:
    """An SQLite file, or a file named like one (the corpus checks the rest)."""
    if not path.is_file():
        return False
    if path.suffix.lower() in SUFFIXES:
        return True
    with path.open("rb") as handle:
        return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def open_corpus(path: str | Path, **_: Any) -> Corpus:
    from pipeline.store import Corpus

    return Corpus.open(path, readonly=True)
