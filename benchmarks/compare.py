"""One run, every comparison: the pipeline against Info-ZIP, a plain pyvips loop, lxml alone and
the naive exporter, as median and min-max seconds, throughput, speed ratios and peak RSS in one
table, then the floors; the exit status is 1 when a floor is missed.

``python -m benchmarks.compare [--quick] [--parts N] [--images N] [--megapixels M] [--repeat N]
[--giant WxH] [--json FILE] [--floor NAME=VALUE ...]`` builds its own corpora in a temporary
folder (never timed), then measures each contender two ways:

* **in process**: the contender runs in a child process that does nothing else and times its runs
  after its imports and set-up (what the code costs);
* **whole process**: the command as a user runs it, timed from fork to exit, start-up included
  (``pipeline export ...`` against ``zip -0`` followed by ``sync`` of its output, and against a
  pyvips loop script that fsyncs its outputs: the same durability as the export, which syncs its
  archive). These runs are interleaved (A, B, A, B, ...) so a change in the machine's load hits
  every contender alike.

A bare launcher forks each process and reads its peak RSS and CPU time with ``os.wait4``, so
nothing outside Python is needed except Info-ZIP for its own rows, which are skipped with a message
when ``zip`` is absent. Dirty pages are written out (``os.sync``) before each timed run, so no run
pays for the disk writes of the one before. Other processes on the machine skew the times: the
load average is printed with the table.

0. start-up: ``pipeline --version`` against ``python -c pass``, whole process;
1. pass-through export (ALTO + original images) vs ``zip -0 -q`` over the same image files;
2. JPEG -> JPEG transcoding export vs a sequential pyvips loop with the same settings;
3. ALTO export without images vs the same XML written with lxml alone, in process;
4. one giant TIFF exported as JPEG, for peak RSS; 5. a document of 100 vs 2,000 parts, for peak RSS;

each also against the naive exporter (``benchmarks.baselines.naive``) in process. A speed ratio is
the reference's median time over the contender's: above 1 the contender is faster. The floors
(``TARGETS``) are judged on medians: the speed floors of rows 1 and 2 and the start-up on the
whole-process runs, the ALTO floor in process (its reference exists only as a function), the
memory floors on the peak RSS of the export's process. ``--floor NAME=VALUE`` sets a floor's
limit; a ``--quick`` run's sizes are too small for the floors to mean anything, so it fails only
on the floors given with ``--floor``.
"""

from __future__ import annotations

import argparse
import compileall
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import anyio
import pyvips

from benchmarks.baselines import naive
from benchmarks.bench_export import load_parts, lxml_alone
from benchmarks.bench_images import make_tiff, sequential_loop
from pipeline.demo import build_demo
from pipeline.export import ExportOptions, export_document
from pipeline.images import FAIL_ON, ImageOptions, configure_vips
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
#: runs of the start-up row: each is a fraction of a second
STARTUP_RUNS = 20


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
            await export_document(store, document, options, out)

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


