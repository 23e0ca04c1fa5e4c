"""Import benchmark: memory stays flat with the number of pages (issue 6).

Run as ``python -m benchmarks.bench_import [--pages 100 2000]``. Pages are copies of one real
eScriptorium ALTO file (14 lines, 31 kB) with a small blank JPEG of the size its XML declares;
generating them is never measured. Each import runs in a fresh child process that does nothing
else, which reports its own peak RSS (``ru_maxrss``) and wall time. A second row per size
converts the same folder straight to PAGE (``export --source``), the other streaming path.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyvips

FIXTURES = Path(__file__).resolve().parent.parent / "tests/fixtures"
SAMPLE = FIXTURES / "escriptorium-alto-cremma-mss-20/01R_P1S7P178_001.xml"
#: what the sample's Page element declares, so the image header agrees with the XML
SIZE = (1157, 1500)


def make_pages(folder: Path, count: int) -> None:
    """``count`` XML + JPEG pairs named ``p1 … pN`` (natural order), hard-linked to one copy each."""
    folder.mkdir(parents=True)
    xml, jpeg = folder / "template.xml.src", folder / "template.jpg.src"
    shutil.copyfile(SAMPLE, xml)
    pyvips.Image.black(*SIZE).jpegsave(str(jpeg), Q=50)
    for n in range(1, count + 1):
        (folder / f"p{n}.xml").hardlink_to(xml)
        (folder / f"p{n}.jpg").hardlink_to(jpeg)


def child(mode: str, folder: Path, work: Path) -> None:
    """Run one import (or direct conversion) through the CLI; print peak RSS (kB) and seconds."""
    from pipeline.cli import main

    start = time.perf_counter()
    if mode == "import":
        code = main(["-q", "import", str(folder), "--corpus", str(work / "c.sqlite")])
    else:
        code = main(["-q", "export", "--source", str(folder), "--format", "page", "-o", str(work / "o.zip")])
    elapsed = time.perf_counter() - start
    if code:
        raise SystemExit(code)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, f"{elapsed:.2f}")


def measure(mode: str, folder: Path) -> tuple[int, float]:
    with tempfile.TemporaryDirectory(prefix="bench-import-") as work:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_import", "--child", mode, str(folder), work],
            check=True, capture_output=True, text=True,
        ).stdout.split()
    return int(out[-2]), float(out[-1])  # the command's own output comes first


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--pages", type=int, nargs="+", default=[100, 2000])
    args.add_argument("--child", nargs=3, metavar=("MODE", "FOLDER", "WORK"), help=argparse.SUPPRESS)
    ns = args.parse_args()
    if ns.child:
        child(ns.child[0], Path(ns.child[1]), Path(ns.child[2]))
        return
    print(f"{'mode':<8} {'pages':>6} {'peak RSS MB':>12} {'seconds':>8} {'pages/s':>8}")
    rows: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-import-data-") as tmp:
        for count in ns.pages:
            folder = Path(tmp) / f"set{count}"
            make_pages(folder, count)
            for mode in ("import", "source"):
                rss, seconds = measure(mode, folder)
                rows.setdefault(mode, []).append(rss)
                print(f"{mode:<8} {count:>6} {rss / 1024:>12.1f} {seconds:>8.2f} {count / seconds:>8.0f}")
    for mode, values in rows.items():
        growth = (max(values) - min(values)) / min(values)
        print(f"{mode}: peak RSS grows {growth:.1%} from {min(ns.pages)} to {max(ns.pages)} pages")


if __name__ == "__main__":
    main()
