"""The three seams (issue 13), each driven through the CLI on real files: a new source, a new
format and a new destination are one registration each; the option model drives the CLI flags
and the job file alike; errors keep their kind across the seams."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from pipeline import sinks, sources, writers
from pipeline.cli import main
from pipeline.errors import PipelineError, SourceError, UsageError
from pipeline.export import ExportOptions, export_document
from pipeline.model import Part
from pipeline.options import flags
from pipeline.select import RegionFilter
from pipeline.sinks import ByteSink
from pipeline.sources import Source, open_source
from pipeline.writers import FormatSpec, StreamWriter, register_format

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def corpus(tmp_path: Path, demo_corpus: Path) -> Path:
    path = tmp_path / "demo.sqlite"
    shutil.copyfile(demo_corpus, path)
    shutil.copytree(demo_corpus.parent / "demo.media", tmp_path / "demo.media")
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- sources ----------------------------------------------------------------------------------


def test_open_source_picks_the_kind_and_nothing_above_names_a_class(corpus: Path, tmp_path: Path) -> None:
    """A corpus file, a folder of ALTO, a zip of PAGE and an exchange archive all open by path,
    each satisfying the protocol; unknown kinds are one clear error."""
    zipped = shutil.make_archive(str(tmp_path / "hooker"), "zip", FIXTURES / "transkribus-page-joseph-hooker")
    exchange = tmp_path / "ann.zip"
    assert main(["-q", "export", "--corpus", str(corpus), "--document", "1", "--format", "exchange",
                 "-o", str(exchange)]) == 0
    for target in (corpus, FIXTURES / "escriptorium-tapuscorpus" / "alto", Path(zipped), exchange):
        with open_source(target) as source:
            assert isinstance(source, Source)
            documents = anyio.run(_names, source)
            assert documents and source.display()
    with pytest.raises(UsageError, match="nowhere://"):
        open_source("nowhere://host/db")
    with pytest.raises(SourceError, match="no such file"):
        open_source(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SourceError, match="not a corpus, a folder or zip"):
        open_source(tmp_path / "notes.txt")


async def _names(source: Source) -> list[str]:
    return [d.name async for d in source.documents()]


def test_an_exchange_archive_converts_directly(corpus: Path, tmp_path: Path) -> None:
    """``--source ann.zip``: an exchange archive is a source like any other; exporting it back
    as an exchange archive gives the same entries."""
    first = tmp_path / "ann.zip"
    assert main(["-q", "export", "--corpus", str(corpus), "--document", "2", "--format", "exchange",
                 "--unit", "document", "-o", str(first)]) == 0
    again = tmp_path / "again.zip"
    assert main(["-q", "export", "--source", str(first), "--format", "exchange", "--unit", "document",
                 "-o", str(again)]) == 0
    with zipfile.ZipFile(first) as a, zipfile.ZipFile(again) as b:
        assert sorted(a.namelist()) == sorted(b.namelist())
        assert [a.read(n) for n in sorted(a.namelist())] == [b.read(n) for n in sorted(b.namelist())]
    assert main(["-q", "export", "--source", str(first), "--format", "alto",
                 "-o", str(tmp_path / "a.zip")]) == 0


def test_a_new_source_kind_is_one_registration(corpus: Path, tmp_path: Path) -> None:
    """A source registered for a URL scheme is reachable from the CLI with nothing else changed."""
    one = tmp_path / "one.sqlite"
    shutil.copyfile(corpus, one)
    sources.register_source("mirror", lambda url, **options: open_source(url.removeprefix("mirror://"),
                                                                          **options))
    try:
        assert main(["-q", "export", "--corpus", f"mirror://{one}", "--document", "1",
                     "-o", str(tmp_path / "via-url.zip")]) == 0
    finally:
        sources._KINDS.pop()
    assert main(["-q", "export", "--corpus", str(one), "--document", "1",
                 "-o", str(tmp_path / "direct.zip")]) == 0
    assert sha(tmp_path / "via-url.zip") == sha(tmp_path / "direct.zip")


# --- formats ----------------------------------------------------------------------------------


def _lines(part: Part, regions: RegionFilter) -> Iterator[bytes]:
    for line in sorted(part.lines, key=lambda li: li.order):
        if line.text:
            yield f"{part.order + 1}\t{line.text}\n".encode()


def test_a_new_format_is_one_module_and_one_row(corpus: Path, tmp_path: Path) -> None:
    """A stream format with a header and a footer (it sees the document begin and end), added by
    one register_format call: exported alone, and as entries of a bulk job."""
    spec = FormatSpec("tsv", "tsv", "tsv", StreamWriter(
        _lines, begin=lambda d: f"# {d.name}\n".encode(), end=lambda d: b"# end\n", suffix=".tsv"))
    register_format(spec)
    try:
        out = tmp_path / "doc.tsv"
        assert main(["-q", "export", "--corpus", str(corpus), "--document", "1", "--format", "tsv",
                     "-o", str(out)]) == 0
        text = out.read_text()
        assert text.startswith("# Demo 1") and text.endswith("# end\n") and "\t" in text
        job = tmp_path / "job.toml"
        job.write_text(f'name = "j"\ncorpus = "{corpus}"\n[archive]\ndirectory = "{tmp_path / "out"}"\n'
                       'mode = "bulk"\n[[outputs]]\nformat = "tsv"\n')
        assert main(["-q", "run", str(job)]) == 0
        (archive,) = (tmp_path / "out").glob("*.zip")
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            assert len(names) == 2 and all(n.endswith(".tsv") for n in names)
            assert zf.read(names[0]).decode() == text
    finally:
        del writers.FORMATS["tsv"]


# --- destinations -----------------------------------------------------------------------------


class MemorySink(ByteSink):
    """A destination kept in memory: what a new kind of sink implements (three methods)."""

    published: dict[str, bytes] = {}

    def __init__(self, url: str, name: str | None) -> None:
        super().__init__(url.rstrip("/") + "/" + name if name and url.endswith("/") else url)
        self._data = bytearray()

    def _write(self, data: bytes | memoryview) -> None:
        self._data += data

    def _publish(self) -> str:
        self.published[self.location] = bytes(self._data)
        return self.location

    def _discard(self) -> None:
        self._data.clear()


def test_a_new_destination_is_one_registration(corpus: Path, tmp_path: Path) -> None:
    """The same archive, byte for byte, in a registered destination and in a local file; the
    registry records the destination's location, size and checksum."""
    sinks.register_sink("memory", MemorySink, exists=lambda loc: loc in MemorySink.published,
                        remove=lambda loc: MemorySink.published.pop(loc, None))
    try:
        assert main(["-q", "export", "--corpus", str(corpus), "--document", "1", "--images",
                     "-o", "memory://bucket/"]) == 0
        assert main(["-q", "export", "--corpus", str(corpus), "--document", "1", "--images",
                     "-o", str(tmp_path / "local.zip")]) == 0
    finally:
        del sinks._SCHEMES["memory"]
    ((location, data),) = MemorySink.published.items()
    assert location.startswith("memory://bucket/export_doc1_") and location.endswith(".zip")
    assert data == (tmp_path / "local.zip").read_bytes()
    from pipeline.registry import Registry

    recorded = {r.path: r for r in Registry(corpus).list()}
    assert recorded[location].status == "complete" and recorded[location].size == len(data)
    assert recorded[location].sha256 == hashlib.sha256(data).hexdigest()


