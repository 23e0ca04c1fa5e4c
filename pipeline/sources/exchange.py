"""An exchange archive (``test/*.txt`` + ``ann/*.ann``) as a source: its texts are read into a
private temporary corpus (as ``pipeline import`` would, one document per text) that serves the
documents and parts, and is deleted on close."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread

from pipeline.model import Document, Part, Selection
from pipeline.safezip import open_zip
from pipeline.store import Corpus
from pipeline.store.exchange import is_exchange_archive, load_exchange

__all__ = ["ExchangeSource", "is_exchange_file"]


def is_exchange_file(path: Path) -> bool:
    """A zip file with texts under ``test/`` (folders are XML bundles)."""
    return path.is_file() and is_exchange_archive(path)


class ExchangeSource:
    def __init__(self, path: str | Path, *, layer: str | None = None, **_: Any) -> None:
        self.path = Path(path)
        self._layer = layer or "manual"
        self._tmp = tempfile.TemporaryDirectory(prefix="pipeline-exchange-")
        try:
            self._corpus = Corpus.open(Path(self._tmp.name) / "exchange.sqlite", create=True)
            load_exchange(self.path, self._corpus, layer=self._layer)
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return str(self.path.resolve())

    def display(self) -> str:
        return f"exchange archive {self.path}"

    def default_registry(self) -> Path | None:
        return None

    def documents(self, selection: Selection | None = None) -> AsyncIterator[Document]:
        return self._corpus.documents(selection)

    async def document(self, ref: str | int | None = None) -> Document:
        return await self._corpus.document(ref)

    async def part_ids(self, document: Document, pages: Sequence[int]) -> tuple[int, ...]:
        return await self._corpus.part_ids(document, pages)

    def parts(
        self, document: Document, layer: str | None = None, part_ids: Sequence[int] | None = None
    ) -> AsyncIterator[Part]:
        return self._corpus.parts(document, layer, part_ids)

    async def change_marker(self, document: Document, layer: str | None = None) -> str:
        """The archive's directory (every member's name, CRC-32 and size) and the layer: the texts
        are read into a new temporary corpus at each opening, so its rows say nothing stable."""
        return await anyio.to_thread.run_sync(self._marker, layer or self._layer)

    def _marker(self, layer: str) -> str:
        digest = hashlib.sha256(layer.encode())
        with open_zip(self.path) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                digest.update(f"\n{info.filename}|{info.CRC:08x}|{info.file_size}".encode())
        return digest.hexdigest()

    def close(self) -> None:
        if getattr(self, "_corpus", None) is not None:
            self._corpus.close()
            self._corpus = None  # type: ignore[assignment]
        self._tmp.cleanup()

    def __enter__(self) -> ExchangeSource:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
