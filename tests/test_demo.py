"""The demo corpus: mirrored tables, every content case, consistent geometry, determinism."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import pyvips

from pipeline.demo import build_demo, parse_image_size
from pipeline.errors import UsageError
from pipeline.model import bbox

CORE_TABLES = {
    "core_document", "core_documentpart", "core_documentparttype", "core_block", "core_line",
    "core_transcription", "core_linetranscription", "core_blocktype", "core_linetype",
    "core_document_valid_block_types", "core_document_valid_line_types", "core_metadata",
    "core_documentmetadata", "core_documentpartmetadata", "core_annotationtype",
    "core_annotationtaxonomy", "core_annotationcomponent", "core_annotationtaxonomy_components",
    "core_textannotation", "core_textannotationcomponentvalue", "core_imageannotation",
    "core_documenttag", "core_document_tags",
}  # fmt: skip


@contextlib.contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        yield conn


def scalar(conn: sqlite3.Connection, sql: str) -> object:
    return conn.execute(sql).fetchone()[0]


def test_mirrored_and_project_tables_exist(demo_corpus: Path) -> None:
    with connect(demo_corpus) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = {row[1] for row in conn.execute("PRAGMA table_info(core_linetranscription)")}
    assert CORE_TABLES | {"pipeline_meta", "pipeline_image_size"} <= tables
    assert {"graphs", "versions", "avg_confidence", "content"} <= columns


@pytest.mark.parametrize(
    ("what", "sql"),
    [
        ("untyped region", "core_block WHERE typology_id IS NULL"),
        ("region of a type outside the ontology", """core_block b
            JOIN core_documentpart p ON p.id = b.document_part_id WHERE NOT EXISTS (SELECT 1
            FROM core_document_valid_block_types v WHERE v.document_id = p.document_id
            AND v.blocktype_id = b.typology_id) AND b.typology_id IS NOT NULL"""),
        ("region without lines",
         "core_block WHERE id NOT IN (SELECT block_id FROM core_line WHERE block_id IS NOT NULL)"),
        ("orphan line", "core_line WHERE block_id IS NULL"),
        ("mask-less line", "core_line WHERE mask IS NULL AND baseline IS NOT NULL"),
        ("line without geometry", "core_line WHERE mask IS NULL AND baseline IS NULL"),
        ("empty text", "core_linetranscription WHERE content = ''"),
        ("confidence 0.0", "core_linetranscription WHERE avg_confidence = 0.0"),
        ("confidence NULL", "core_linetranscription WHERE avg_confidence IS NULL"),
        ("Hebrew", "core_linetranscription WHERE content LIKE '%ב%'"),
        ("Arabic", "core_linetranscription WHERE content LIKE '%ٱ%'"),
        ("combining accent", "core_linetranscription WHERE content LIKE '%' || char(769) || '%'"),
        ("emoji", "core_linetranscription WHERE content LIKE '%🐟%'"),
        ("XML specials in text", """core_linetranscription WHERE content LIKE '%&%'
            AND content LIKE '%<%' AND content LIKE '%>%' AND content LIKE '%"%' AND content LIKE '%''%'"""),
        ("XML specials in names", """core_document d JOIN core_documentpart p
            ON p.document_id = d.id WHERE d.name LIKE '%&%<%"%''%' AND p.name LIKE '%&%<%"%''%'"""),
        ("empty external id", "core_block WHERE external_id = ''"),
        ("numeric external id", "core_line WHERE external_id = '12'"),
        ("NULL external id", "core_line WHERE external_id IS NULL"),
        ("duplicated external id", """(SELECT document_part_id FROM core_line
            GROUP BY document_part_id, external_id HAVING COUNT(*) > 1)"""),
        ("line type outside the ontology", """core_line l JOIN core_documentpart p
            ON p.id = l.document_part_id WHERE l.typology_id IS NOT NULL AND NOT EXISTS (SELECT 1
            FROM core_document_valid_line_types v WHERE v.document_id = p.document_id
            AND v.linetype_id = l.typology_id)"""),
        ("non-NCName external id", "core_line WHERE external_id GLOB '[0-9]*'"),
        ("line with a baseline and no mask", "core_line WHERE baseline IS NOT NULL AND mask IS NULL"),
        ("layer named after a model", "core_transcription WHERE name = 'kraken:catmus-medieval-1.5'"),
        ("layer named after an import", "core_transcription WHERE name LIKE 'Zip import ____-__-__ __:__'"),
        ("a page with a block type and a line type of the same id", """core_line l
            JOIN core_block b ON b.document_part_id = l.document_part_id
            JOIN core_linetype lt ON lt.id = l.typology_id
            JOIN core_blocktype bt ON bt.id = b.typology_id WHERE lt.id = bt.id AND lt.name <> bt.name"""),
        ("annotation across lines", "core_textannotation WHERE start_line_id <> end_line_id"),
        ("annotation value", "core_textannotationcomponentvalue"),
        ("tag", "core_document_tags"),
        ("document metadata", "core_documentmetadata"),
        ("part metadata", "core_documentpartmetadata"),
        ("empty original filename", "core_documentpart WHERE original_filename = ''"),
        ("same base name, other extension", """core_documentpart a JOIN core_documentpart b
            ON a.document_id = b.document_id AND a.original_filename = 'f003.jpg'
            AND b.original_filename = 'f003.png'"""),
        ("IIIF source", "core_documentpart WHERE source LIKE 'https://%/iiif/%'"),
        ("part without stored size", """core_documentpart p
            LEFT JOIN pipeline_image_size s ON s.part_id = p.id WHERE s.part_id IS NULL"""),
        ("archived layer", "core_transcription WHERE archived"),
    ],
)
def test_content_case_present(demo_corpus: Path, what: str, sql: str) -> None:
    with connect(demo_corpus) as conn:
        assert scalar(conn, f"SELECT COUNT(*) FROM {sql}"), what


def test_each_layer_misses_lines_the_other_has(demo_corpus: Path) -> None:
    with connect(demo_corpus) as conn:
        per_layer = dict(
            conn.execute(
                """SELECT t.name, COUNT(lt.id) FROM core_transcription t
                   LEFT JOIN core_linetranscription lt ON lt.transcription_id = t.id
                   WHERE t.document_id = 1 GROUP BY t.name"""
            )
        )
        lines = scalar(
            conn, "SELECT COUNT(*) FROM core_line l JOIN core_documentpart p ON p.id = l.document_part_id"
            " WHERE p.document_id = 1"
        )
    assert lines == 4 * 12
    assert 0 < per_layer["manual"] < lines and 0 < per_layer["kraken:catmus-medieval-1.5"] < lines


def test_type_tables_numbered_from_1_as_escriptorium_seeds_them(demo_corpus: Path) -> None:
    """eScriptorium's migrations seed four block types and four line types, each table from id 1;
    other types come after. Only some are valid for a document; others are used anyway."""
    with connect(demo_corpus) as conn:
        blocks = conn.execute("SELECT id, name FROM core_blocktype ORDER BY id").fetchall()
        lines = conn.execute("SELECT id, name FROM core_linetype ORDER BY id").fetchall()
        valid_lines = {n for (n,) in conn.execute("""SELECT t.name FROM core_document_valid_line_types v
            JOIN core_linetype t ON t.id = v.linetype_id WHERE v.document_id = 1""")}
    assert blocks[:4] == [(1, "Title"), (2, "Main"), (3, "Commentary"), (4, "Illustration")]
    assert lines[:4] == [(1, "Main"), (2, "Numbering"), (3, "Correction"), (4, "Signature")]
    assert "Main" in valid_lines and "Interlinear" not in valid_lines


def test_demo_page_export_names_each_line_type_not_its_region_type(demo_corpus: Path, tmp_path: Path) -> None:
    """End to end on the demo's overlapping ids: every PAGE line names its own line type."""
    import re
    import zipfile

    from lxml import etree

    from pipeline.cli import main

    out = tmp_path / "page.zip"
    assert main(["export", "--corpus", str(demo_corpus), "--document", "1", "--format", "page",
                 "-o", str(out)]) == 0
    with connect(demo_corpus) as conn:
        expected = dict(conn.execute("""SELECT l.external_id, t.name FROM core_line l
            JOIN core_linetype t ON t.id = l.typology_id JOIN core_documentpart p ON p.id = l.document_part_id
            WHERE p.document_id = 1 AND l.external_id LIKE 'eSc_line_%'
            GROUP BY l.external_id HAVING COUNT(*) = 1"""))
    seen = {}
    with zipfile.ZipFile(out) as zf:
        for name in zf.namelist():
            if name.endswith(".xml") and name != "METS.xml":
                for line in etree.fromstring(zf.read(name)).iter("{*}TextLine"):
                    if line.get("id") in expected:
                        custom = line.get("custom")
                        seen[line.get("id")] = re.fullmatch(r"structure \{type:(.*);\}", custom)[1]
    assert len(seen) > 20 and seen == {k: expected[k] for k in seen}


