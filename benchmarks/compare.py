"""One run, every comparison: the pipeline against Info-ZIP, a plain pyvips loop, lxml alone and
the naive exporter, as median seconds, throughput, speed ratios and peak RSS in one table.

``python -m benchmarks.compare [--quick] [--parts N] [--images N] [--megapixels M] [--repeat N]
[--giant WxH] [--json FILE]`` builds its own corpora in a temporary folder (never timed), then runs
each contender in a child process that does nothing else: the child times its runs after its
imports and set-up, and a bare launcher reads the child's peak RSS and CPU time with ``os.wait4``,
so nothing outside Python is needed (no ``/usr/bin/time``) except Info-ZIP for its own row, which is
skipped with a message when ``zip`` is absent. Dirty pages are written out (``os.sync``) before
each timed run, so no run pays for the disk writes of the one before. Other processes on the
machine skew the times: the load average is printed with the table.

1. pass-through export (ALTO + original images) vs ``zip -0 -q`` over the same image files;
2. JPEG -> JPEG transcoding export vs a sequential pyvips loop with the same settings;
3. ALTO export without images vs the same XML written with lxml alone;
4. one giant TIFF exported as JPEG, for peak RSS; 5. a document of 100 vs 2,000 parts, for peak RSS;

each also against the naive exporter (``benchmarks.baselines.naive``). A speed ratio is the
baseline's median time over the contender's: above 1 the contender is faster.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import anyio
import pyvips

from benchmarks.baselines import naive
from benchmarks.bench_export import load_parts, lxml_alone
from benchmarks.bench_images import make_tiff, sequential_loop
from pipeline.demo import build_demo
from pipeline.export import Destination, ExportOptions, export_document
from pipeline.images import ImageOptions, configure_vips
from pipeline.logcontext import configure_logging
from pipeline.memory import bound_heap
from pipeline.model import Part
from pipeline.store import Corpus

ROOT = Path(__file__).resolve().parents[1]
QUALITY = 85
LINES = 40
MANY_LINES = 20
MANY_PAGE = (600, 800)
ALTO_PAGE = (1240, 1754)
NAIVE = "naive"


@dataclass(frozen=True, slots=True)
class Sizes:
    """What one run measures; ``--quick`` shrinks everything so the script runs in seconds."""

    parts: int
    images: int
    megapixels: float
    repeat: int
    giant: tuple[int, int]
    many: tuple[int, int]

    @property
    def page(self) -> tuple[int, int]:
        """A 3:4 portrait page of about ``megapixels``."""
        width = round(math.sqrt(self.megapixels * 1e6 * 3 / 4))
        return width, round(width * 4 / 3)


FULL = Sizes(parts=300, images=40, megapixels=12, repeat=5, giant=(20_000, 30_000), many=(100, 2000))
QUICK = Sizes(parts=20, images=4, megapixels=0.5, repeat=1, giant=(2000, 3000), many=(20, 100))


# --- contenders, each run in a child process -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Job:
    """One contender on one corpus. ``images``: None (no images), ``original`` or ``jpeg``."""

    contender: str
    corpus: str
    out: str
    images: str | None
    repeat: int


def pipeline_export(corpus: Path, out: Path, images: str | None) -> None:
    """``export_document`` end to end, as the CLI calls it (without the registry)."""
    image = ImageOptions(format="jpeg", quality=QUALITY) if images == "jpeg" else ImageOptions()
    options = ExportOptions(format="alto", images=images is not None, image=image)

    async def run() -> None:
        with Corpus.open(corpus) as store:
            document = await store.document(1)
            await export_document(store, document, options, Destination("file", out))

    anyio.run(run)


def naive_export(corpus: Path, out: Path, images: str | None) -> None:
    fmt = images.upper() if images not in (None, "original") else None
    naive.export(corpus, 1, out, images=images is not None, image_format=fmt, quality=QUALITY)


def image_paths(corpus: Path) -> list[Path]:
    return [page.image for page in naive.load_document(corpus, 1, "manual")]


def prepare(job: Job) -> Callable[[], object]:
    """The contender's timed call; whatever it needs first (loading, listing) is done here, untimed."""
    corpus, out = Path(job.corpus), Path(job.out)
    if job.contender == "pipeline":
        bound_heap()  # as the CLI does
        return lambda: pipeline_export(corpus, out, job.images)
    if job.contender == NAIVE:
        return lambda: naive_export(corpus, out, job.images)
    out.mkdir(parents=True, exist_ok=True)
    if job.contender == "lxml":
        async def load() -> list[Part]:
            with Corpus.open(corpus) as store:
                return (await load_parts(store))[1]

        parts = anyio.run(load)
        return lambda: lxml_alone(parts, out)
    if job.contender == "vips-loop":
        configure_vips()
        paths, options = image_paths(corpus), ImageOptions(format="jpeg", quality=QUALITY)
        return lambda: sequential_loop(paths, out, options)
    raise ValueError(f"unknown contender {job.contender!r}")


