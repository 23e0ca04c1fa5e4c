"""The lines export (issue 19): line images with their texts for HTR training, through the CLI."""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import pytest
import pyvips

from pipeline.cli import main
from pipeline.demo import build_demo
from pipeline.model import Line, Part
from pipeline.registry import Registry
from pipeline.sinks.folder import MANIFEST
from pipeline.store import Corpus

FIXTURES = Path(__file__).parent / "fixtures"
SPLITS = ("train", "validation", "test")


def run(*args: str | Path) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 documents x 8 pages x 12 lines: masked, baseline-only, geometry-less and text-less lines."""
    path = tmp_path_factory.mktemp("lines") / "demo.sqlite"
    build_demo(path, documents=2, parts=8, lines=12, image_size=(700, 900))
    return path


def export(corpus: Path, out: Path, *args: str, document: str = "1") -> Path:
    registry = out.parent / "registry.sqlite"
    assert run("export", "--corpus", corpus, "--document", document, "--format", "lines", "-o", out,
               "--registry", registry, *args) == 0
    return out


def read_parts(corpus: Path, document: int, layer: str = "manual") -> dict[int, Part]:
    async def go() -> dict[int, Part]:
        with Corpus.open(corpus) as store:
            doc = await store.document(str(document))
            return {part.id: part async for part in store.parts(doc, layer)}
    return anyio.run(go)


def rows(folder: Path) -> list[dict[str, Any]]:
    """Every metadata row of a dataset folder, with the folder its ``file_name`` is relative to."""
    found = []
    for meta in sorted(folder.rglob("metadata.jsonl")):
        for text in meta.read_text(encoding="utf-8").splitlines():
            found.append(json.loads(text) | {"folder": meta.parent})
    return found


def expected_box(line: Line, part: Part, padding: int) -> tuple[int, int, int, int]:
    """The box the line's polygon implies, computed here independently of the product."""
    if line.mask and len(line.mask) >= 3:
        xs, ys = [p[0] for p in line.mask], [p[1] for p in line.mask]
    else:
        masks = [max(p[1] for p in ln.mask) - min(p[1] for p in ln.mask) for ln in part.lines if ln.mask]
        height = round(statistics.median(masks))
        xs = [p[0] for p in line.baseline]
        base = [p[1] for p in line.baseline]
        ys = [min(base) - height * 0.75, max(base) + height * 0.25]
    return (max(0, math.floor(min(xs)) - padding), max(0, math.floor(min(ys)) - padding),
            min(part.width, math.ceil(max(xs)) + padding), min(part.height, math.ceil(max(ys)) + padding))


def test_every_crop_is_its_line_cut_from_the_page(corpus: Path, tmp_path: Path) -> None:
    """Each crop has the size its polygon implies (+ padding), holds exactly the page's pixels
    there, and has ink in it (the demo draws ink on every line); its .gt.txt is the layer's text."""
    out = export(corpus, tmp_path / "ds", "--unzipped", "--line-padding", "3")
    parts = read_parts(corpus, 1)
    lines = {line.id: (line, part) for part in parts.values() for line in part.lines}
    found = rows(out)
    expected = [ln for ln, _ in lines.values() if ln.text and (ln.mask or ln.baseline)]
    assert sorted(r["line_id"] for r in found) == sorted(ln.id for ln in expected)
    pages: dict[int, pyvips.Image] = {}
    for row in found:
        line, part = lines[row["line_id"]]
        crop = pyvips.Image.new_from_file(str(row["folder"] / row["file_name"]))
        x0, y0, x1, y1 = expected_box(line, part, 3)
        assert (crop.width, crop.height) == (x1 - x0, y1 - y0), row["file_name"]
        assert row["box"] == [x0, y0, x1, y1]
        page = pages.setdefault(part.id, pyvips.Image.new_from_file(part.image_path).copy_memory())
        assert (page.crop(x0, y0, x1 - x0, y1 - y0) - crop).abs().max() == 0, row["file_name"]
        assert crop.min() < 110, f"no ink in {row['file_name']}"  # ink ~70, paper > 180
        gt = row["folder"] / (row["file_name"].removesuffix(".png") + ".gt.txt")
        assert gt.read_bytes() == line.text.encode("utf-8")  # no trailing newline
        assert row["text"] == line.text
        polygon = line.mask if line.mask else None
        if polygon:
            assert row["polygon"] == [[round(x - x0, 2), round(y - y0, 2)] for x, y in polygon]
    summary = json.loads((out / "dataset.json").read_text())
    assert summary["lines"] == len(found) == summary["splits"]["train"]["lines"]
    assert summary["skipped_lines"]["no text"] == sum(1 for ln, _ in lines.values() if not ln.text)
    assert summary["skipped_lines"]["no geometry"] == sum(
        1 for ln, _ in lines.values() if ln.text and not ln.mask and not ln.baseline)
    chars: dict[str, int] = defaultdict(int)
    for row in found:
        for char in row["text"]:
            chars[char] += 1
    assert summary["characters"] == chars