#: Forks and waits for each measured command in turn (JSON list of argv lists; it stops at the
#: first failure), then writes their total wall and CPU time and the highest ``ru_maxrss``. Linux
#: carries the forking process's peak RSS across ``exec``, so the commands must be forked from this
#: bare interpreter (a few MB), never from the benchmark process itself (which holds the corpora).
LAUNCHER = """
import json, os, sys, time
report, commands = sys.argv[1], json.loads(sys.argv[2])
cpu = maxrss = 0
start = time.perf_counter()
for argv in commands:
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    cpu, maxrss = cpu + usage.ru_utime + usage.ru_stime, max(maxrss, usage.ru_maxrss)
    if status:
        break
with open(report, "w") as fh:
    fh.write(f"{time.perf_counter() - start} {cpu} {maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def spawn(commands: Sequence[Sequence[str]], work: Path) -> tuple[float, float, float]:
    """Run the commands one after the other, from fork to exit; their wall and CPU time (s) and the
    highest peak RSS (MB) of any of them. Their standard output is discarded."""
    report = work / f"launch-{time.monotonic_ns()}.txt"
    argvs = json.dumps([list(map(str, c)) for c in commands])
    launch = [sys.executable, "-S", "-c", LAUNCHER, str(report), argvs]
    status = subprocess.run(launch, cwd=ROOT, stdout=subprocess.DEVNULL).returncode
    if status:
        failed = " && ".join(shlex.join(map(str, c[:6])) for c in commands)
        raise SystemExit(f"compare: {failed} ... failed with status {status}")
    seconds, cpu, maxrss = report.read_text().split()
    # ru_maxrss is KiB on Linux, bytes on macOS
    return float(seconds), float(cpu), int(maxrss) / (1 << 20 if sys.platform == "darwin" else 1 << 10)


def measure(label: str, job: Job, work: Path) -> Measure:
    result = work / f"result-{time.monotonic_ns()}.json"
    argv = [sys.executable, "-m", "benchmarks.compare", "--child", json.dumps(asdict(job)), str(result)]
    *_, rss = spawn([argv], work)
    runs = json.loads(result.read_text())
    return Measure(label, runs["times"], runs["cpu"], rss)


def measure_zip(files: Sequence[Path], out: Path, repeat: int, work: Path) -> Measure:
    """Info-ZIP ``zip -0 -q`` over the files, one process per run (its start-up is part of its cost)."""
    label = "zip -0 -q"
    exe = shutil.which("zip")
    if exe is None:
        return Measure(label, skipped=NO_ZIP)
    return measure_processes([Command(label, [[exe, "-0", "-q", "-j", out, *files]], out)], repeat, work)[0]


NO_ZIP = "skipped: Info-ZIP `zip` is not installed"


@dataclass(frozen=True, slots=True)
class Command:
    """A contender run as a user runs it: its commands (run one after the other), the output to
    remove before each run (``folder``: a folder to empty), or why it is skipped."""

    label: str
    commands: list[list[str | Path]]
    out: Path | None = None
    folder: bool = False
    skipped: str = ""


def pipeline_command() -> list[str]:
    """The ``pipeline`` console script beside this interpreter (``python -m pipeline.cli`` without)."""
    script = Path(sys.executable).with_name("pipeline")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipeline.cli"]


def _clear(command: Command) -> None:
    if command.out is None:
        return
    if command.folder:
        shutil.rmtree(command.out, ignore_errors=True)
        command.out.mkdir(parents=True)
    else:
        command.out.unlink(missing_ok=True)


def measure_processes(commands: Sequence[Command], repeat: int, work: Path) -> list[Measure]:
    """Each command ``repeat`` times from fork to exit, start-up included, interleaved (A, B, A, B,
    ...) so that a change in the machine's load hits every contender alike."""
    measures = [Measure(c.label, skipped=c.skipped) for c in commands]
    for _ in range(repeat):
        for command, result in zip(commands, measures, strict=True):
            if command.skipped:
                continue
            _clear(command)
            os.sync()  # no run pays for the writes of the one before
            seconds, cpu, rss = spawn(command.commands, work)
            result.times.append(seconds)
            result.cpu.append(cpu)
            result.rss_mb = max(result.rss_mb or 0.0, rss)
    for command in commands:
        _clear(command)
    return measures


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
    """One line of the table. Ratios are speeds: reference median time / this median time.

    ``group`` names the comparison and ``role`` the contender's part in it (``pipeline``, ``ref``,
    ``naive``), for the floors. ``seconds`` is the median run, ``low`` and ``high`` the fastest and
    slowest. ``cores`` is CPU time over wall time: how many cores the contender kept busy.
    """

    row: str
    contender: str
    group: str = ""
    role: str = ""
    runs: int = 0
    seconds: float | None = None
    low: float | None = None
    high: float | None = None
    throughput: str = ""
    cores: float | None = None
    vs_ref: float | None = None
    vs_naive: float | None = None
    rss_mb: float | None = None
    note: str = ""


def row_results(
    group: str, row: str, work: float | None, unit: str, measures: Sequence[Measure], ref: str | None,
    pipeline: str = "pipeline",
) -> list[Result]:
    """Table lines for one row: medians, ranges, throughput and ratios against ``ref`` and naive."""
    medians = {m.label: statistics.median(m.times) for m in measures if m.times}
    roles = {ref: "ref", NAIVE: "naive", pipeline: "pipeline"}
    results = []
    for m in measures:
        seconds = medians.get(m.label)
        label = f"{m.label} (ref)" if m.label == ref else m.label
        result = Result(row, label, group, roles.get(m.label, ""), note=m.skipped)
        results.append(result)
        if seconds is None:
            continue
        result.runs, result.seconds = len(m.times), seconds
        result.low, result.high = min(m.times), max(m.times)
        result.throughput = f"{work / seconds:,.1f} {unit}" if work else ""
        result.cores = sum(m.cpu) / sum(m.times)
        result.vs_ref = medians[ref] / seconds if ref in medians else None
        result.vs_naive = medians[NAIVE] / seconds if NAIVE in medians else None
        result.rss_mb = m.rss_mb
    return results