def test_registry_location_is_its_own_option(corpus: Path, tmp_path: Path) -> None:
    """By default a corpus keeps its exports; ``--registry`` puts them elsewhere, also for a
    folder source, which has no registry of its own."""
    from pipeline.registry import Registry

    elsewhere = tmp_path / "exports.sqlite"
    before = len(list(Registry(corpus).list()))  # the shared demo corpus may hold others' exports
    assert main(["-q", "export", "--source", str(FIXTURES / "escriptorium-tapuscorpus" / "alto"),
                 "--registry", str(elsewhere), "-o", str(tmp_path / "a.zip")]) == 0
    assert main(["-q", "export", "--corpus", str(corpus), "--document", "1", "--registry", str(elsewhere),
                 "-o", str(tmp_path / "b.zip")]) == 0
    assert [r.status for r in Registry(elsewhere).list()] == ["complete", "complete"]
    assert len(list(Registry(corpus).list())) == before


# --- options ----------------------------------------------------------------------------------


def test_every_option_is_a_flag_and_a_job_key() -> None:
    """The CLI's flags are generated from ExportOptions and job files validate against the same
    dataclasses: no option exists in one and not the other (``section_names`` and ``categories``
    once did)."""
    from pipeline.cli import build_parser
    from pipeline.jobs.config import load_config  # noqa: F401 - the job file's validator

    export = next(a for a in build_parser()._subparsers._group_actions[0].choices.values()  # type: ignore[union-attr]
                  if a.prog.endswith("export"))
    cli = {a.dest.removeprefix("opt:") for a in export._actions if a.dest.startswith("opt:")}
    model = {".".join(f.path) for f in flags()}
    assert cli == model
    fields = {f.name for f in dataclasses.fields(ExportOptions)} - {"part_ids"}
    assert {path.split(".")[0] for path in model} == fields
    assert {"section_names", "categories", "image.quality", "image.lookahead"} <= model