def test_zip_and_folder_hold_the_same_dataset(corpus: Path, tmp_path: Path) -> None:
    archive = export(corpus, tmp_path / "ds.zip", "--split", "0.5,0.25,0.25", "--seed", "3")
    folder = export(corpus, tmp_path / "ds", "--split", "0.5,0.25,0.25", "--seed", "3", "--unzipped")
    with zipfile.ZipFile(archive) as zf:
        assert zf.testzip() is None
        in_zip = {name: zf.read(name) for name in zf.namelist()}
    on_disk = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
               if p.is_file() and p.name != MANIFEST}
    assert in_zip == on_disk
    # the folder's manifest lists every file with its sha256, as sha256sum checks it
    check = subprocess.run(["sha256sum", "--check", "--quiet", "--strict", MANIFEST], cwd=folder)
    assert check.returncode == 0
    assert len((folder / MANIFEST).read_text().splitlines()) == len(on_disk)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pipeline")]
    records = list(Registry(tmp_path / "registry.sqlite").list())
    assert {r.format for r in records} == {"lines"} and {r.state for r in records} == {"complete"}


def test_splits_are_disjoint_and_stable_for_a_seed(corpus: Path, tmp_path: Path) -> None:
    def assignment(name: str, *args: str) -> dict[str, set[tuple[int, int]]]:
        out = tmp_path / name
        run("export", "--corpus", corpus, "--document", "1", "--format", "lines", "-o", out,
            "--unzipped", "--registry", tmp_path / "r.sqlite", *args)
        run("export", "--corpus", corpus, "--document", "2", "--format", "lines", "-o", out / "doc2",
            "--unzipped", "--registry", tmp_path / "r.sqlite", *args)
        pages: dict[str, set[tuple[int, int]]] = defaultdict(set)
        for row in rows(out):
            assert row["folder"].name == row["split"]
            pages[row["split"]].add((row["document_id"], row["part_id"]))
        return pages

    first = assignment("a", "--split", "0.6,0.2,0.2", "--seed", "7")
    again = assignment("b", "--split", "0.6,0.2,0.2", "--seed", "7")
    other = assignment("c", "--split", "0.6,0.2,0.2", "--seed", "8")
    assert first == again
    assert first != other
    assert set(first) == set(SPLITS)  # 16 pages: every split got some
    for a in SPLITS:
        for b in SPLITS:
            if a != b:
                assert not first[a] & first[b]


def test_split_by_document_keeps_documents_whole(corpus: Path, tmp_path: Path) -> None:
    """A job's bulk archive is ONE dataset: splits at the root, each document in one split."""
    config = tmp_path / "job.toml"
    config.write_text(f"""
name = "htr"
corpus = "{corpus}"
registry = "{tmp_path / 'registry.sqlite'}"
[archive]
directory = "{tmp_path / 'out'}"
mode = "bulk"
[[outputs]]
format = "lines"
lines = {{ split = [0.5, 0.0, 0.5], split_by = "document", seed = 1, padding = 2 }}
""")
    assert run("run", config) == 0
    [archive] = (tmp_path / "out").glob("*.zip")
    with zipfile.ZipFile(archive) as zf:
        metas = [n for n in zf.namelist() if n.endswith("metadata.jsonl")]
        by_split = {n.split("/")[0]: {json.loads(t)["document_id"] for t in zf.read(n).decode().splitlines()}
                    for n in metas}
        summary = json.loads(zf.read("dataset.json"))
    assert set().union(*by_split.values()) == {1, 2}
    assert sum(len(docs) for docs in by_split.values()) == 2  # no document in two splits
    assert summary["options"]["lines"]["split_by"] == "document"
    assert sum(s["documents"] for s in summary["splits"].values()) == 2