@dataclass(frozen=True, slots=True)
class Target:
    """A floor: what is measured, from which runs (``basis``), and the limit it must keep: the
    measure must be at most ``limit`` (``at_most``) or at least ``limit``."""

    name: str
    basis: str
    limit: float
    at_most: bool
    unit: str


#: The floors, by the name ``--floor NAME=VALUE`` uses. Speed floors compare medians; the honest
#: figure is the whole process (what a user waits for), so rows 1 and 2 are judged on it.
TARGETS: dict[str, Target] = {
    "startup": Target("start-up, pipeline --version", "whole process, median", 0.15, True, " s"),
    "passthrough": Target("pass-through time / zip -0 + sync", "whole process, median", 1.00, True, "x"),
    "transcode": Target("transcoding speed / pyvips loop", "whole process, median", 1.30, False, "x"),
    "alto": Target("ALTO export speed / lxml alone", "in process, median", 0.50, False, "x"),
    "giant-rss": Target("giant TIFF peak RSS, pipeline", "the export's process", 150, True, " MB"),
    "naive-rss": Target("giant TIFF peak RSS, naive", "the naive's process", 1024, False, " MB"),
    "rss-growth": Target("pipeline peak RSS, row 5 big/small", "the export's process", 1.10, True, "x"),
}


def _pick(results: Sequence[Result], group: str, role: str, what: str = "seconds") -> float | None:
    found = next((r for r in results if r.group == group and r.role == role), None)
    return None if found is None else getattr(found, what)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def measured(key: str, results: Sequence[Result]) -> float | None:
    """The figure floor ``key`` judges, from the table; None when it was not measured."""
    pipeline, ref = "pipeline", "ref"
    if key == "startup":
        return _pick(results, "startup", pipeline)
    if key == "passthrough":  # a time ratio: at most 1 means no slower than zip -0 + sync
        group = "passthrough-process"
        return _ratio(_pick(results, group, pipeline), _pick(results, group, ref))
    if key == "transcode":  # a speed ratio: above 1 means faster than the loop
        group = "transcode-process"
        return _ratio(_pick(results, group, ref), _pick(results, group, pipeline))
    if key == "alto":
        return _ratio(_pick(results, "alto", ref), _pick(results, "alto", pipeline))
    if key == "giant-rss":
        return _pick(results, "giant", pipeline, "rss_mb")
    if key == "naive-rss":
        return _pick(results, "giant", "naive", "rss_mb")
    if key == "rss-growth":
        big, small = (_pick(results, group, pipeline, "rss_mb") for group in ("many-big", "many-small"))
        return _ratio(big, small)
    raise KeyError(key)


@dataclass(slots=True)
class Floor:
    """A floor judged on one run of the script: ``met`` is None when it could not be measured;
    a floor that is not ``enforced`` (the defaults in a ``--quick`` run) never fails the run."""

    key: str
    name: str
    basis: str
    value: float | None
    limit: float
    at_most: bool
    unit: str
    met: bool | None
    enforced: bool = True

    @property
    def measured(self) -> str:
        if self.value is None:
            return "not measured"
        return f"{self.value:{'.3g' if self.value < 100 else ',.0f'}}{self.unit}"

    @property
    def target(self) -> str:
        return f"{'<=' if self.at_most else '>='} {self.limit:g}{self.unit}"


def evaluate(
    results: Sequence[Result], limits: Mapping[str, float] | None = None, enforce: set[str] | None = None,
) -> list[Floor]:
    """Every floor of ``TARGETS`` judged on ``results``, with ``limits`` replacing the default
    limits by name; only the floors in ``enforce`` (default: all) can fail the run."""
    limits = limits or {}
    floors = []
    for key, target in TARGETS.items():
        value, limit = measured(key, results), limits.get(key, target.limit)
        met = None if value is None else value <= limit if target.at_most else value >= limit
        floors.append(Floor(key, target.name, target.basis, value, limit, target.at_most, target.unit, met,
                            enforce is None or key in enforce))
    return floors


def missed(floors: Sequence[Floor]) -> list[Floor]:
    """The enforced floors that were measured and not met: any of them makes the exit status 1."""
    return [f for f in floors if f.enforced and f.met is False]


# --- the run ---------------------------------------------------------------------------------