def test_geometry_is_consistent(demo_corpus: Path) -> None:
    with connect(demo_corpus) as conn:
        blocks = {
            bid: (part, json.loads(box))
            for bid, part, box in conn.execute("SELECT id, document_part_id, box FROM core_block")
        }
        rows = conn.execute(
            'SELECT document_part_id, block_id, "order", baseline, mask FROM core_line'
            ' ORDER BY document_part_id, "order"'
        ).fetchall()
    assert blocks and rows
    for _, box in blocks.values():
        assert len(box) >= 3
        x0, y0, x1, y1 = bbox(box)
        assert 0 <= x0 < x1 <= 600 and 0 <= y0 < y1 <= 800
    last_y: dict[int | None, float] = {}
    for part, block, _, baseline, mask in rows:
        points = [*(json.loads(baseline) if baseline else []), *(json.loads(mask) if mask else [])]
        if mask:
            assert len(json.loads(mask)) >= 3
        if not points:
            continue
        x0, y0, x1, y1 = bbox(points)
        assert 0 <= x0 <= x1 <= 600 and 0 <= y0 <= y1 <= 800
        if block is not None:
            bx0, by0, bx1, by1 = bbox(blocks[block][1])
            assert blocks[block][0] == part and bx0 <= x0 and x1 <= bx1 and by0 <= y0 and y1 <= by1
        if baseline:
            y = json.loads(baseline)[0][1]
            key = (part, block)
            assert y > last_y.get(key, -1)  # reading order: top to bottom within a region
            last_y[key] = y