def test_hugging_face_imagefolder_reads_the_folder(corpus: Path, tmp_path: Path) -> None:
    """``datasets.load_dataset("imagefolder", data_dir=...)`` offline, in a process of its own."""
    pytest.importorskip("datasets")
    out = export(corpus, tmp_path / "ds", "--unzipped", "--split", "0.6,0.2,0.2", "--seed", "7")
    summary = json.loads((out / "dataset.json").read_text())
    script = """
import json, sys
from datasets import load_dataset
ds = load_dataset("imagefolder", data_dir=sys.argv[1])
print(json.dumps({name: {"n": len(split), "texts": split["text"][:3], "first": split[0]["line_id"],
                         "size": list(split[0]["image"].size), "columns": split.column_names}
                  for name, split in ds.items()}))
"""
    env = os.environ | {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
                        "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets")}
    done = subprocess.run([sys.executable, "-c", script, str(out)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert {name: value["n"] for name, value in loaded.items()} == {
        name: split["lines"] for name, split in summary["splits"].items() if split["lines"]}
    by_id = {row["line_id"]: row for row in rows(out)}
    for value in loaded.values():
        assert {"image", "text", "line_id", "polygon", "region_type"} <= set(value["columns"])
        row = by_id[value["first"]]
        assert value["texts"][0] == row["text"]
        assert value["size"] == [row["box"][2] - row["box"][0], row["box"][3] - row["box"][1]]


def test_a_real_export_gives_one_crop_per_line_with_text(tmp_path: Path) -> None:
    """eScriptorium's ALTO of a real letter, read directly: one crop per line with text."""
    fixture = FIXTURES / "escriptorium-alto-cremma-mss-20"
    out = tmp_path / "ds"
    assert run("export", "--source", fixture, "--format", "lines", "--unzipped", "-o", out,
               "--line-mask", "white", "--normalize", "NFD") == 0
    from lxml import etree

    texts = []
    for xml in sorted(fixture.glob("*.xml")):
        for line in etree.parse(str(xml)).iter("{*}TextLine"):
            content = " ".join(s.get("CONTENT", "") for s in line.iter("{*}String"))
            if content.strip():
                texts.append(content)
    found = rows(out)
    import unicodedata

    assert sorted(r["text"] for r in found) == sorted(unicodedata.normalize("NFD", t) for t in texts)
    assert len(found) == len(texts) > 30
    for row in found:
        crop = pyvips.Image.new_from_file(str(row["folder"] / row["file_name"]))
        assert crop.width > 50 and crop.height > 10
        assert crop.min() < 100  # ink of a real handwritten line
        assert crop.getpoint(0, 0) == [255.0] * crop.bands or _inside(row["polygon"], 0.5, 0.5)
    assert json.loads((out / "dataset.json").read_text())["normalization"] == "NFD"


def _inside(polygon: list[list[float]], x: float, y: float) -> bool:
    inside = False
    for (ax, ay), (bx, by) in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        if (ay > y) != (by > y) and x < ax + (y - ay) * (bx - ax) / (by - ay):
            inside = not inside
    return inside


def test_transparent_mask_blanks_outside_the_polygon(corpus: Path, tmp_path: Path) -> None:
    out = export(corpus, tmp_path / "ds", "--unzipped", "--line-mask", "transparent", "--line-padding", "4",
                 "--image-format", "webp", "--image-quality", "90")
    for row in rows(out)[:20]:
        crop = pyvips.Image.new_from_file(str(row["folder"] / row["file_name"]))
        assert row["file_name"].endswith(".webp") and crop.bands == 4
        assert crop.getpoint(0, 0)[3] == 0  # the padding lies outside the line's polygon
        cx = sum(p[0] for p in row["polygon"]) / len(row["polygon"])
        cy = sum(p[1] for p in row["polygon"]) / len(row["polygon"])
        if _inside(row["polygon"], cx, cy):
            assert crop.getpoint(int(cx), int(cy))[3] == 255


def test_bad_geometry_is_skipped_and_reported(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                              ) -> None:
    """Lines outside the image or with fewer than 2 points give no crop and are counted."""
    copy = tmp_path / "demo.sqlite"
    shutil.copy(corpus, copy)
    shutil.copytree(corpus.with_suffix(".media"), copy.with_suffix(".media"))
    parts = read_parts(copy, 1)
    texted = [ln for p in parts.values() for ln in p.lines if ln.text and ln.mask][:4]
    with sqlite3.connect(copy) as db:
        db.execute("UPDATE core_line SET mask = ?, baseline = ? WHERE id = ?",
                   ("[[5000,5000],[5100,5000],[5100,5050]]", "[[5000,5040],[5100,5040]]", texted[0].id))
        db.execute("UPDATE core_line SET mask = NULL, baseline = ? WHERE id = ?", ("[[10,10]]", texted[1].id))
        db.execute("UPDATE core_line SET mask = ?, baseline = NULL WHERE id = ?", ("[[10,10],[20,20]]",
                                                                                   texted[2].id))
        db.execute("UPDATE core_line SET mask = ?, baseline = NULL WHERE id = ?",
                   ("[[-300,-300],[-100,-300],[-100,-200]]", texted[3].id))
    before = rows(export(corpus, tmp_path / "before", "--unzipped"))
    capsys.readouterr()
    after = rows(export(copy, tmp_path / "after", "--unzipped"))
    assert {r["line_id"] for r in before} - {r["line_id"] for r in after} == {ln.id for ln in texted}
    summary = json.loads((tmp_path / "after" / "dataset.json").read_text())
    base = json.loads((tmp_path / "before" / "dataset.json").read_text())["skipped_lines"]
    assert summary["skipped_lines"]["outside the image"] == base.get("outside the image", 0) + 2
    assert summary["skipped_lines"]["fewer than 2 points"] == base.get("fewer than 2 points", 0) + 2
    err = capsys.readouterr().err
    assert "2 outside the image" in err and "2 fewer than 2 points" in err


def test_filters_confidence_types_length_and_regions(corpus: Path, tmp_path: Path) -> None:
    layer = "kraken:catmus-medieval-1.5"
    out = export(corpus, tmp_path / "ds", "--unzipped", "--layer", layer, "--min-confidence", "0.8",
                 "--min-length", "12", "--regions", "Main", "--line-types", "Main")
    found = rows(out)
    parts = read_parts(corpus, 1, layer)
    lines = {ln.id: ln for p in parts.values() for ln in p.lines}
    assert found
    for row in found:
        line = lines[row["line_id"]]
        assert line.confidence is not None and line.confidence >= 0.8 and row["confidence"] == line.confidence
        assert len(line.text) >= 12 and row["region_type"] == "Main" and row["layer"] == layer
    skipped = json.loads((out / "dataset.json").read_text())["skipped_lines"]
    assert skipped["low confidence"] > 0 and skipped["no confidence"] > 0


def test_bad_options_are_one_line_exit_2(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    base = ["export", "--corpus", str(corpus), "--document", "1", "--format", "lines", "-o", str(tmp_path)]
    cases = [(["--split", "0.8,0.2"], "three numbers"), (["--line-types", "Nope"], "unknown line"),
             (["--line-mask", "transparent", "--image-format", "jpeg"], "transparency"),
             (["--line-padding", "-1"], "negative"), (["--unzipped", "--format", "alto"], "not for the alto")]
    for extra, words in cases:
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())


def test_a_missing_image_fails_or_is_skipped(corpus: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "demo.sqlite"
    shutil.copy(corpus, copy)
    shutil.copytree(corpus.with_suffix(".media"), copy.with_suffix(".media"))
    victim = next(iter(read_parts(copy, 1).values()))
    Path(victim.image_path).unlink()
    out = tmp_path / "out"
    out.mkdir()
    assert main(["export", "--corpus", str(copy), "--document", "1", "--format", "lines", "--unzipped",
                 "-o", str(out / "ds")]) == 1
    assert "image file not found" in capsys.readouterr().err
    assert list(out.iterdir()) == []  # no folder, no partial one
    assert main(["export", "--corpus", str(copy), "--document", "1", "--format", "lines", "--unzipped",
                 "-o", str(out / "ds"), "--on-error", "skip"]) == 1
    summary = json.loads((out / "ds" / "dataset.json").read_text())
    assert [p["part_id"] for p in summary["skipped_pages"]] == [victim.id]
    assert victim.id not in {r["part_id"] for r in rows(out / "ds")}


def test_a_job_writes_dataset_folders_and_skips_them_unchanged(corpus: Path, tmp_path: Path) -> None:
    """One folder per document (no extension), recognised as unchanged on the next run."""
    config = tmp_path / "job.toml"
    config.write_text(f"""
name = "htr"
corpus = "{corpus}"
registry = "{tmp_path / 'registry.sqlite'}"
[archive]
directory = "{tmp_path / 'out'}"
[select]
changed_only = true
[[outputs]]
format = "lines"
lines = {{ unzipped = true, split = "0.8,0.1,0.1", types = ["Main", "undefined"], normalize = "NFD" }}
""")
    assert run("run", config) == 0
    folders = sorted(p for p in (tmp_path / "out").iterdir() if p.is_dir())
    assert len(folders) == 2 and all("." not in p.name for p in folders)
    for folder in folders:
        assert rows(folder) and (folder / "dataset.json").is_file()
    report = json.loads(next((tmp_path / "out").glob("*-report.json")).read_text())
    assert len(report["exported"]) == 2
    assert run("run", config) == 0
    report = json.loads(next((tmp_path / "out").glob("*-report.json")).read_text())
    assert len(report["exported"]) == 0 and len(report["skipped"]) == 2
    assert sorted(p for p in (tmp_path / "out").iterdir() if p.is_dir()) == folders
