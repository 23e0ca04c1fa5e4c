"""Image stage benchmarks: flat memory, parallel transcoding, pass-through speed.

Run as ``python -m benchmarks.bench_images [--quick]``; prints one table row per check. Not part of
the test suite (pytest's testpaths is ``tests``). Data generation is never inside a timed section;
peak RSS is measured on a child process that does nothing but the export.

1. one 20,000 x 30,000 px TIFF exported as JPEG: peak RSS of the whole process < 150 MB
2. exporting 2,000 parts peaks (RSS) within 10% of exporting 100
3. 40 twelve-megapixel JPEGs transcoded to JPEG: export >= 1.3x faster than a sequential pyvips loop
4. pass-through export of the same JPEGs with ALTO: no slower than Info-ZIP ``zip -0``
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import anyio
import pyvips

from pipeline.demo import build_demo
from pipeline.export import ExportOptions, export_document
from pipeline.images import FAIL_ON, ImageOptions, configure_vips
from pipeline.model import Document, Layer, Line, Part, Region

QUALITY = 85
TIME = Path("/usr/bin/time")


# --- data (never timed) -------------------------------------------------------------------


def make_tiff(path: Path, width: int, height: int) -> None:
    """A patterned RGB TIFF, generated and written strip by strip (never whole in memory)."""
    xy = pyvips.Image.xyz(width, height)
    x, y = xy[0], xy[1]
    image = ((x ^ y) & 255).bandjoin([(x // 7) & 255, (y // 5) & 255]).cast("uchar")
    image.tiffsave(str(path), compression="deflate", predictor="horizontal")


def make_jpegs(folder: Path, count: int, width: int, height: int) -> list[Path]:
    """``count`` copies of one noisy page (JPEG q90), a scan's worth of entropy each."""
    folder.mkdir(parents=True, exist_ok=True)
    page = pyvips.Image.gaussnoise(width, height, sigma=40, mean=160).cast("uchar")
    page = page.bandjoin([page.flip("horizontal"), page.flip("vertical")])
    first = folder / "p0000.jpg"
    page.jpegsave(str(first), Q=90)
    paths = [first]
    for n in range(1, count):
        paths.append(folder / f"p{n:04d}.jpg")
        shutil.copyfile(first, paths[-1])
    return paths


class FolderSource:
    """Parts over a list of image files, each with a few lines (the export's Source protocol)."""

    def __init__(self, images: Sequence[Path]) -> None:
        self.images = images

    async def parts(
        self, document: Document, layer: str = "manual", part_ids: Sequence[int] | None = None
    ) -> AsyncIterator[Part]:
        for n, path in enumerate(self.images):
            header = pyvips.Image.new_from_file(str(path))
            w, h = header.width, header.height
            lines = tuple(
                Line(id=n * 100 + i, order=i, region_id=n + 1, text=f"line {i} of page {n + 1}",
                     baseline=((w * 0.1, h * (i + 1) / 12), (w * 0.9, h * (i + 1) / 12)),
                     mask=((w * 0.1, h * (i + 0.6) / 12), (w * 0.9, h * (i + 0.6) / 12),
                           (w * 0.9, h * (i + 1.1) / 12), (w * 0.1, h * (i + 1.1) / 12)))
                for i in range(10)
            )
            box = ((w * 0.05, h * 0.02), (w * 0.95, h * 0.02), (w * 0.95, h * 0.98), (w * 0.05, h * 0.98))
            yield Part(id=n + 1, document_id=1, order=n, image=f"documents/1/{path.name}", width=w, height=h,
                       image_path=str(path), regions=(Region(id=n + 1, order=0, box=box),), lines=lines)


DOCUMENT = Document(id=1, name="bench", layers=(Layer(1, "manual"),))


def export_folder(images: Sequence[Path], out: Path, image: ImageOptions) -> None:
    options = ExportOptions(format="alto", images=True, image=image)
    anyio.run(export_document, FolderSource(images), DOCUMENT, options, out)


def sequential_loop(images: Sequence[Path], out_dir: Path, image: ImageOptions) -> None:
    """The baseline: one image after the other, same loader and saver settings, to files."""
    keep = pyvips.ForeignKeep.ALL if image.keep_metadata else pyvips.ForeignKeep.ICC
    for path in images:
        loaded = pyvips.Image.new_from_file(str(path), access="sequential", fail_on=FAIL_ON)
        loaded.write_to_file(str(out_dir / path.name), Q=image.quality, keep=keep)


