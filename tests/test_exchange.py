"""Exchange archive export and import, through the CLI, ``export_document`` and ``import_exchange``."""

from __future__ import annotations

import io
import logging
import re
import sqlite3
import tracemalloc
import zipfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import pytest
from bioc import brat as bioc_brat
from bratsubset.annotation import Annotations

from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.export import ExportOptions, export_document
from pipeline.formats.brat import parse_ann
from pipeline.model import Document, Layer, Line, Part, Region, Taxonomy, TextAnnotation, Typology
from pipeline.safezip import UnsafeArchiveError
from pipeline.store import Corpus
from pipeline.store.exchange import import_exchange, is_exchange_archive
from pipeline.store.summary import ImportSummary

FORBIDDEN = re.compile(r'[\x00-\x1f/\\:*?"<>|]')


def make_zip(path: Path, entries: dict[str, bytes | str]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data.encode() if isinstance(data, str) else data)
    return path


def entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def export(corpus: Path, document: str, out: Path, *args: str) -> dict[str, bytes]:
    assert main(["-q", "export", "--corpus", str(corpus), "--document", document, "--format", "exchange",
                 "-o", str(out), *args]) == 0
    return entries(out)


def do_import(archive: Path, corpus_path: Path, **kwargs: str) -> ImportSummary:
    async def run() -> ImportSummary:
        with Corpus.open(corpus_path, create=not corpus_path.exists()) as corpus:
            return await import_exchange(archive, corpus, **kwargs)

    return anyio.run(run)


def dump(corpus_path: Path) -> list[str]:
    with sqlite3.connect(corpus_path) as conn:
        return list(conn.iterdump())


def document_ids(corpus_path: Path) -> list[int]:
    with sqlite3.connect(corpus_path) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM core_document ORDER BY id")]


def utf16_slice(text: str, start: int, end: int) -> str:
    return text.encode("utf-16-le")[2 * start : 2 * end].decode("utf-16-le")


# --- export -----------------------------------------------------------------------------------


def test_export_layout_names_and_independent_readers(demo_corpus: Path, tmp_path: Path) -> None:
    files = export(demo_corpus, "1", tmp_path / "x.zip")
    texts = sorted(n for n in files if n.startswith("test/"))
    anns = sorted(n for n in files if n.startswith("ann/"))
    assert set(files) == {*texts, *anns} and len(texts) == 4
    stems = [n[5:-4] for n in texts]
    assert len({s.lower() for s in stems}) == 4 and not any(FORBIDDEN.search(s) for s in stems)
    assert stems == sorted(["f001", "f002_" + stems[1][5:], "f003", "f003_3"])
    assert anns == [f"ann/{s}.ann" for s in stems]  # every page has the document's categories
    for stem in stems:
        text = files[f"test/{stem}.txt"].decode()
        ann_text = files[f"ann/{stem}.ann"].decode()
        assert ann_text.endswith("\n") and "\r" not in ann_text
        (tmp_path / f"{stem}.txt").write_text(text, encoding="utf-8", newline="")
        t_only = "".join(f"{line}\n" for line in ann_text.split("\n") if line and not line.startswith("C"))
        (tmp_path / f"{stem}.ann").write_text(t_only, encoding="utf-8", newline="")
        reader = Annotations(str(tmp_path / stem), read_only=True)
        assert reader.failed_lines == []
        brat_spans = {(t.id, t.type, tuple(t.spans)) for t in reader.get_textbounds()}
        ours = parse_ann(ann_text.encode(), stem)
        assert brat_spans == {(s.id, _type(s), ((s.start, s.end),)) for s in ours.spans}
        bioc_doc = bioc_brat.loads_ann(ann_text)
        assert {(e.id, e.type) for e in bioc_doc.entities} == {(s.id, _type(s)) for s in ours.spans}
        sections = {s.name: text[s.start : s.end] for s in ours.spans if not hasattr(s, "group")}
        assert "BODY" not in sections and sections["TITLE"].startswith("INCIPIT LIBER")
        assert [c.category for c in ours.categories] == ["demo", "médiéval", "synthetic_&_<test>"][
            : len(ours.categories)
        ] or [c.category for c in ours.categories] == ["demo", "synthetic_&_<test>"]
        person = next(s for s in ours.spans if getattr(s, "cls", "") == "Person")
        assert text[person.start : person.end] == "Fish" and person.value == "Fish"
        place = next(s for s in ours.spans if getattr(s, "cls", "") == "Place")
        assert place.value == "Paris & <Île-de-France>" and "\n" in text[place.start : place.end]