def run(sizes: Sizes, work: Path) -> list[Result]:
    """Build the corpora and measure every contender; the table's lines."""
    out = work / "out"
    out.mkdir()
    repeat = sizes.repeat
    pipeline = pipeline_command()

    def job(contender: str, corpus: Path, images: str | None, runs: int = repeat) -> Job:
        suffix = ".zip" if contender in ("pipeline", NAIVE) else ""  # the others write a folder
        return Job(contender, str(corpus), str(out / f"{contender}-{corpus.stem}{suffix}"), images, runs)

    def export(corpus: Path, name: str, *options: str) -> Command:
        """``pipeline export`` as a user types it (logging errors only, as the in-process runs)."""
        target = out / name
        argv = [*pipeline, "-q", "export", "--corpus", corpus, "--document", "1", *options, "-o", target]
        return Command("pipeline export", [argv], target)

    results = row_results("startup", "0. start-up, whole process", None, "", measure_processes([
        Command("pipeline --version", [[*pipeline, "--version"]]),
        Command("python -c pass", [[sys.executable, "-c", "pass"]]),
    ], STARTUP_RUNS, work), ref="python -c pass", pipeline="pipeline --version")

    pages = demo(work / "pages" / "pages.sqlite", sizes.images, LINES, sizes.page, link=False)
    files = image_paths(pages)
    megabytes = sum(f.stat().st_size for f in files) / 1e6
    what = f"{len(files)} x {sizes.megapixels:g} MP JPEG"

    results += row_results("passthrough", f"1. pass-through, {what}", megabytes, "MB/s", [
        measure("pipeline", job("pipeline", pages, "original"), work),
        measure_zip(files, out / "zip0.zip", repeat, work),
        measure(NAIVE, job(NAIVE, pages, "original"), work),
    ], ref="zip -0 -q")
    zip_exe, sync_exe, zipped = shutil.which("zip"), shutil.which("sync"), out / "zip0-sync.zip"
    results += row_results("passthrough-process", "1. pass-through, whole process", megabytes, "MB/s",
                           measure_processes([
        export(pages, "cli-original.zip", "--images"),
        Command("zip -0 + sync", [[zip_exe or "zip", "-0", "-q", "-j", zipped, *files],
                                  [sync_exe or "sync", zipped]],
                zipped, skipped="" if zip_exe and sync_exe else NO_ZIP.replace("`zip`", "`zip` or `sync`")),
    ], repeat, work), ref="zip -0 + sync", pipeline="pipeline export")

    pixels = len(files) * sizes.page[0] * sizes.page[1] / 1e6
    results += row_results("transcode", f"2. JPEG -> JPEG q{QUALITY}, {what}", pixels, "MP/s", [
        measure("pipeline", job("pipeline", pages, "jpeg"), work),
        measure("vips-loop", job("vips-loop", pages, "jpeg"), work),
        measure(NAIVE, job(NAIVE, pages, "jpeg"), work),
    ], ref="vips-loop")
    looped = out / "vips-loop-process"
    results += row_results("transcode-process", f"2. JPEG -> JPEG q{QUALITY}, whole process", pixels, "MP/s",
                           measure_processes([
        export(pages, "cli-jpeg.zip", "--images", "--image-format", "jpeg", "--image-quality", str(QUALITY)),
        Command("vips-loop + fsync",
                [[sys.executable, "-m", "benchmarks.vips_loop", looped, str(QUALITY), FAIL_ON, *files]],
                looped, folder=True),
    ], repeat, work), ref="vips-loop + fsync", pipeline="pipeline export")

    alto = demo(work / "alto" / "alto.sqlite", sizes.parts, LINES, ALTO_PAGE, link=True)
    results += row_results("alto", f"3. ALTO only, {sizes.parts} parts", sizes.parts * LINES, "lines/s", [
        measure("pipeline", job("pipeline", alto, None), work),
        measure("lxml", job("lxml", alto, None), work),
        measure(NAIVE, job(NAIVE, alto, None), work),
    ], ref="lxml")

    width, height = sizes.giant
    giant = build_giant(work / "giant" / "giant.sqlite", width, height)
    results += row_results("giant", f"4. {width}x{height} TIFF -> JPEG", width * height / 1e6, "MP/s", [
        measure("pipeline", job("pipeline", giant, "jpeg", 1), work),
        measure(NAIVE, job(NAIVE, giant, "jpeg", 1), work),
    ], ref=None)

    for group, parts in zip(("many-small", "many-big"), sizes.many, strict=True):
        many = demo(work / f"many{parts}" / f"many{parts}.sqlite", parts, MANY_LINES, MANY_PAGE, link=True)
        results += row_results(group, f"5. {parts} parts, JPEG q{QUALITY}", parts, "parts/s", [
            measure("pipeline", job("pipeline", many, "jpeg", 1), work),
            measure(NAIVE, job(NAIVE, many, "jpeg", 1), work),
        ], ref=None)
    return results


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table(results: Sequence[Result], floors: Sequence[Floor]) -> str:
    lines = [f"{'row':<36} {'contender':<23} {'runs':>4} {'median s':>9} {'min-max s':>13} "
             f"{'throughput':>18} {'cores':>5} {'vs ref':>7} {'vs naive':>8} {'peak RSS MB':>11}"]
    previous = ""
    for r in results:
        name, previous = ("" if r.row == previous else r.row), r.row
        if r.seconds is None:
            lines.append(f"{name:<36} {r.contender:<23} {r.note}")
            continue
        lines.append(
            f"{name:<36} {r.contender:<23} {r.runs:>4} {r.seconds:>9.3f} "
            f"{f'{r.low:.3f}-{r.high:.3f}':>13} {r.throughput:>18} "
            f"{_num(r.cores, '.2f'):>5} {_num(r.vs_ref, '.2f'):>7} {_num(r.vs_naive, '.2f'):>8} "
            f"{_num(r.rss_mb, '.0f'):>11}"
        )
    lines += ["", f"{'floor':<36} {'judged on':<22} {'measured':>12} {'target':>10}  met"]
    for f in floors:
        met = ("skipped" if f.met is None else "yes" if f.met
               else "MISSED" if f.enforced else "missed (not enforced)")
        lines.append(f"{f.name:<36} {f.basis:<22} {f.measured:>12} {f.target:>10}  {met}")
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


