"""pytest-benchmark micro benchmarks, one stage at a time: format writers, store reads, zip
assembly, and the image paths (pass-through and transcoding) end to end.

``make bench`` runs them with timing (``pytest benchmarks --benchmark-enable``); the test suite runs
each once with timing off (``tests/test_compare.py``) so they keep working. The side-by-side
comparison with baselines is ``python -m benchmarks.compare``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from pipeline import writers
from pipeline.archive import ZipArchive
from pipeline.demo import build_demo
from pipeline.export import ExportOptions, ExportResult, export_document
from pipeline.formats import alto, page, text
from pipeline.images import ImageOptions
from pipeline.model import Document, Part
from pipeline.select import RegionFilter
from pipeline.sinks import LocalFileSink
from pipeline.store import Corpus

PARTS, LINES = 20, 40


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 pages of 40 lines with 1.4 MP JPEG scans."""
    path = tmp_path_factory.mktemp("micro") / "corpus.sqlite"
    build_demo(path, documents=1, parts=PARTS, lines=LINES, image_size=(1000, 1400), image_format="jpeg",
               seed=5)
    return path


@pytest.fixture(scope="module")
def loaded(corpus: Path) -> tuple[Document, list[Part]]:
    async def read() -> tuple[Document, list[Part]]:
        with Corpus.open(corpus) as store:
            document = await store.document(1)
            return document, [part async for part in store.parts(document)]

    return anyio.run(read)


def export(corpus: Path, out: Path, options: ExportOptions) -> Callable[[], ExportResult]:
    async def run() -> ExportResult:
        with Corpus.open(corpus) as store:
            return await export_document(store, await store.document(1), options, out)

    return lambda: anyio.run(run)


@pytest.mark.parametrize("name", ["alto", "page"])
def test_page_writer(benchmark, loaded: tuple[Document, list[Part]], name: str) -> None:  # noqa: ANN001
    """One XML page per part, in memory."""
    document, parts = loaded
    render, flt = {"alto": alto.render, "page": page.render}[name], RegionFilter()
    assert writers.get(name).schema is not None
    size = benchmark(lambda: sum(len(b"".join(render(p, document, flt))) for p in parts))
    assert size > PARTS * LINES * 100


def test_text_writer(benchmark, loaded: tuple[Document, list[Part]]) -> None:  # noqa: ANN001
    _, parts = loaded
    assert not writers.get("text").zipped
    assert benchmark(lambda: len(b"".join(text.render(parts, RegionFilter())))) > PARTS * LINES * 10


def test_store_reads(benchmark, corpus: Path) -> None:  # noqa: ANN001
    """Every part of the document, with its blocks, lines and text, from SQLite."""
    async def read() -> int:
        with Corpus.open(corpus) as store:
            document = await store.document(1)
            return sum([len(part.lines) async for part in store.parts(document)])

    assert benchmark(lambda: anyio.run(read)) == PARTS * LINES


def test_zip_assembly(benchmark, tmp_path: Path) -> None:  # noqa: ANN001
    """16 stored 1 MiB files and 16 deflated XML entries into an atomic, hashed file."""
    files = []
    for i in range(16):
        files.append(tmp_path / f"{i}.bin")
        files[-1].write_bytes(bytes([i]) * (1 << 20))
    xml = b"<page>" + b"<line>some text</line>" * 500 + b"</page>"

    def assemble() -> int:
        out = LocalFileSink(tmp_path / "out.zip")
        archive = ZipArchive(out)
        for i, path in enumerate(files):
            archive.add(f"{i}.bin", path, "image")
            archive.add(f"{i}.xml", [xml], "xml")
            archive.flush()
        archive.close()
        out.commit()
        return out.size

    assert benchmark(assemble) > 16 << 20


@pytest.mark.parametrize("image_format", ["original", "jpeg"])
def test_export_with_images(benchmark, corpus: Path, tmp_path: Path, image_format: str) -> None:  # noqa: ANN001
    """ALTO with images passed through or transcoded to JPEG q85, store to zip."""
    options = ExportOptions(format="alto", images=True, image=ImageOptions(format=image_format, quality=85))
    result = benchmark(export(corpus, tmp_path / "out.zip", options))
    assert result.parts == PARTS and not result.report


def test_exchange_export(benchmark, corpus: Path, tmp_path: Path) -> None:  # noqa: ANN001
    """The exchange archive (texts and brat standoff), store to zip."""
    result = benchmark(export(corpus, tmp_path / "out.zip", ExportOptions(format="exchange")))
    assert result.parts == PARTS
