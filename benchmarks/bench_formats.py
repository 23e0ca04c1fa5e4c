"""TEI, IIIF and hOCR export speed and memory against the ALTO export of the same corpus.

``python -m benchmarks.bench_formats [--parts N] [--lines N] [--repeat N] [--small N] [--large N]
[--quick] [--json FILE]`` builds its corpora in a temporary folder (never timed), then runs each
export in a child process of its own (``benchmarks.compare``'s launcher reads its peak RSS with
``os.wait4``), with the CLI's allocator settings:

1. **speed**: one document of ``--parts`` parts (no images), each format exported ``--repeat``
   times; lines/s from the median, and the ratio to ALTO's lines/s (floor: 0.8). TEI runs twice:
   one pass over the source with the text spooled to a temporary file, and two passes.
2. **memory**: each format (TEI in both ways, and TEI with pass-through images, which spools the
   facsimile too) on a document of ``--small`` and of ``--large`` parts; the ratio of the peak
   RSS (floor: 1.10, flat).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.compare import spawn

#: (label, format, TEI passes, extra options)
CONTENDERS = (
    ("alto", "alto", 1, ()),
    ("tei, text spooled", "tei", 1, ()),
    ("tei, two passes", "tei", 2, ()),
    ("iiif", "iiif", 1, ()),
    ("hocr", "hocr", 1, ()),
)
MEMORY_EXTRA = (("tei + images, spooled", "tei", 1, ("images",)),)
SPEED_FLOOR, RSS_FLOOR = 0.8, 1.10


def build(path: Path, parts: int, lines: int) -> Path:
    from pipeline.demo import build_demo

    build_demo(path, documents=1, parts=parts, lines=lines, image_size=(400, 560), link_images=True)
    os.sync()
    return path


def child(spec: str, result: Path) -> None:
    """Export ``repeat`` times in this process (after imports); write the wall times to ``result``."""
    job = json.loads(spec)
    import anyio

    from pipeline.export import ExportOptions, export_document
    from pipeline.memory import bound_heap
    from pipeline.sources import open_source
    from pipeline.writers import stream

    bound_heap()
    stream.TWO_PASSES = job["passes"] == 2
    options = ExportOptions(format=job["format"], images="images" in job["extra"])
    out = Path(job["out"])

    async def once() -> None:
        with open_source(Path(job["corpus"])) as source:
            document = await source.document(1)
            await export_document(source, document, options, out)

    times = []
    for _ in range(job["repeat"]):
        os.sync()
        start = time.perf_counter()
        anyio.run(once)
        times.append(time.perf_counter() - start)
        out.unlink()
    result.write_text(json.dumps(times))


@dataclass(slots=True)
class Run:
    label: str
    seconds: float
    rss_mb: float


def measure(label: str, fmt: str, passes: int, extra: tuple[str, ...], corpus: Path, repeat: int,
            work: Path) -> Run:
    result = work / f"result-{time.monotonic_ns()}.json"
    spec = {"format": fmt, "passes": passes, "extra": list(extra), "corpus": str(corpus),
            "out": str(work / "out.zip"), "repeat": repeat}
    argv = [sys.executable, "-m", "benchmarks.bench_formats", "--child", json.dumps(spec), str(result)]
    *_, rss = spawn([argv], work)
    return Run(label, statistics.median(json.loads(result.read_text())), rss)


def lines_of(corpus: Path) -> int:
    import sqlite3

    with sqlite3.connect(corpus) as db:
        return db.execute("SELECT count(*) FROM core_line").fetchone()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", type=int, default=300)
    ap.add_argument("--lines", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--small", type=int, default=100)
    ap.add_argument("--large", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="a smoke run: tiny corpora, one run each")
    ap.add_argument("--json", type=Path, help="also save the results here")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    if args.quick:
        args.parts, args.lines, args.repeat, args.small, args.large = 12, 10, 1, 4, 12
    results: dict[str, object] = {"load": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-formats-") as tmp:
        work = Path(tmp)
        speed_corpus = build(work / "speed.sqlite", args.parts, args.lines)
        n_lines = lines_of(speed_corpus)
        print(f"1. speed: {args.parts} parts, {n_lines:,} lines, no images, median of {args.repeat} "
              f"(load {os.getloadavg()[0]:.2f})")
        print(f"{'format':26} {'median s':>9} {'lines/s':>12} {'vs ALTO':>8} {'peak RSS MB':>12}")
        speed = [measure(label, fmt, passes, extra, speed_corpus, args.repeat, work)
                 for label, fmt, passes, extra in CONTENDERS]
        alto_rate = n_lines / speed[0].seconds
        rows = []
        for run in speed:
            rate = n_lines / run.seconds
            rows.append({"label": run.label, "seconds": run.seconds, "lines_per_s": rate,
                         "vs_alto": rate / alto_rate, "rss_mb": run.rss_mb})
            ratio = rate / alto_rate
            print(f"{run.label:26} {run.seconds:9.3f} {rate:12,.0f} {ratio:7.2f}x {run.rss_mb:12.0f}")
        results["speed"] = rows

        small = build(work / "small.sqlite", args.small, args.lines // 2 or 1)
        large = build(work / "large.sqlite", args.large, args.lines // 2 or 1)
        print(f"\n2. memory: {args.small} vs {args.large} parts, {args.lines // 2 or 1} lines each, one run")
        print(f"{'format':26} {'RSS small':>10} {'RSS large':>10} {'ratio':>7} {'s large':>8}")
        memory = []
        for label, fmt, passes, extra in CONTENDERS + MEMORY_EXTRA:
            a = measure(label, fmt, passes, extra, small, 1, work)
            b = measure(label, fmt, passes, extra, large, 1, work)
            memory.append({"label": label, "rss_small_mb": a.rss_mb, "rss_large_mb": b.rss_mb,
                           "ratio": b.rss_mb / a.rss_mb, "seconds_large": b.seconds})
            ratio = b.rss_mb / a.rss_mb
            print(f"{label:26} {a.rss_mb:10.0f} {b.rss_mb:10.0f} {ratio:6.2f}x {b.seconds:8.2f}")
        results["memory"] = memory

    print("\nfloor                                  measured    target    met")
    for row in rows[1:]:
        met = "yes" if row["vs_alto"] >= SPEED_FLOOR else "NO"
        print(f"{row['label'] + ' lines/s vs ALTO':38} {row['vs_alto']:7.2f}x   >= {SPEED_FLOOR:.2f}x  {met}")
    for row in memory:
        met = "yes" if row["ratio"] <= RSS_FLOOR else "NO"
        print(f"{row['label'] + ' RSS large/small':38} {row['ratio']:7.2f}x   <= {RSS_FLOOR:.2f}x  {met}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