# --- measuring ----------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn`` takes, after the dirty pages of earlier runs are written out (``os.sync``)."""
    os.sync()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak_rss_mb(argv: list[str]) -> float:
    """Peak RSS (MB) of a child process running ``argv``."""
    if TIME.exists():
        run = subprocess.run([str(TIME), "-v", *argv], capture_output=True, text=True, check=True)
        kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr)[1])
    else:
        child = subprocess.Popen(argv)
        _, status, usage = os.wait4(child.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        kb = usage.ru_maxrss
    return kb / 1024


def child_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "-q", *args]


# --- checks -------------------------------------------------------------------------------

Row = tuple[str, str, str, bool]


def bench_big_tiff(work: Path, quick: bool) -> Row:
    width, height = (5000, 7500) if quick else (20000, 30000)
    tiff = work / "big.tif"
    make_tiff(tiff, width, height)
    out = work / "big.zip"
    argv = [sys.executable, "-m", "benchmarks.bench_images", "--child-export", str(out), str(tiff)]
    start = time.perf_counter()
    rss = peak_rss_mb(argv)
    seconds = time.perf_counter() - start
    return (f"1. {width}x{height} TIFF -> JPEG", f"peak RSS {rss:.0f} MB ({seconds:.1f} s)", "< 150 MB",
            rss < 150)


def bench_many_parts(work: Path, quick: bool) -> Row:
    big = 400 if quick else 2000
    peaks = {}
    for parts in (100, big):
        corpus = work / f"corpus{parts}" / "c.sqlite"
        corpus.parent.mkdir()
        build_demo(corpus, documents=1, parts=parts, lines=20, image_size=(600, 800), seed=3)
        peaks[parts] = peak_rss_mb(child_cli("export", "--corpus", str(corpus), "--document", "1", "--images",
                                             "--image-format", "jpeg", "-o", str(corpus.parent / "out.zip")))
    ratio = peaks[big] / peaks[100]
    measured = f"{peaks[big]:.0f} MB vs {peaks[100]:.0f} MB ({ratio:.3f}x)"
    return (f"2. {big} vs 100 parts (demo, JPEG)", measured, "<= 1.10x", ratio <= 1.10)


def bench_parallel(work: Path, images: Sequence[Path]) -> Row:
    image = ImageOptions(format="jpeg", quality=QUALITY)
    loop_dir = work / "loop"
    loop_dir.mkdir()
    seq, par = [], []
    for _ in range(2):  # side by side, alternating, best of two
        seq.append(timed(lambda: sequential_loop(images, loop_dir, image)))
        par.append(timed(lambda: export_folder(images, work / "par.zip", image)))
        (work / "par.zip").unlink()
    speedup = min(seq) / min(par)
    return (f"3. {len(images)} x 12 MP JPEG -> JPEG q{QUALITY}",
            f"loop {min(seq):.2f} s, export {min(par):.2f} s ({speedup:.2f}x)", ">= 1.3x", speedup >= 1.3)


def bench_passthrough(work: Path, images: Sequence[Path]) -> Row:
    name = f"4. pass-through + ALTO, {len(images)} JPEGs"
    if shutil.which("zip") is None:
        return (name, "skipped: Info-ZIP `zip` is not installed", "-", True)
    ours, theirs = [], []
    for _ in range(3):
        (work / "zip0.zip").unlink(missing_ok=True)
        theirs.append(timed(lambda: subprocess.run(["zip", "-0", "-q", "-j", str(work / "zip0.zip"),
                                                    *map(str, images)], check=True)))
        ours.append(timed(lambda: export_folder(images, work / "pass.zip", ImageOptions())))
        (work / "pass.zip").unlink()
    ratio = min(ours) / min(theirs)
    return (name, f"export {min(ours):.2f} s, zip -0 {min(theirs):.2f} s ({ratio:.2f}x)", "<= 1.00x",
            ratio <= 1.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--child-export", nargs=2, metavar=("OUT", "IMAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    configure_vips()
    if args.child_export:
        out, image = args.child_export
        export_folder([Path(image)], Path(out), ImageOptions(format="jpeg", quality=QUALITY))
        return 0
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-images-") as tmp:
        work = Path(tmp)
        rows.append(bench_big_tiff(work, args.quick))
        rows.append(bench_many_parts(work, args.quick))
        images = make_jpegs(work / "jpegs", 10 if args.quick else 40, 4000, 3000)
        rows.append(bench_parallel(work, images))
        rows.append(bench_passthrough(work, images))
    print(f"{'benchmark':<40} {'measured':<48} {'target':<9} ok")
    for name, measured, target, ok in rows:
        print(f"{name:<40} {measured:<48} {target:<9} {'yes' if ok else 'NO'}")
    return 0 if all(row[3] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