def test_images_look_like_pages(demo_corpus: Path) -> None:
    media = demo_corpus.parent / "demo.media"
    with connect(demo_corpus) as conn:
        images = [image for (image,) in conn.execute("SELECT image FROM core_documentpart")]
        mask = json.loads(scalar(conn, "SELECT mask FROM core_line WHERE mask IS NOT NULL ORDER BY id"))
    assert all(i.startswith("documents/") and (media / i).is_file() for i in images)
    page = pyvips.Image.new_from_file(str(media / images[0]))
    assert (page.width, page.height, page.bands) == (600, 800, 3)
    x0, y0, x1, y1 = (int(v) for v in bbox(mask))
    margin = page.crop(0, 0, 20, 20).avg()
    assert margin > 180  # paper, not noise
    assert page.crop(x0, y0, x1 - x0, y1 - y0).avg() < margin - 20  # ink where the line is


def _dump(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return list(conn.iterdump())


def _images(path: Path) -> dict[str, bytes]:
    media = path.parent / f"{path.stem}.media"
    return {str(f.relative_to(media)): f.read_bytes() for f in sorted(media.rglob("*")) if f.is_file()}


def test_same_seed_same_corpus_other_seed_other_corpus(tmp_path: Path) -> None:
    options = {"documents": 1, "parts": 3, "lines": 8, "image_size": (200, 280), "image_format": "png"}
    paths = [tmp_path / name / "demo.sqlite" for name in ("a", "b", "c")]
    for path, seed in zip(paths, (7, 7, 8), strict=True):
        path.parent.mkdir()
        build_demo(path, seed=seed, **options)
    assert _dump(paths[0]) == _dump(paths[1])
    assert _images(paths[0]) == _images(paths[1])
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert _dump(paths[0]) != _dump(paths[2])


@pytest.mark.parametrize("image_format", ["png", "tiff", "webp"])
def test_other_image_formats(tmp_path: Path, image_format: str) -> None:
    summary = build_demo(tmp_path / "c.sqlite", documents=1, parts=2, lines=3, image_size=(120, 160),
                         image_format=image_format)  # fmt: skip
    files = sorted((summary.media_root / "documents").rglob("*.*"))
    assert len(files) == 2 and summary.images == 2
    assert pyvips.Image.new_from_file(str(files[0])).get("vips-loader").startswith(image_format[:3])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"documents": 0},
        {"parts": -1},
        {"lines": "3"},
        {"image_size": (10, 10)},
        {"image_format": "gif"},
        {"lines": 200, "image_size": (200, 280)},
        {"seed": 1.5},
    ],
)
def test_bad_arguments_are_usage_errors(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        build_demo(tmp_path / "c.sqlite", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "c.sqlite").exists()


def test_refuses_to_overwrite(demo_corpus: Path) -> None:
    before = demo_corpus.read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        build_demo(demo_corpus)
    assert demo_corpus.read_bytes() == before


def test_parse_image_size() -> None:
    assert parse_image_size("1240x1754") == (1240, 1754)
    for bad in ("1240", "x", "12x-3", "axb"):
        with pytest.raises(UsageError, match="WIDTHxHEIGHT"):
            parse_image_size(bad)


def test_parts_get_their_own_image_files_unless_linking_is_asked(tmp_path: Path) -> None:
    def inodes(name: str, link: bool) -> set[int]:
        (tmp_path / name).mkdir()
        summary = build_demo(tmp_path / name / "c.sqlite", documents=1, parts=4, lines=3,
                             image_size=(120, 160), link_images=link)  # fmt: skip
        return {f.stat().st_ino for f in summary.media_root.rglob("*.jpg")}

    assert len(inodes("copied", False)) == 4
    assert len(inodes("linked", True)) == 2


def test_demo_creates_the_folder_of_a_new_corpus(tmp_path: Path) -> None:
    from pipeline.cli import main

    corpus = tmp_path / "new" / "folder" / "c.sqlite"
    assert main(["demo", str(corpus), "--documents", "1", "--parts", "1", "--lines", "6"]) == 0
    assert corpus.is_file() and (tmp_path / "new" / "folder" / "c.media").is_dir()


def test_largest_documented_image_size_builds_in_flat_memory(tmp_path: Path) -> None:
    """20000x20000 is inside the documented limit: it must build (it overflowed ``randbytes``),
    without a whole-page buffer in Python (400 MB per copy at that size)."""
    import os
    import subprocess
    import sys

    corpus = tmp_path / "big.sqlite"
    command = [sys.executable, "-m", "pipeline.cli", "demo", str(corpus), "--documents", "1", "--parts", "1",
               "--lines", "20", "--image-size", "20000x20000"]
    errors = tmp_path / "stderr.txt"
    with errors.open("wb") as stderr:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
        child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 0, errors.read_text()
    assert usage.ru_maxrss < 400 * 1024, f"peak RSS {usage.ru_maxrss // 1024} MB"
    with connect(corpus) as conn:
        image = scalar(conn, "SELECT image FROM core_documentpart ORDER BY id")
        mask = json.loads(scalar(conn, "SELECT mask FROM core_line WHERE mask IS NOT NULL ORDER BY id"))
    page = pyvips.Image.new_from_file(str(tmp_path / "big.media" / image))
    assert (page.width, page.height, page.bands) == (20000, 20000, 3)
    x0, y0, x1, y1 = (int(v) for v in bbox(mask))
    margin = page.crop(0, 0, 200, 200).avg()
    assert margin > 180 and page.crop(x0, y0, x1 - x0, y1 - y0).avg() < margin - 20


def test_demo_command_prints_a_human_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    corpus = tmp_path / "c.sqlite"
    assert main(["demo", str(corpus), "--documents", "2", "--parts", "3", "--lines", "8",
                 "--image-size", "200x280"]) == 0
    printed = capsys.readouterr().out
    assert printed == (f"{corpus}: 2 documents (ids 1, 2), 6 parts, 48 lines; "
                       f"images in {tmp_path / 'c.media'} (2 drawn, copied for the other parts)\n")
