"""Lines export benchmark (issue 19): speed against a Pillow loop, and memory on a giant page.

``python -m benchmarks.bench_lines [--pages 40] [--size 4000x3000] [--lines 30] [--giant 20000x30000]
[--giant-lines 2000] [--work DIR] [--quick]``

1. speed: ``pipeline export --format lines`` (a zip, and a folder with ``--unzipped``) against
   ``benchmarks/pillow_lines.py`` (open each page, crop each line, save PNG + ``.gt.txt``: Pillow's
   default PNG level 6, and level 3 as the export uses) on the same pages and the same boxes;
   every contender is a whole process (start-up included), timed from fork to exit, runs
   alternating. Floor: the export's lines per second >= 2x the default Pillow loop's.
2. memory: the export of one 20,000 x 30,000 px JPEG page with 2,000 lines; peak RSS of its
   process <= 150 MB; and the peak RSS of the speed corpus's export at a tenth of its pages
   against all of them (flat: about 1x).

Data generation is never timed. One run each by default (``--repeat N`` for more); the machine is
shared, so wall times are noisy: CPU times are printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import anyio
import pyvips

from benchmarks.compare import ROOT, spawn
from pipeline.demo import build_demo
from pipeline.formats.lines import LineTypeFilter, plan_page
from pipeline.linecrops import PNG_COMPRESSION
from pipeline.options import LineOptions
from pipeline.select import RegionFilter
from pipeline.store import Corpus

SPEED_FLOOR = 2.0
RSS_FLOOR_MB = 150.0


def pipeline_bin() -> str:
    return str(Path(sys.executable).with_name("pipeline"))


def speed_corpus(work: Path, pages: int, lines: int, size: tuple[int, int]) -> Path:
    path = work / "speed" / "corpus.sqlite"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        build_demo(path, documents=1, parts=pages, lines=lines, image_size=size, image_format="jpeg", seed=8)
        os.sync()
    return path


def giant_corpus(work: Path, width: int, height: int, lines: int) -> Path:
    """One JPEG page of ``width`` x ``height`` with ``lines`` lines in 4 columns, ink on each line,
    drawn by a lazy libvips pipeline (never whole in memory)."""
    path = work / f"giant-{width}x{height}-{lines}" / "corpus.sqlite"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    columns, per_column = 4, -(-lines // 4)
    x_start, col_pitch = round(width * 0.04), round(width * 0.92 / columns)
    col_width = col_pitch - round(width * 0.02)
    y_start, pitch = round(height * 0.02), height * 0.96 / per_column
    mask_h = max(4, round(pitch * 0.8))
    with Corpus.open(path, create=True) as corpus, corpus.transaction() as w:
        doc = w.add_document("giant")
        layer = w.add_layer(doc, "manual")
        part = w.add_part(doc, 0, "documents/1/giant.jpg", width=width, height=height)
        order = 0
        for c in range(columns):
            x0 = x_start + c * col_pitch
            block = w.add_block(part, c, ((x0, y_start), (x0 + col_width, y_start),
                                          (x0 + col_width, height - y_start), (x0, height - y_start)))
            for i in range(per_column):
                if order == lines:
                    break
                top = round(y_start + i * pitch)
                mask = ((x0, top), (x0 + col_width, top), (x0 + col_width, top + mask_h), (x0, top + mask_h))
                base = top + round(mask_h * 0.8)
                line = w.add_line(part, order, ((x0, base), (x0 + col_width, base)), mask, block)
                w.add_text(line, layer, f"column {c + 1} line {i + 1} in principio erat verbum")
                order += 1
        image = corpus.media_root / "documents/1/giant.jpg"
    image.parent.mkdir(parents=True, exist_ok=True)
    xyz = pyvips.Image.xyz(width, height)
    x, y = xyz[0], xyz[1]
    in_column = ((x - x_start) % col_pitch < col_width) & (x >= x_start) & (x < x_start + columns * col_pitch)
    row = (y - y_start) % round(pitch)
    ink = in_column & (row > round(mask_h * 0.3)) & (row < round(mask_h * 0.8)) & ((x // 23) % 5 != 0)
    page = ink.ifthenelse([40, 35, 30], [225, 215, 190]).cast("uchar")
    page.write_to_file(str(image), Q=85)
    os.sync()
    return path


def pillow_plan(corpus: Path, out: Path) -> int:
    """The boxes the export cuts, for the Pillow loop; returns the number of lines."""
    async def go() -> list[dict[str, object]]:
        options = LineOptions()
        pages = []
        with Corpus.open(corpus) as store:
            doc = await store.document("1")
            types = LineTypeFilter.parse(None, doc)
            async for part in store.parts(doc, "manual"):
                plan = plan_page(part, doc, RegionFilter(), types, options)
                pages.append({"image": part.image_path,
                              "lines": [[*c.box, c.stem, c.text] for c in plan.crops]})
        return pages

    pages = anyio.run(go)
    out.write_text(json.dumps(pages))
    return sum(len(p["lines"]) for p in pages)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_lines")
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--size", default="4000x3000")
    parser.add_argument("--lines", type=int, default=30, help="lines per page of the speed corpus")
    parser.add_argument("--giant", default="20000x30000")
    parser.add_argument("--giant-lines", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--work", type=Path, help="keep corpora here between runs (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.pages, args.size, args.lines, args.giant, args.giant_lines = 4, "800x600", 10, "2000x3000", 200
    width, height = map(int, args.size.split("x"))
    gw, gh = map(int, args.giant.split("x"))
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-lines-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, work, (width, height), (gw, gh))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path, size: tuple[int, int], giant: tuple[int, int]) -> int:
    corpus = speed_corpus(work, args.pages, args.lines, size)
    plan = work / "plan.json"
    lines = pillow_plan(corpus, plan)
    out = work / "out"
    registry = work / "registry.sqlite"
    export = [pipeline_bin(), "-q", "export", "--corpus", str(corpus), "--document", "1", "--format", "lines",
              "--registry", str(registry)]
    contenders = {
        "pipeline export (zip)": [*export, "-o", str(out / "ds.zip")],
        "pipeline export --unzipped": [*export, "--unzipped", "-o", str(out / "ds")],
        "Pillow loop, PNG level 6 (ref)": [sys.executable, "-m", "benchmarks.pillow_lines", str(plan),
                                           str(out / "pillow")],
        "Pillow loop, PNG level 3": [sys.executable, "-m", "benchmarks.pillow_lines", str(plan),
                                     str(out / "pillow"), str(PNG_COMPRESSION)],
    }
    times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in contenders}
    for _ in range(args.repeat):
        for name, command in contenders.items():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            times[name].append(spawn([command], work))
    print(f"speed: {args.pages} pages of {size[0]}x{size[1]} JPEG, {lines} lines, {args.repeat} run(s) each; "
          f"cwd {ROOT}")
    print(f"{'contender':<34} {'wall s':>8} {'cpu s':>7} {'lines/s':>9} {'vs ref':>7} {'peak RSS MB':>12}")
    ref = statistics.median(t[0] for t in times["Pillow loop, PNG level 6 (ref)"])
    for name, runs in times.items():
        wall = statistics.median(t[0] for t in runs)
        cpu = statistics.median(t[1] for t in runs)
        rss = max(t[2] for t in runs)
        print(f"{name:<34} {wall:>8.2f} {cpu:>7.2f} {lines / wall:>9.1f} {ref / wall:>6.2f}x {rss:>12.0f}")
    speed = ref / statistics.median(t[0] for t in times["pipeline export (zip)"])
    few = max(1, args.pages // 10)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    small = spawn([[*export, "--parts", f"1-{few}", "-o", str(out / "few.zip")]], work)[2]
    big = max(t[2] for t in times["pipeline export (zip)"])
    print(f"memory by page count: {few} pages {small:.0f} MB, {args.pages} pages {big:.0f} MB "
          f"({big / small:.2f}x)")

    gcorpus = giant_corpus(work, *giant, args.giant_lines)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    gexport = [pipeline_bin(), "-q", "export", "--corpus", str(gcorpus), "--document", "1", "--format",
               "lines", "--registry", str(registry), "-o", str(out / "giant.zip")]
    wall, cpu, rss = spawn([gexport], work)
    print(f"memory: one {giant[0]}x{giant[1]} JPEG page, {args.giant_lines} lines: {wall:.1f} s wall, "
          f"{cpu:.1f} s cpu, peak RSS {rss:.0f} MB")
    ok_speed, ok_rss = speed >= SPEED_FLOOR, rss <= RSS_FLOOR_MB
    print(f"floor: lines/s vs Pillow loop (zip)  {speed:.2f}x  >= {SPEED_FLOOR}x  "
          f"{'yes' if ok_speed else 'MISSED'}")
    print(f"floor: giant page peak RSS         {rss:.0f} MB  <= {RSS_FLOOR_MB:.0f} MB  "
          f"{'yes' if ok_rss else 'MISSED'}")
    return 0 if args.quick or (ok_speed and ok_rss) else 1


if __name__ == "__main__":
    sys.exit(main())