def parse_floor(spec: str) -> tuple[str, float]:
    """``NAME=VALUE``: a floor of ``TARGETS`` and its limit, in the floor's own unit."""
    name, _, value = spec.partition("=")
    if name not in TARGETS:
        raise argparse.ArgumentTypeError(f"{name!r} is not a floor; floors: {', '.join(TARGETS)}")
    try:
        limit = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r}: the limit {value!r} is not a number") from None
    if not math.isfinite(limit):
        raise argparse.ArgumentTypeError(f"{spec!r}: the limit must be a finite number")
    return name, limit


def compile_bytecode() -> None:
    """Write the package's bytecode before timing anything, as an installed package has it (pip
    compiles it; an editable install writes it on first use). Where PYTHONDONTWRITEBYTECODE is set,
    every whole-process run would otherwise compile the package's sources again: about 0.05 s of
    CPU that no user pays."""
    compileall.compile_dir(ROOT / "pipeline", quiet=1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one run each: a smoke run")
    parser.add_argument("--parts", type=int, help=f"parts of the ALTO row (default {FULL.parts})")
    parser.add_argument("--images", type=int, help=f"pages of the image rows (default {FULL.images})")
    parser.add_argument("--megapixels", type=float, help=f"size of those pages (default {FULL.megapixels})")
    parser.add_argument("--repeat", type=int, help=f"runs per contender, rows 1-3 (default {FULL.repeat})")
    parser.add_argument("--giant", type=parse_size, metavar="WxH", help="giant TIFF (default 20000x30000)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also save the results as JSON")
    parser.add_argument("--floor", type=parse_floor, action="append", default=[], metavar="NAME=VALUE",
                        help=f"set a floor's limit ({', '.join(TARGETS)}); a --quick run fails only on these")
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
    compile_bytecode()
    info = machine()
    command = shlex.join(["python", "-m", "benchmarks.compare", *(sys.argv[1:] if argv is None else argv)])
    print(f"{command}\n{info['cores']} cores, {info['memory']}, Python {info['python']}, "
          f"libvips {info['libvips']}, {info['platform']}", flush=True)
    start, load = time.perf_counter(), [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="compare-") as tmp:
        results = run(sizes, Path(tmp))
    load.append(os.getloadavg()[0])
    limits = dict(args.floor)
    floors = evaluate(results, limits, enforce=set(limits) if args.quick else None)
    print()
    print(table(results, floors))
    elapsed = time.perf_counter() - start
    print(f"\nspeed ratios: reference median time / contender median time (> 1 = faster); "
          f"whole process: from fork to exit, start-up included; total {elapsed:.0f} s; "
          f"load average (1 min) {load[0]:.2f} before, {load[1]:.2f} after")
    if args.quick:
        print("--quick: sizes too small for the floors to mean anything; only those given with --floor count")
    if args.json:
        args.json.write_text(json.dumps({
            "command": command, "machine": info, "sizes": asdict(sizes), "seconds": elapsed, "load": load,
            "results": [asdict(r) for r in results],
            "floors": [asdict(f) | {"measured": f.measured, "target": f.target} for f in floors],
        }, indent=1))
    failed = missed(floors)
    for f in failed:
        print(f"compare: floor missed: {f.name} ({f.basis}): {f.measured}, target {f.target}",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
