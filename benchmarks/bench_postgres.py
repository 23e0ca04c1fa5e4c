"""The same ALTO export from eScriptorium's PostgreSQL and from the SQLite corpus.

``python -m benchmarks.bench_postgres [--parts 300] [--lines 20] [--repeat 5] [--rss 100,5000]``
starts its own PostgreSQL cluster (``tests/pgcluster.py``), builds the same demo document in both
stores (never timed), then measures, each contender in a child process of its own (peak RSS read
with ``os.wait4`` by a bare launcher, as ``benchmarks.compare`` does):

1. speed: ALTO without images of one ``--parts`` document, median of ``--repeat`` runs, from SQLite
   and from PostgreSQL, alternated (each run in a fresh child after one untimed run there); the
   ratio is SQLite's time over PostgreSQL's (target >= 0.8). The image size cache is warmed first
   (a nightly run has it; the very first run reads every image header);
2. memory: peak RSS of the PostgreSQL export of a document of each ``--rss`` size (target: the
   largest within 1.10x of the smallest);
3. statements: what the reader ran per export, counted by ``pg_stat_statements``, against
   five statements per page of parts (16 parts, then 64 a page) plus a constant.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import anyio

from benchmarks.compare import spawn
from pipeline.demo import build_demo
from pipeline.export import ExportOptions, export_document
from pipeline.imagesizes import ImageSizeCache
from pipeline.logcontext import configure_logging
from pipeline.memory import bound_heap
from pipeline.sources.postgres import FIRST_PAGE, PART_PAGE, PostgresSource
from pipeline.store import Corpus
from tests.pgcluster import READER, PgCluster, demo_database

PAGE_SIZE = (400, 560)


def child(spec: str, result: Path) -> None:
    """Export document 1 to ALTO ``repeat`` times from ``corpus`` (a file or a URL); write the times."""
    job = json.loads(spec)
    bound_heap()  # as the CLI does
    configure_logging(logging.ERROR)  # the demo's warnings are not what is measured
    out = Path(job["out"])
    options = ExportOptions(format="alto")

    async def once() -> None:
        if job["corpus"].startswith("postgresql://"):
            with PostgresSource(
                job["corpus"], media_root=job["media_root"], sizes=ImageSizeCache(job["cache"])
            ) as source:
                document = await source.document(1)
                await export_document(source, document, options, out)
        else:
            with Corpus.open(job["corpus"], readonly=True) as corpus:
                document = await corpus.document(1)
                await export_document(corpus, document, options, out)

    if job.get("warm"):
        anyio.run(once)
        out.unlink()
    times = []
    for _ in range(job["repeat"]):
        os.sync()
        start = time.perf_counter()
        anyio.run(once)
        times.append(time.perf_counter() - start)
        out.unlink()
    result.write_text(json.dumps(times))


def measure(
    corpus: str, work: Path, repeat: int, media_root: Path | None = None, *, warm: bool = False
) -> tuple[list[float], float]:
    """Run times and peak RSS (MB) of a child exporting document 1 of ``corpus`` (after an
    untimed run with ``warm``: what a first export in a process pays once is not compared)."""
    result = work / f"result-{time.monotonic_ns()}.json"
    job = {
        "corpus": corpus,
        "media_root": str(media_root) if media_root else None,
        "repeat": repeat,
        "warm": warm,
        "out": str(work / "out.zip"),
        "cache": str(work / "sizes.sqlite"),
    }
    argv = [sys.executable, "-m", "benchmarks.bench_postgres", "--child", json.dumps(job), str(result)]
    *_, rss = spawn([argv], work)
    return json.loads(result.read_text()), rss


def pages(parts: int) -> int:
    """Pages of parts a document of ``parts`` parts of a few lines is read in."""
    return 1 + math.ceil(max(0, parts - FIRST_PAGE) / PART_PAGE)


def statements_of(cluster: PgCluster, db: str, url: str, work: Path, media: Path) -> int:
    """Statements the reader ran for one export (connections, transactions and the schema check
    included), counted by pg_stat_statements."""
    statements(cluster, db)
    measure(url, work, 1, media)
    return statements(cluster, db)


def statements(cluster: PgCluster, db: str) -> int:
    with cluster.connect(db) as conn:
        (calls,) = conn.execute(
            "SELECT COALESCE(SUM(s.calls), 0) FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid"
            " JOIN pg_database d ON d.oid = s.dbid WHERE r.rolname = %s AND d.datname = %s",
            (READER, db),
        ).fetchone()
        conn.execute("SELECT pg_stat_statements_reset()")
    return int(calls)


def database(cluster: PgCluster, name: str, work: Path, parts: int, lines: int) -> tuple[str, Path]:
    store = demo_database(
        cluster,
        name,
        work / name,
        documents=1,
        parts=parts,
        lines=lines,
        image_size=PAGE_SIZE,
        link_images=True,
    )
    with cluster.connect(name) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    assert store.media_root is not None
    return store.corpus, store.media_root


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_postgres", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--parts", type=int, default=300)
    parser.add_argument("--lines", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rss", default="100,5000", help="document sizes (parts) for peak RSS")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return 0
    command = shlex.join(
        ["python", "-m", "benchmarks.bench_postgres", *(sys.argv[1:] if argv is None else argv)]
    )
    sizes = [int(n) for n in args.rss.split(",")]
    cluster = PgCluster().start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp:
            work = Path(tmp)
            sqlite_path = work / "corpus.sqlite"
            build_demo(
                sqlite_path,
                documents=1,
                parts=args.parts,
                lines=args.lines,
                image_size=PAGE_SIZE,
                link_images=True,
            )
            url, media = database(cluster, "speed", work, args.parts, args.lines)
            measure(url, work, 1, media)  # warms the image size cache
            statements(cluster, "speed")
            pg_calls = statements_of(cluster, "speed", url, work, media)
            pg_times, sqlite_times = [], []
            for _ in range(args.repeat):  # alternated, so both see the same load on the machine
                sqlite_times += measure(str(sqlite_path), work, 1, warm=True)[0]
                pg_times += measure(url, work, 1, media, warm=True)[0]
            rows = []
            for n in sizes:
                size_url, size_media = database(cluster, f"rss{n}", work, n, args.lines)
                measure(size_url, work, 1, size_media)  # warm cache, then the measured run
                statements(cluster, f"rss{n}")
                times, rss = measure(size_url, work, 1, size_media)
                rows.append((n, times[0], rss, statements(cluster, f"rss{n}")))
    finally:
        cluster.stop()
    pg, sq = statistics.median(pg_times), statistics.median(sqlite_times)
    print(f"$ {command}   (load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    print(f"ALTO, no images, 1 document of {args.parts} parts x {args.lines} lines, median of {args.repeat}:")
    print(f"  SQLite      {sq:7.3f} s   runs {' '.join(f'{t:.3f}' for t in sqlite_times)}")
    print(f"  PostgreSQL  {pg:7.3f} s   runs {' '.join(f'{t:.3f}' for t in pg_times)}")
    print(f"  speed PostgreSQL / SQLite = {sq / pg:.2f}  (target >= 0.80)")
    print(
        f"  statements per export: {pg_calls}  ({pages(args.parts)} pages of parts x 5 = "
        f"{pages(args.parts) * 5}, + connections, transactions, document)"
    )
    print("peak RSS of the PostgreSQL export by document size:")
    for n, seconds, rss, calls in rows:
        print(
            f"  {n:6d} parts  {rss:7.1f} MB  {seconds:7.2f} s  {calls} statements "
            f"({pages(n)} pages x 5 = {pages(n) * 5})"
        )
    print(
        f"  RSS ratio {rows[-1][0]} / {rows[0][0]} parts = {rows[-1][2] / rows[0][2]:.3f}  (target <= 1.10)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
