"""Archives straight to S3: a pass-through export into a bucket against uploading the finished
archive file with the same client (obstore, same part size and concurrency) to the same server,
and the export's peak RSS at two archive sizes.

``python -m benchmarks.bench_s3 [--sizes 200,2000] [--json FILE]`` builds, for each size (MB), a
one-document corpus whose pages are N copies (hard links) of one noise JPEG, writes the archive
once to a local file (never timed), then runs, one after the other and once each, as processes
timed from fork to exit with their peak RSS and CPU time (``benchmarks.compare.spawn``),
``--rounds`` times each (default 3), interleaved (A, B, C, A, B, C...):

* ``pipeline export --images -o s3://bucket/prefix/`` (the contender);
* the finished archive uploaded with ``obstore.put(store, key, Path)`` (the reference) and with
  obstore's writer fed 1 MiB reads of the file, the same path the export's sink takes.

The ratio is the export's median throughput over the faster reference's. S3 is moto's server
(``ThreadedMotoServer`` in a process of its own on 127.0.0.1, restarted for each size): it is a
Python server and keeps the bottleneck, so both sides pay it alike. It holds a completed object in
memory while assembling it (about twice the object, briefly) and spills objects to its temporary
folder, which lives in the benchmark's work folder; every object is deleted after its run and the
folder is removed at the end. Floors: throughput ratio >= 0.8 at the largest size, the export's
peak RSS <= 150 MB at every size; a missed floor exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.compare import machine, pipeline_command, spawn
from pipeline.store import Corpus

BUCKET = "bench-bucket"
PAGE = (2480, 3508)  #: A4 at 300 dpi
RATIO_FLOOR = 0.8
RSS_FLOOR_MB = 150.0

SERVER = """
import sys, time
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # until the benchmark closes our standard input
server.stop()
"""

UPLOAD = """
import sys
from pathlib import Path
import obstore
from pipeline.sinks import s3
mode, path, key = sys.argv[1:4]
store = s3.connect().store(s3.S3Url.parse(key).bucket)
name = s3.S3Url.parse(key).key
if mode == "put":
    obstore.put(store, name, Path(path), chunk_size=s3.PART_SIZE, max_concurrency=s3.CONCURRENCY)
else:
    with open(path, "rb") as fh, obstore.open_writer(store, name, buffer_size=s3.PART_SIZE,
                                                   max_concurrency=s3.CONCURRENCY) as writer:
        while block := fh.read(1 << 20):
            writer.write(block)
