"""ALTO export speed from the store (lines/s) against writing the same XML with lxml alone.

``python -m benchmarks.bench_export [--parts N --lines N --repeat N]`` builds a demo corpus
(no images), then times, as medians over ``--repeat`` runs in one process:

- **pipeline**: ``export_document`` end to end: lazy store reads, streaming ALTO writer, deflated
  zip, atomic file;
- **lxml alone**: the same parts already in memory, the same ALTO built as a tree with
  ``lxml.etree`` and serialised to one file per page (no store, no zip): a floor for the XML work.

The ratio is pipeline speed / lxml speed (the floor is 0.5). ``benchmarks/test_micro.py`` times
the writers and the store separately (``make bench``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import anyio
from lxml import etree

from pipeline.demo import build_demo
from pipeline.export import ExportOptions, export_document
from pipeline.formats.xmlutil import alto_points, num
from pipeline.model import Part
from pipeline.select import RegionFilter, layout
from pipeline.store import Corpus

NS = "http://www.loc.gov/standards/alto/ns-v4#"


def build(path: Path, parts: int, lines: int) -> Path:
    build_demo(path, documents=1, parts=parts, lines=lines, image_size=(400, 560), link_images=True)
    return path


async def load_parts(corpus: Corpus) -> tuple[object, list[Part]]:
    document = await corpus.document(1)
    return document, [p async for p in corpus.parts(document, "manual")]


def lxml_alone(parts: list[Part], out_dir: Path) -> None:
    """The same ALTO pages as whole trees with plain lxml, one file each."""
    flt = RegionFilter()
    q = f"{{{NS}}}"
    for part in parts:
        root = etree.Element(q + "alto", nsmap={None: NS})
        desc = etree.SubElement(root, q + "Description")
        etree.SubElement(desc, q + "MeasurementUnit").text = "pixel"
        etree.SubElement(etree.SubElement(desc, q + "sourceImageInformation"), q + "fileName").text = (
            part.image_filename)
        page = etree.SubElement(etree.SubElement(root, q + "Layout"), q + "Page", WIDTH=str(part.width),
                                HEIGHT=str(part.height), PHYSICAL_IMG_NR=str(part.order), ID="eSc_dummypage_")
        space = etree.SubElement(page, q + "PrintSpace", HPOS="0", VPOS="0", WIDTH=str(part.width),
                                 HEIGHT=str(part.height))
        lay = layout(part, flt)
        for region, lines in [*lay.blocks, (None, lay.orphans)]:
            block = etree.SubElement(space, q + "TextBlock", ID=f"b{region.id if region else 'dummy'}")
            if region is not None and region.box:
                etree.SubElement(etree.SubElement(block, q + "Shape"), q + "Polygon",
                                 POINTS=alto_points(region.box))
            for line in lines:
                box = line.box or (0, 0, 0, 0)
                pos = {"HPOS": num(box[0]), "VPOS": num(box[1]), "WIDTH": num(box[2] - box[0]),
                       "HEIGHT": num(box[3] - box[1])}
                tl = etree.SubElement(block, q + "TextLine", ID=f"l{line.id}", **pos)
                if line.baseline:
                    tl.set("BASELINE", alto_points(line.baseline))
                if line.mask:
                    etree.SubElement(etree.SubElement(tl, q + "Shape"), q + "Polygon",
                                     POINTS=alto_points(line.mask))
                etree.SubElement(tl, q + "String", CONTENT=line.text or "", **pos)
        (out_dir / f"{part.order}.xml").write_bytes(
            etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def pipeline_export(corpus_path: Path, out: Path) -> int:
    async def run() -> int:
        with Corpus.open(corpus_path) as corpus:
            document = await corpus.document(1)
            result = await export_document(corpus, document, ExportOptions(format="alto"),
                                           out)
            return result.size

    return anyio.run(run)


def median_time(fn, repeat: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", type=int, default=300)
    ap.add_argument("--lines", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = build(work / "bench.sqlite", args.parts, args.lines)

        async def count() -> tuple[list[Part], int]:
            with Corpus.open(corpus) as c:
                _, parts = await load_parts(c)
                return parts, sum(len(p.lines) for p in parts)

        parts, n_lines = anyio.run(count)
        (work / "lxml").mkdir()
        t_pipe = median_time(lambda: pipeline_export(corpus, work / "out.zip"), args.repeat)
        t_lxml = median_time(lambda: lxml_alone(parts, work / "lxml"), args.repeat)
        print(f"{args.parts} parts, {n_lines} lines, median of {args.repeat}")
        print(f"{'pipeline ALTO export (store -> zip)':40} {t_pipe:8.3f} s {n_lines / t_pipe:12,.0f} lines/s")
        print(f"{'lxml alone (in-memory -> files)':40} {t_lxml:8.3f} s {n_lines / t_lxml:12,.0f} lines/s")
        print(f"{'ratio (pipeline speed / lxml speed)':40} {t_lxml / t_pipe:8.2f}x")


if __name__ == "__main__":
    main()