def test_exchange_section_names_and_categories_from_cli_and_job(corpus: Path, tmp_path: Path) -> None:
    """The same options give the same archive from ``pipeline export`` and from a job file."""
    cli = tmp_path / "cli.zip"
    assert main(["-q", "export", "--corpus", str(corpus), "--document", "1", "--format", "exchange",
                 "--section-name", "Main=BODY", "--section-name", "Title=HEADLINE",
                 "--categories", "language", "-o", str(cli)]) == 0
    job = tmp_path / "job.toml"
    job.write_text(f'name = "j"\ncorpus = "{corpus}"\n[select]\ndocuments = [1]\n'
                   f'[archive]\ndirectory = "{tmp_path / "out"}"\n[[outputs]]\nformat = "exchange"\n'
                   'categories = "language"\nsection_names = {Main = "BODY", Title = "HEADLINE"}\n')
    assert main(["-q", "run", str(job)]) == 0
    (from_job,) = (tmp_path / "out").glob("*.zip")
    assert sha(from_job) == sha(cli)
    with zipfile.ZipFile(cli) as zf:
        anns = b"".join(zf.read(n) for n in zf.namelist() if n.endswith(".ann"))
    assert b"_SECTION" in anns and b"\tHEADLINE" in anns and b"\tMAIN" not in anns
    job.write_text(job.read_text().replace('categories = "language"', "categories = 3"))
    assert main(["-q", "run", str(job)]) == 2


# --- errors -----------------------------------------------------------------------------------


def test_a_bug_in_a_bulk_archive_fails_it_once(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad document is dropped from a bulk archive and the archive rebuilt without it; a bug is
    not a bad document: it fails the archive once, with its traceback in the registry."""
    from pipeline.writers import pagezip

    calls: list[int] = []
    render = pagezip.PageZipWriter.write

    async def buggy(self: Any, job: Any) -> None:
        calls.append(job.document.id)
        if job.document.id == 2:
            raise KeyError("a bug")
        await render(self, job)

    monkeypatch.setattr(pagezip.PageZipWriter, "write", buggy)
    job = tmp_path / "job.toml"
    job.write_text(f'name = "bulk"\ncorpus = "{corpus}"\n[archive]\ndirectory = "{tmp_path / "out"}"\n'
                   'mode = "bulk"\n[[outputs]]\nformat = "alto"\n')
    assert main(["-q", "run", str(job)]) == 1
    assert calls == [1, 2]  # not rebuilt once per document
    from pipeline.registry import Registry

    (record,) = [r for r in Registry(corpus).list() if r.document_name == "bulk"]
    assert record.status == "failed" and "KeyError: 'a bug'" in (record.error or "")


def test_debug_shows_every_error_of_a_group(corpus: Path, tmp_path: Path) -> None:
    """Errors from the image stage's task group come out as one user error; with ``--debug`` the
    group they came from is chained to it, every error in it."""
    media = corpus.parent / "demo.media" / "documents" / "1"
    for image in sorted(media.iterdir())[:2]:
        image.write_bytes(b"not an image")
    args = ["export", "--corpus", str(corpus), "--document", "1", "--images", "--image-format", "png",
            "-o", str(tmp_path / "x.zip")]
    assert main(["-q", *args]) == 1
    with pytest.raises(PipelineError) as raised:
        main(["--debug", *args])
    assert isinstance(raised.value.__cause__, BaseExceptionGroup)
    assert raised.value in list(_leaves(raised.value.__cause__))


def _leaves(error: BaseException) -> Iterator[BaseException]:
    from pipeline.errors import leaves

    return leaves(error)


def test_export_document_takes_any_target(corpus: Path, tmp_path: Path) -> None:
    """Through the Python API: a folder target names the file, never overwriting."""
    async def run() -> list[str]:
        with open_source(corpus) as source:
            document = await source.document(1)
            done = [await export_document(source, document, ExportOptions(), f"{tmp_path}/") for _ in (1, 2)]
        return [r.location for r in done]

    first, second = anyio.run(run)
    assert first != second and Path(first).parent == Path(second).parent == tmp_path
    assert sha(Path(first)) == sha(Path(second))