"""


@dataclass
class Row:
    """One contender at one size: the median, fastest and slowest of its runs; median CPU time;
    the highest peak RSS."""

    size_mb: int
    contender: str
    bytes: int
    seconds: float
    low: float
    high: float
    cpu: float
    rss_mb: float

    @property
    def mb_s(self) -> float:
        return self.bytes / self.seconds / 1e6


def noise_jpeg(path: Path) -> int:
    """One page of noise as a JPEG (it does not compress: MBs per page, like a photographed page)."""
    import pyvips

    image = pyvips.Image.gaussnoise(*PAGE, mean=128, sigma=40).cast("uchar")
    image.jpegsave(str(path), Q=92)
    return path.stat().st_size


def build_corpus(folder: Path, megabytes: int) -> Path:
    """A one-document corpus of about ``megabytes`` of page images (hard links to one JPEG)."""
    path = folder / "corpus.sqlite"
    with Corpus.open(path, create=True) as corpus:
        media = corpus.media_root / "documents" / "1"
        media.mkdir(parents=True)
        one = folder / "page.jpg"
        parts = max(1, round(megabytes * 1e6 / noise_jpeg(one)))
        with corpus.transaction() as w:
            doc = w.add_document("s3 bench")
            layer = w.add_layer(doc, "manual")
            width, height = PAGE
            for n in range(parts):
                name = f"p{n:05d}.jpg"
                os.link(one, media / name)
                part = w.add_part(doc, n, f"documents/1/{name}", width=width, height=height)
                block = w.add_block(part, 0, ((0, 0), (width, 0), (width, height), (0, height)))
                line = w.add_line(part, 0, ((100, 200), (width - 100, 200)), None, block)
                w.add_text(line, layer, f"page {n + 1}")
    return path


@contextmanager
def moto_server(work: Path) -> Iterator[dict[str, str]]:
    """moto in a process of its own; yields the environment a client needs."""
    spill = work / "moto-tmp"
    spill.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env={**os.environ, "TMPDIR": str(spill)})
    try:
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
               "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_REGION": "us-east-1",
               "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
        yield env
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(spill, ignore_errors=True)


def client(env: dict[str, str]) -> object:
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id="bench", aws_secret_access_key="bench-secret")


def empty_bucket(s3: object) -> int:
    """Delete every object; returns the bytes that were there."""
    found = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])  # type: ignore[attr-defined]
    for item in found:
        s3.delete_object(Bucket=BUCKET, Key=item["Key"])  # type: ignore[attr-defined]
    return sum(item["Size"] for item in found)


def measure_size(megabytes: int, work: Path, rounds: int) -> list[Row]:
    folder = work / f"{megabytes}mb"
    folder.mkdir()
    corpus = build_corpus(folder, megabytes)
    archive = folder / "archive.zip"
    subprocess.run([*pipeline_command(), "-q", "export", "--corpus", corpus, "--document", "1", "--images",
                    "--registry", folder / "local-registry.sqlite", "-o", archive], check=True,
                   stdout=subprocess.DEVNULL)
    size = archive.stat().st_size
    rows = []
    saved = dict(os.environ)
    with moto_server(work) as env:
        os.environ.update(env)  # for the children spawned below
        try:
            s3 = client(env)
            s3.create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
            commands = {
                "pipeline export -o s3://": [*pipeline_command(), "-q", "export", "--corpus", corpus,
                                             "--document", "1", "--images", "--registry",
                                             folder / "registry.sqlite", "-o", f"s3://{BUCKET}/exports/"],
                "obstore put(file) (ref)": [sys.executable, "-c", UPLOAD, "put", archive,
                                            f"s3://{BUCKET}/ref-put.zip"],
                "obstore writer(file) (ref)": [sys.executable, "-c", UPLOAD, "writer", archive,
                                               f"s3://{BUCKET}/ref-writer.zip"],
            }
            runs: dict[str, list[tuple[float, float, float]]] = {label: [] for label in commands}
            for _ in range(rounds):  # interleaved, so that a change in the machine's load hits all alike
                for label, command in commands.items():
                    os.sync()
                    seconds, cpu, rss = spawn([command], work)
                    stored = empty_bucket(s3)
                    if stored != size:
                        raise SystemExit(f"bench_s3: {label} stored {stored} bytes, the archive has {size}")
                    runs[label].append((seconds, cpu, rss))
                    print(f"  {megabytes} MB: {label}: {seconds:.1f} s, {size / seconds / 1e6:.1f} MB/s, "
                          f"peak RSS {rss:.0f} MB", file=sys.stderr)
            for label, measured in runs.items():
                times = sorted(m[0] for m in measured)
                rows.append(Row(megabytes, label, size, statistics.median(times), times[0], times[-1],
                                statistics.median(m[1] for m in measured), max(m[2] for m in measured)))
        finally:
            os.environ.clear()
            os.environ.update(saved)
    shutil.rmtree(folder)
    return rows


def table(rows: Sequence[Row]) -> str:
    lines = [f"{'archive':>9}  {'contender':<28} {'median s':>8} {'min-max s':>13} {'MB/s':>7} {'cores':>5} "
             f"{'vs ref':>6} {'peak RSS MB':>11}"]
    for row in rows:
        best = max(r.mb_s for r in rows if r.size_mb == row.size_mb and "(ref)" in r.contender)
        span = f"{row.low:.1f}-{row.high:.1f}"
        lines.append(f"{row.bytes / 1e6:>7.0f}MB  {row.contender:<28} {row.seconds:>8.1f} {span:>13} "
                     f"{row.mb_s:>7.1f} {row.cpu / row.seconds:>5.2f} {row.mb_s / best:>6.2f} "
                     f"{row.rss_mb:>11.0f}")
    return "\n".join(lines)


def floors(rows: Sequence[Row]) -> list[tuple[str, str, str, bool]]:
    largest = max(r.size_mb for r in rows)
    found = []
    mine = {r.size_mb: r for r in rows if r.contender.startswith("pipeline")}
    best = max(r.mb_s for r in rows if r.size_mb == largest and "(ref)" in r.contender)
    ratio = mine[largest].mb_s / best
    found.append((f"throughput vs faster ref, {largest} MB", f"{ratio:.2f}x", f">= {RATIO_FLOOR}x",
                  ratio >= RATIO_FLOOR))
    for size, row in sorted(mine.items()):
        found.append((f"export peak RSS, {size} MB", f"{row.rss_mb:.0f} MB", f"<= {RSS_FLOOR_MB:.0f} MB",
                      row.rss_mb <= RSS_FLOOR_MB))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_s3",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="200,2000", help="archive sizes in MB, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each contender, interleaved")
    parser.add_argument("--json", type=Path, help="save the rows and floors here")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
        rows = [row for size in sizes for row in measure_size(size, Path(tmp), args.rounds)]
    print(table(rows))
    print()
    checks = floors(rows)
    for name, measured, target, met in checks:
        print(f"{name:<40} {measured:>10} {target:>10}  {'yes' if met else 'MISSED'}")
    print(f"\n{json.dumps(machine())}; {time.monotonic() - started:.0f} s; load average now "
          f"{os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": [asdict(r) for r in rows], "floors": checks}, indent=2))
    return 0 if all(met for *_, met in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