def child(spec: str, result: Path) -> None:
    """Run one job ``repeat`` times; write the wall and CPU (all threads) seconds to ``result``."""
    job = Job(**json.loads(spec))
    fn = prepare(job)
    times, cpu = [], []
    for _ in range(job.repeat):
        os.sync()  # no run pays for the writes of the one before
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        if Path(job.out).is_file():
            Path(job.out).unlink()
    result.write_text(json.dumps({"times": times, "cpu": cpu}))


# --- measuring -------------------------------------------------------------------------------


@dataclass(slots=True)
class Measure:
    """Wall and CPU seconds of each run and peak RSS of one contender, or why it was skipped."""

    label: str
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss_mb: float | None = None
    skipped: str = ""


#: Forks and waits for the measured command, then writes its wall time and ``ru_maxrss``. Linux
#: carries the forking process's peak RSS across ``exec``, so the command must be forked from this
#: bare interpreter (a few MB), never from the benchmark process itself (which holds the corpora).
LAUNCHER = """
import os, sys, time
report, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as fh:
    fh.write(f"{time.perf_counter() - start} {usage.ru_utime + usage.ru_stime} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def spawn(argv: Sequence[str], work: Path) -> tuple[float, float, float]:
    """Run ``argv`` to completion; its wall and CPU time (s) and its own peak RSS (MB)."""
    report = work / f"launch-{time.monotonic_ns()}.txt"
    status = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, str(report), *argv], cwd=ROOT).returncode
    if status:
        raise SystemExit(f"compare: {shlex.join(argv[:4])} ... failed with status {status}")
    seconds, cpu, maxrss = report.read_text().split()
    # ru_maxrss is KiB on Linux, bytes on macOS
    return float(seconds), float(cpu), int(maxrss) / (1 << 20 if sys.platform == "darwin" else 1 << 10)


def measure(label: str, job: Job, work: Path) -> Measure:
    result = work / f"result-{time.monotonic_ns()}.json"
    argv = [sys.executable, "-m", "benchmarks.compare", "--child", json.dumps(asdict(job)), str(result)]
    *_, rss = spawn(argv, work)
    runs = json.loads(result.read_text())
    return Measure(label, runs["times"], runs["cpu"], rss)


def measure_zip(files: Sequence[Path], out: Path, repeat: int, work: Path) -> Measure:
    """Info-ZIP ``zip -0 -q`` over the files, one process per run (its start-up is part of its cost)."""
    label = "zip -0 -q"
    exe = shutil.which("zip")
    if exe is None:
        return Measure(label, skipped="skipped: Info-ZIP `zip` is not installed")
    result = Measure(label, rss_mb=0.0)
    for _ in range(repeat):
        out.unlink(missing_ok=True)
        os.sync()
        seconds, cpu, rss = spawn([exe, "-0", "-q", "-j", str(out), *map(str, files)], work)
        result.times.append(seconds)
        result.cpu.append(cpu)
        result.rss_mb = max(result.rss_mb or 0.0, rss)
    out.unlink(missing_ok=True)
    return result


# --- corpora (never timed) -------------------------------------------------------------------


def build_giant(path: Path, width: int, height: int) -> Path:
    """A one-part corpus whose page is a ``width`` x ``height`` TIFF written strip by strip."""
    path.parent.mkdir(parents=True)
    with Corpus.open(path, create=True) as corpus, corpus.transaction() as w:
        doc = w.add_document("giant")
        layer = w.add_layer(doc, "manual")
        part = w.add_part(doc, 0, "documents/1/giant.tif", width=width, height=height)
        block = w.add_block(part, 0, ((0, 0), (width, 0), (width, height), (0, height)))
        line = w.add_line(part, 0, ((width * 0.1, height / 2), (width * 0.9, height / 2)), None, block)
        w.add_text(line, layer, "one giant page")
        tiff = corpus.media_root / "documents/1/giant.tif"
    tiff.parent.mkdir(parents=True)
    make_tiff(tiff, width, height)
    os.sync()  # see demo()
    return path


def demo(path: Path, parts: int, lines: int, size: tuple[int, int], *, link: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    build_demo(path, documents=1, parts=parts, lines=lines, image_size=size, image_format="jpeg", seed=8,
               link_images=link)
    os.sync()  # the corpus's dirty pages would otherwise reach the disk during the timed runs
    return path


# --- rows and floors -------------------------------------------------------------------------


@dataclass(slots=True)
class Result:
    """One line of the table. Ratios are speeds: baseline median time / this median time.

    ``cores`` is CPU time over wall time: how many cores the contender kept busy.
    """

    row: str
    contender: str
    runs: int = 0
    seconds: float | None = None
    throughput: str = ""
    cores: float | None = None
    vs_ref: float | None = None
    vs_naive: float | None = None
    rss_mb: float | None = None
    note: str = ""


def row_results(
    row: str, work: float, unit: str, measures: Sequence[Measure], ref: str | None
) -> list[Result]:
    """Table lines for one row: medians, throughput and ratios against ``ref`` and the naive exporter."""
    medians = {m.label: statistics.median(m.times) for m in measures if m.times}
    results = []
    for m in measures:
        seconds = medians.get(m.label)
        label = f"{m.label} (ref)" if m.label == ref else m.label
        if seconds is None:
            results.append(Result(row, label, note=m.skipped))
            continue
        results.append(Result(
            row, label, runs=len(m.times), seconds=seconds, throughput=f"{work / seconds:,.1f} {unit}",
            cores=sum(m.cpu) / sum(m.times),
            vs_ref=medians[ref] / seconds if ref in medians else None,
            vs_naive=medians[NAIVE] / seconds if NAIVE in medians else None, rss_mb=m.rss_mb,
        ))
    return results


@dataclass(slots=True)
class Floor:
    """A target from the issue: met, missed, or None when it could not be measured."""

    name: str
    measured: str
    target: str
    met: bool | None


def ratio_floor(name: str, results: list[Result], ref: str, *, floor: float, inverse: bool = False) -> Floor:
    """A speed floor of the pipeline against ``ref``; ``inverse`` states it as a time ratio instead."""
    pipeline = next(r for r in results if r.contender == "pipeline")
    reference = next(r for r in results if r.contender.startswith(ref))
    if pipeline.seconds is None or reference.seconds is None:
        return Floor(name, reference.note or "not measured", "", None)
    speed = reference.seconds / pipeline.seconds
    if inverse:
        return Floor(name, f"{1 / speed:.2f}x the time", f"<= {1 / floor:.2f}x", speed >= floor)
    return Floor(name, f"{speed:.2f}x the speed", f">= {floor:.2f}x", speed >= floor)


def rss_of(results: list[Result], contender: str) -> float:
    rss = next(r.rss_mb for r in results if r.contender.startswith(contender))
    assert rss is not None
    return rss


# --- the run ---------------------------------------------------------------------------------


def run(sizes: Sizes, work: Path) -> tuple[list[Result], list[Floor]]:
    """Build the corpora, measure every contender, and return the table and the floors."""
    out = work / "out"
    out.mkdir()
    repeat = sizes.repeat

    def job(contender: str, corpus: Path, images: str | None, runs: int = repeat) -> Job:
        suffix = ".zip" if contender in ("pipeline", NAIVE) else ""  # the others write a folder
        return Job(contender, str(corpus), str(out / f"{contender}-{corpus.stem}{suffix}"), images, runs)

    results: list[Result] = []
    floors: list[Floor] = []

    pages = demo(work / "pages" / "pages.sqlite", sizes.images, LINES, sizes.page, link=False)
    files = image_paths(pages)
    megabytes = sum(f.stat().st_size for f in files) / 1e6
    what = f"{len(files)} x {sizes.megapixels:g} MP JPEG"

    rows = row_results(f"1. pass-through, {what}", megabytes, "MB/s", [
        measure("pipeline", job("pipeline", pages, "original"), work),
        measure_zip(files, out / "zip0.zip", repeat, work),
        measure(NAIVE, job(NAIVE, pages, "original"), work),
    ], ref="zip -0 -q")
    floors.append(ratio_floor("pass-through export vs zip -0", rows, "zip", floor=1.0, inverse=True))
    results += rows

    pixels = len(files) * sizes.page[0] * sizes.page[1] / 1e6
    rows = row_results(f"2. JPEG -> JPEG q{QUALITY}, {what}", pixels, "MP/s", [
        measure("pipeline", job("pipeline", pages, "jpeg"), work),
        measure("vips-loop", job("vips-loop", pages, "jpeg"), work),
        measure(NAIVE, job(NAIVE, pages, "jpeg"), work),
    ], ref="vips-loop")
    floors.append(ratio_floor("transcoding vs sequential pyvips loop", rows, "vips-loop", floor=1.3))
    results += rows

    alto = demo(work / "alto" / "alto.sqlite", sizes.parts, LINES, ALTO_PAGE, link=True)
    rows = row_results(f"3. ALTO only, {sizes.parts} parts", sizes.parts * LINES, "lines/s", [
        measure("pipeline", job("pipeline", alto, None), work),
        measure("lxml", job("lxml", alto, None), work),
        measure(NAIVE, job(NAIVE, alto, None), work),
    ], ref="lxml")
    floors.append(ratio_floor("ALTO export vs lxml alone", rows, "lxml", floor=0.5))
    results += rows

    width, height = sizes.giant
    giant = build_giant(work / "giant" / "giant.sqlite", width, height)
    rows = row_results(f"4. {width}x{height} TIFF -> JPEG", width * height / 1e6, "MP/s", [
        measure("pipeline", job("pipeline", giant, "jpeg", 1), work),
        measure(NAIVE, job(NAIVE, giant, "jpeg", 1), work),
    ], ref=None)
    pipeline_rss, naive_rss = rss_of(rows, "pipeline"), rss_of(rows, NAIVE)
    floors.append(Floor("giant TIFF peak RSS, pipeline", f"{pipeline_rss:.0f} MB", "<= 150 MB",
                        pipeline_rss <= 150))
    floors.append(Floor("giant TIFF peak RSS, naive", f"{naive_rss:.0f} MB", "> 1024 MB", naive_rss > 1024))
    results += rows

    peaks = []
    for parts in sizes.many:
        many = demo(work / f"many{parts}" / f"many{parts}.sqlite", parts, MANY_LINES, MANY_PAGE, link=True)
        rows = row_results(f"5. {parts} parts, JPEG q{QUALITY}", parts, "parts/s", [
            measure("pipeline", job("pipeline", many, "jpeg", 1), work),
            measure(NAIVE, job(NAIVE, many, "jpeg", 1), work),
        ], ref=None)
        peaks.append(rss_of(rows, "pipeline"))
        results += rows
    small, big = sizes.many
    growth = peaks[1] / peaks[0]
    floors.append(Floor(f"pipeline peak RSS, {big} vs {small} parts", f"{growth:.2f}x", "<= 1.10x (flat)",
                        growth <= 1.10))
    return results, floors


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table(results: Sequence[Result], floors: Sequence[Floor]) -> str:
    lines = [f"{'row':<36} {'contender':<16} {'runs':>4} {'median s':>9} {'throughput':>18} "
             f"{'cores':>5} {'vs ref':>7} {'vs naive':>8} {'peak RSS MB':>11}"]
    previous = ""
    for r in results:
        name, previous = ("" if r.row == previous else r.row), r.row
        if r.seconds is None:
            lines.append(f"{name:<36} {r.contender:<16} {r.note}")
            continue
        lines.append(
            f"{name:<36} {r.contender:<16} {r.runs:>4} {r.seconds:>9.3f} {r.throughput:>18} "
            f"{_num(r.cores, '.2f'):>5} {_num(r.vs_ref, '.2f'):>7} {_num(r.vs_naive, '.2f'):>8} "
            f"{_num(r.rss_mb, '.0f'):>11}"
        )
    lines += ["", f"{'floor':<44} {'measured':<20} {'target':<16} met"]
    for f in floors:
        met = "skipped" if f.met is None else "yes" if f.met else "MISSED"
        lines.append(f"{f.name:<44} {f.measured:<20} {f.target:<16} {met}")
    return "\n".join(lines)


def machine() -> dict[str, str]:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return {
        "cores": str(os.cpu_count()),
        "memory": f"{memory:.0f} GB",
        "python": platform.python_version(),
        "libvips": ".".join(str(pyvips.version(i)) for i in range(3)),
        "platform": platform.platform(),
    }


def parse_size(spec: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)[xX](\d+)", spec)
    if not m or not int(m[1]) or not int(m[2]):
        raise argparse.ArgumentTypeError(f"{spec!r} is not WIDTHxHEIGHT, e.g. 20000x30000")
    return int(m[1]), int(m[2])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one run each: a smoke run")
    parser.add_argument("--parts", type=int, help=f"parts of the ALTO row (default {FULL.parts})")
    parser.add_argument("--images", type=int, help=f"pages of the image rows (default {FULL.images})")
    parser.add_argument("--megapixels", type=float, help=f"size of those pages (default {FULL.megapixels})")
    parser.add_argument("--repeat", type=int, help=f"runs per contender, rows 1-3 (default {FULL.repeat})")
    parser.add_argument("--giant", type=parse_size, metavar="WxH", help="giant TIFF (default 20000x30000)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also save the results as JSON")
    parser.add_argument("--child", nargs=2, metavar=("JOB", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        configure_logging(logging.ERROR)  # the demo's deliberately odd lines warn on every export
        child(args.child[0], Path(args.child[1]))
        return 0
    base = QUICK if args.quick else FULL
    sizes = Sizes(
        parts=args.parts or base.parts, images=args.images or base.images,
        megapixels=args.megapixels or base.megapixels, repeat=args.repeat or base.repeat,
        giant=args.giant or base.giant, many=base.many,
    )
    info = machine()
    command = shlex.join(["python", "-m", "benchmarks.compare", *(sys.argv[1:] if argv is None else argv)])
    print(f"{command}\n{info['cores']} cores, {info['memory']}, Python {info['python']}, "
          f"libvips {info['libvips']}, {info['platform']}", flush=True)
    start, load = time.perf_counter(), [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="compare-") as tmp:
        results, floors = run(sizes, Path(tmp))
    load.append(os.getloadavg()[0])
    print()
    print(table(results, floors))
    elapsed = time.perf_counter() - start
    print(f"\nspeed ratios: baseline median time / contender median time (> 1 = faster); "
          f"total {elapsed:.0f} s; load average (1 min) {load[0]:.2f} before, {load[1]:.2f} after")
    if args.quick:
        print("--quick: sizes too small for the floors to mean anything")
    if args.json:
        args.json.write_text(json.dumps({
            "command": command, "machine": info, "sizes": asdict(sizes), "seconds": elapsed, "load": load,
            "results": [asdict(r) for r in results], "floors": [asdict(f) for f in floors],
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