def _type(span: object) -> str:
    return "_SECTION" if not hasattr(span, "group") else f"{span.group}.{span.cls}"  # type: ignore[attr-defined]


def test_regions_filter_and_skipped_annotations(demo_corpus: Path, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    files = export(demo_corpus, "1", tmp_path / "m.zip", "--regions", "Main")
    ann = parse_ann(files["ann/f001.ann"], "f001")
    assert [s.name for s in ann.spans if not hasattr(s, "group")] == ["MAIN"]
    assert files["test/f001.txt"].decode().startswith("Fish & chips")
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        files = export(demo_corpus, "1", tmp_path / "t.zip", "--regions", "Title")
    assert files["test/f001.txt"] == b"INCIPIT LIBER 1"
    assert [_type(s) for s in parse_ann(files["ann/f001.ann"], "f").spans] == ["_SECTION"]


def corpus_with_emoji(tmp_path: Path) -> Path:
    """One part: an emoji and combining characters before annotated spans."""
    path = tmp_path / "emoji.sqlite"
    lines = ["Fish \U0001f41f & chips \U0001f35f end", "Cafe\u0301 de\u0301ja\u0300 vu \U0001f600 Paris"]
    with Corpus.open(path, create=True) as corpus, corpus.transaction() as w:
        doc = w.add_document("emoji")
        layer = w.add_layer(doc, "manual")
        part = w.add_part(doc, 0, "", original_filename="page.txt", width=100, height=100)
        block = w.add_block(part, 0, ((0, 0), (9, 0), (9, 9)), w.add_block_type("Main"))
        ids = [w.add_line(part, i, ((0, i), (9, i)), None, block) for i in range(2)]
        w.add_texts([(lid, layer, text, None) for lid, text in zip(ids, lines, strict=True)])
        tax = w.add_taxonomy(doc, "Place", typology="Entity")
        for line, word in ((0, "chips"), (0, "end"), (1, "de\u0301ja\u0300"), (1, "Paris")):
            start = lines[line].index(word)
            w.add_text_annotation(tax, part, layer, ids[line], start, ids[line], start + len(word))
        start = lines[0].index("end")
        w.add_text_annotation(tax, part, layer, ids[0], start, ids[1], 5)  # across the LF
    return path


@pytest.mark.parametrize("unit", ["codepoint", "utf16"])
def test_offsets_after_emoji_and_combining_characters(tmp_path: Path, unit: str) -> None:
    corpus = corpus_with_emoji(tmp_path)
    for granularity in ("part", "document"):
        files = export(corpus, "emoji", tmp_path / f"{granularity}.zip", "--offset-unit", unit,
                       "--unit", granularity)
        (text_name,) = [n for n in files if n.startswith("test/")]
        text = files[text_name].decode()
        ann = parse_ann(files[text_name.replace("test/", "ann/").replace(".txt", ".ann")], "x")
        covered = {
            s.value: (text[s.start : s.end] if unit == "codepoint" else utf16_slice(text, s.start, s.end))
            for s in ann.spans if hasattr(s, "group")
        }
        assert covered["chips"] == "chips" and covered["Paris"] == "Paris"
        assert covered["de\u0301ja\u0300"] == "de\u0301ja\u0300"
        assert covered["end Cafe\u0301"] == "end\nCafe\u0301"  # value of a span across lines: LF → space
        section = next(s for s in ann.spans if not hasattr(s, "group"))
        assert (section.start, section.end) == (0, len(text) if unit == "codepoint" else len(text) + 3)


def test_document_unit_streams_pages_in_order(demo_corpus: Path, tmp_path: Path) -> None:
    parts = export(demo_corpus, "1", tmp_path / "p.zip")
    doc = export(demo_corpus, "1", tmp_path / "d.zip", "--unit", "document")
    (name,) = [n for n in doc if n.startswith("test/")]
    assert not FORBIDDEN.search(name[5:])
    pages = [parts[n] for n in sorted(parts) if n.startswith("test/")]
    assert doc[name] == b"\n".join(pages)
    ann = parse_ann(doc[name.replace("test/", "ann/")[:-4] + ".ann"], "d")
    text = doc[name].decode()
    assert [text[s.start : s.end] for s in ann.spans if getattr(s, "cls", "") == "Person"] == ["Fish"] * 4
    assert [s.id for s in ann.spans] == [f"T{i}" for i in range(1, len(ann.spans) + 1)]


class ManyParts:
    """A source of ``count`` small parts, made on the fly: nothing is kept."""

    def __init__(self, count: int) -> None:
        self.count = count

    async def parts(self, document: Document, layer: str = "manual",
                    part_ids: Sequence[int] | None = None) -> AsyncIterator[Part]:
        main = Typology(1, "Main")
        tax = Taxonomy(1, "Person", "Entity")
        for k in range(self.count):
            lines = tuple(Line(k * 10 + i, i, region_id=k, text=f"line {i} of page {k} \U0001f600 text")
                          for i in range(5))
            yield Part(k, 1, k, f"p{k}.jpg", 100, 100, regions=(Region(k, 0, (), main),), lines=lines,
                       annotations=(TextAnnotation(k, tax, k * 10, 0, k * 10 + 1, 4),))


def export_many(tmp_path: Path, count: int) -> tuple[int, int]:
    document = Document(1, "many", layers=(Layer(1, "manual"),), tags=("big",))
    out = tmp_path / f"many{count}.zip"

    async def run() -> int:
        result = await export_document(ManyParts(count), document, ExportOptions(format="exchange"),
                                       out)
        return result.parts

    tracemalloc.start()
    try:
        parts = anyio.run(run)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert parts == count
    with zipfile.ZipFile(out) as zf:
        assert len(zf.namelist()) == 2 * count
    return peak, out.stat().st_size


@pytest.mark.slow
def test_memory_stays_flat_over_parts(tmp_path: Path) -> None:
    export_many(tmp_path, 20)  # warm up: lazy imports and caches are not the export's memory
    small, _ = export_many(tmp_path, 200)
    large, _ = export_many(tmp_path, 2000)
    # what grows is the sink's per-entry bookkeeping for the central directory (~550 bytes an
    # entry, the same for ALTO); texts, annotations and parts must not accumulate
    per_entry = (large - small) / (2 * 1800)
    assert per_entry < 800, (small, large)


# --- import and round trip ------------------------------------------------------------------------

TITLE_TEXT = "Lentil soup\u2026 \U0001f372\nCook the lentils with caf\u00e9 and cre\u0300me.\nSay it."
_L = TITLE_TEXT.index("lentils")
_C = TITLE_TEXT.index("caf\u00e9")
_S = TITLE_TEXT.index("Say")
CANONICAL: dict[str, str] = {
    "test/recipe.txt": TITLE_TEXT,
    "ann/recipe.ann": (
        "C1\t15000000\nC2\tbreach\n"
        f"T1\t_SECTION 0 14\tTITLE\n"
        f"T2\tIngredients.Legumes {_L} {_L + 7}\tlentil\n"
        f"T3\tIngredients.Food {_L} {_L + 7}\tlentils\n"
        f"T4\tYears.X_1999 {_C} {_C + 4}\tx\u2028y\n"
        f"T5\tFinance_Communications.Action {_S} {_S + 3}\tsay\n"
        f"T6\t_SECTION {_S} {_S + 7}\tNOTE\n"
        "R1\tRel Arg1:T2 Arg2:T3\n"
        "T9\tLocation 0 4;5 9\tLent soup\n"
        "#1\tAnnotatorNotes T2\tcheck me\n"
    ),
    "test/crlf.txt": "Line one\r\nLine two\r\n",
    "ann/crlf.ann": "C1\tnews\nT1\tWords.Word 15 18\ttwo\n",
    "test/bom.txt": "\ufeffHello world",
    "ann/bom.ann": "T1\tWords.Word 7 12\tworld\n",
    "test/plain.txt": "no annotations at all",
    "test/solo.txt": "only a category",
    "ann/solo.ann": "C113\t04000000\n",
}


def export_every_document(corpus: Path, tmp_path: Path, *args: str) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for doc_id in document_ids(corpus):
        files |= export(corpus, str(doc_id), tmp_path / f"out{doc_id}.zip", *args)
    return files


def test_round_trip_of_a_canonical_archive(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "in.zip", CANONICAL)
    assert is_exchange_archive(archive)
    summary = do_import(archive, tmp_path / "c.sqlite")
    assert (summary.kind, len(summary.documents), summary.parts) == ("exchange", 5, 5)
    assert (summary.categories, summary.extractions, summary.sections, summary.passthrough) == (4, 6, 2, 3)
    assert any("BOM" in w for w in summary.warnings)
    files = export_every_document(tmp_path / "c.sqlite", tmp_path)
    assert files == {name: text.encode() for name, text in CANONICAL.items()}


def test_round_trip_in_utf16(tmp_path: Path) -> None:
    text = "a\U0001f600 b\U0001f600c d"
    source = {"test/e.txt": text, "ann/e.ann": "T1\tX.Y 4 7\tb\U0001f600\nT2\tX.Y 9 10\td\n"}
    do_import(make_zip(tmp_path / "e.zip", source), tmp_path / "c.sqlite", offset_unit="utf16")
    files = export_every_document(tmp_path / "c.sqlite", tmp_path, "--offset-unit", "utf16")
    assert files == {n: t.encode() for n, t in source.items()}
    cp = export_every_document(tmp_path / "c.sqlite", tmp_path, "--offset-unit", "codepoint")
    assert cp["ann/e.ann"] == "T1\tX.Y 3 5\tb\U0001f600\nT2\tX.Y 7 8\td\n".encode()


def test_reader_tolerance_fixtures(tmp_path: Path) -> None:
    big = "x" * 1_000_001
    archive = make_zip(tmp_path / "t.zip", {
        "test/a.txt": "alpha beta",
        # BOM, CRLF, double TABs, a blank line, no final LF
        "ann/a.ann": "\ufeffC1\t\tbreach\r\nT1\t\tG.C 6 10\tbeta\r\n\r\nT2\tG.C 0 5\talpha",
        "test/b.txt": "no ann",
        "test/c.txt": "empty ann",
        "ann/c.ann": "",
        "ann/orphan.ann": "C1\tx\n",
        "ann/layout.lay": "studio layout",
        "__MACOSX/test/._a.txt": b"\x00\x05junk",
        "test/.DS_Store": b"\x00",
        "test/big.txt": big,
    })
    summary = do_import(archive, tmp_path / "c.sqlite")
    assert summary.parts == 4 and summary.extractions == 2 and summary.categories == 1
    assert any("orphan.ann" in w and "without" in w for w in summary.warnings)
    assert any("big.txt" in w and "1000001 bytes" in w for w in summary.warnings)
    assert not any("__MACOSX" in w or "DS_Store" in w or ".lay" in w for w in summary.warnings)
    files = export_every_document(tmp_path / "c.sqlite", tmp_path)
    assert files["ann/a.ann"] == b"C1\tbreach\nT2\tG.C 0 5\talpha\nT1\tG.C 6 10\tbeta\n"
    assert "ann/b.ann" not in files and "ann/c.ann" not in files and files["test/big.txt"] == big.encode()


def test_plain_container_and_archive_without_ann(tmp_path: Path) -> None:
    wrapped = make_zip(tmp_path / "w.zip", {"export/test/a.txt": "one\ntwo", "export/ann/a.ann": "C1\tx\n",
                                            "b.TXT": "three", "img.png": b"\x89PNG"})
    assert not is_exchange_archive(wrapped)
    summary = do_import(wrapped, tmp_path / "c.sqlite")
    assert (summary.kind, len(summary.documents), summary.categories) == ("container", 2, 0)
    assert sum("skipped" in w for w in summary.warnings) == 2
    files = export_every_document(tmp_path / "c.sqlite", tmp_path)
    assert files == {"test/a.txt": b"one\ntwo", "test/b.txt": b"three"}  # no ann/ at all
    no_ann = make_zip(tmp_path / "n.zip", {"test/x.txt": "x"})
    assert do_import(no_ann, tmp_path / "d.sqlite").parts == 1


def test_import_into_one_document_and_xml_export_is_valid(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "in.zip", CANONICAL)
    summary = do_import(archive, tmp_path / "c.sqlite", document="Cookbook", layer="imported")
    assert (len(summary.documents), summary.parts) == (1, 5)
    out = tmp_path / "alto.zip"
    assert main(["-q", "export", "--corpus", str(tmp_path / "c.sqlite"), "--document", "Cookbook",
                 "--layer", "imported", "--format", "alto", "-o", str(out)]) == 0
    assert main(["-q", "verify", str(out)]) == 0
    again = do_import(make_zip(tmp_path / "more.zip", {"test/z.txt": "z"}), tmp_path / "c.sqlite",
                      document="Cookbook", layer="imported")
    # parts added to the existing document: no new document
    assert [(d.id, d.name, d.parts) for d in again.documents] == [(summary.documents[0].id, "Cookbook", 1)]


# --- safety and bad input ------------------------------------------------------------------------


def bomb(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("test/a.txt", "fine")
        zf.writestr("test/bomb.txt", b"\0" * (64 << 20))
    return path


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (bomb, UnsafeArchiveError, "zip bomb"),
        (lambda p: make_zip(p, {"test/a.txt": "a", "../evil.txt": "x"}), UnsafeArchiveError, r"'\.\.'"),
        (lambda p: make_zip(p, {"test/a.txt": "a", "/etc/evil.txt": "x"}), UnsafeArchiveError, "absolute"),
        (lambda p: (p.write_bytes(b"not a zip"), p)[1], PipelineError, "not a readable zip"),
        (lambda p: make_zip(p, {"test/a.txt": "ok", "test/b.txt": b"fine\n\xff\xfe"}), PipelineError,
         r"test/b.txt:2: not valid UTF-8"),
        (lambda p: make_zip(p, {"test/a.txt": "ok", "test/b.txt": "four",
                                "ann/b.ann": "C1\tx\nT1\tA.B 2 9\tz"}), PipelineError,
         r"ann/b.ann:2: offsets 2 9 out of range"),
        (lambda p: make_zip(p, {"test/a.txt": "ok", "ann/a.ann": b"C1\t\xc3"}), PipelineError,
         r"ann/a.ann:1: not valid UTF-8"),
    ],
)
def test_bad_input_is_refused_and_leaves_the_corpus_unchanged(
    tmp_path: Path, build, error: type[Exception], message: str  # noqa: ANN001
) -> None:
    corpus = tmp_path / "c.sqlite"
    do_import(make_zip(tmp_path / "good.zip", {"test/g.txt": "good"}), corpus)
    before = dump(corpus)
    with pytest.raises(error, match=message):
        do_import(build(tmp_path / "bad.zip"), corpus)
    assert dump(corpus) == before


def test_malformed_lines_are_passthrough_with_member_and_line(tmp_path: Path) -> None:
    source = {"test/a.txt": "abc", "ann/a.ann": "C1\tx\nT1 no tab\nT2\tA.B 0 1\ta\n"}
    archive = make_zip(tmp_path / "m.zip", source)
    summary = do_import(archive, tmp_path / "c.sqlite")
    assert any(w.startswith("ann/a.ann:2: unparseable line") for w in summary.warnings)
    files = export_every_document(tmp_path / "c.sqlite", tmp_path)
    assert files["ann/a.ann"] == b"C1\tx\nT2\tA.B 0 1\ta\nT1 no tab\n"


def test_is_exchange_archive_on_non_zip(tmp_path: Path) -> None:
    (tmp_path / "x.zip").write_bytes(b"nope")
    assert not is_exchange_archive(tmp_path / "x.zip")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("test/", "")
    (tmp_path / "dir.zip").write_bytes(buffer.getvalue())
    assert not is_exchange_archive(tmp_path / "dir.zip")  # a directory entry alone holds no text
