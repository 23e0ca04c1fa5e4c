"""Load on ``pipeline serve`` (issue 16): concurrent downloads of a large archive through the
permanent link, with on-the-fly exports running beside them, against the same file served by a
plain static file server (``python -m http.server``) in the same run.

Run as ``python -m benchmarks.bench_serve`` (loopback only; stops by itself; exit 1 when a floor
is missed). It builds a corpus of one document whose pages are uncompressed TIFFs (hard links of
one drawn image), exports it with its images through the service's API (a ~1 GB archive, made by
the server's background export), then, per round:

- **static**: ``python -m http.server`` serves the archive's folder; ``--downloads`` curl clients
  fetch it at once;
- **pipeline**: a fresh ``pipeline serve``; the same number of curl clients fetch the permanent
  link (``/exports/{id}/download``, bearer token) while ``--on-the-fly`` clients fetch
  ``/api/documents/1/export?format=alto&images=true&parts=1-2`` (a zip made while it streams).

Aggregate download throughput = bytes downloaded by the download clients / time from start to
the last one's end. The server's peak RSS is its ``VmHWM`` (start-up included). Every client must
get a 200 with the full length; the on-the-fly archives are checked with ``pipeline verify``.
Floors: no errors, peak RSS <= 300 MB, throughput >= 0.8x static. curl does the downloading (C,
to /dev/null) so that the clients cost the same for both servers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from pipeline.demo import build_demo
from pipeline.serve.accounts import Accounts
from tests.serve_helpers import uvicorn_server

TIFF = (4000, 6000)  # the demo's page drawing, as TIFF: ~27 MB a page


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Peak:
    """Samples a process's VmRSS every 50 ms; ``peak`` is the highest, ``hwm`` the kernel's."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.hwm = pid, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> dict[str, int]:
        out = {}
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line[:5]] = int(line.split()[1]) * 1024
        return out

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, self._read().get("VmRSS", 0))
            except OSError:
                return

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(OSError):
            self.hwm = self._read().get("VmHWM", 0)


def curl(url: str, out: str = "/dev/null", token: str | None = None) -> subprocess.Popen[str]:
    command = ["curl", "-s", "-S", "--max-time", "900", "-o", out, "-w", "%{http_code} %{size_download}\n"]
    if token:
        command += ["-H", f"Authorization: Bearer {token}"]
    return subprocess.Popen([*command, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_clients(downloads: list[subprocess.Popen[str]], others: list[subprocess.Popen[str]],
                start: float) -> tuple[float, list[tuple[int, int, int, str]]]:
    """Wait for every client; returns the time the last download ended and (exit, status, bytes,
    stderr) per client, downloads first."""
    results, last = [], start
    for proc in downloads:
        out, err = proc.communicate()
        last = max(last, time.perf_counter())
        code, size = (out.split() + ["0", "0"])[:2]
        results.append((proc.returncode, int(code), int(size), err.strip()))
    for proc in others:
        out, err = proc.communicate()
        code, size = (out.split() + ["0", "0"])[:2]
        results.append((proc.returncode, int(code), int(size), err.strip()))
    return last, results


def prepare(work: Path, megabytes: int) -> tuple[Path, Path, str, str, Path]:
    corpus, registry = work / "corpus.sqlite", work / "registry.sqlite"
    probe = work / "probe" / "probe.sqlite"
    probe.parent.mkdir()
    build_demo(probe, documents=1, parts=1, lines=1, image_size=TIFF, image_format="tiff")
    image = max((p for p in probe.parent.rglob("*.tif*")), key=lambda p: p.stat().st_size).stat().st_size
    shutil.rmtree(probe.parent)
    parts = max(1, round(megabytes * 1e6 / image))
    print(f"building a corpus of {parts} pages of {TIFF[0]}x{TIFF[1]} TIFF ...", flush=True)
    build_demo(corpus, documents=1, parts=parts, lines=10, image_size=TIFF, image_format="tiff",
               link_images=True)
    token = Accounts(registry).add_user("bench")
    data = work / "data"
    print("exporting it with its images through the service ...", flush=True)
    with uvicorn_server(corpus, registry, data) as (url, _):
        headers = {"Authorization": f"Bearer {token}"}
        made = httpx.post(f"{url}/api/exports", headers=headers, timeout=60,
                          json={"document": 1, "options": {"format": "alto", "images": True}})
        made.raise_for_status()
        export_id = made.json()["id"]
        while (state := httpx.get(f"{url}/api/exports/{export_id}", headers=headers).json())["status"] \
                == "running":
            time.sleep(1)
        if state["status"] != "complete":
            raise SystemExit(f"the export {export_id} is {state['status']}: {state.get('error')}")
    archive = next((data / "exports").glob("*.zip"))
    return corpus, registry, token, export_id, archive


def round_static(archive: Path, downloads: int) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port),
                               "--directory", str(archive.parent)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/{archive.name}"
        for _ in range(100):
            try:
                if httpx.head(url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        with Peak(server.pid) as peak:
            start = time.perf_counter()
            last, results = run_clients([curl(url) for _ in range(downloads)], [], start)
        return summarise("static (python -m http.server)", archive.stat().st_size, downloads, start, last,
                         results, peak)
    finally:
        server.terminate()
        server.wait()


def round_pipeline(corpus: Path, registry: Path, token: str, export_id: str, archive: Path, work: Path,
                   downloads: int, on_the_fly: int) -> dict[str, Any]:
    streamed = work / "streamed"
    shutil.rmtree(streamed, ignore_errors=True)
    streamed.mkdir()
    server = uvicorn_server(corpus, registry, work / "data", "--max-exports", str(max(1, on_the_fly)))
    with server as (url, proc), Peak(proc.pid) as peak:
        start = time.perf_counter()
        loads = [curl(f"{url}/exports/{export_id}/download", token=token) for _ in range(downloads)]
        live = [curl(f"{url}/api/documents/1/export?format=alto&images=true&parts=1-2",
                     str(streamed / f"{n}.zip"), token) for n in range(on_the_fly)]
        last, results = run_clients(loads, live, start)
    row = summarise("pipeline serve", archive.stat().st_size, downloads, start, last, results, peak)
    from pipeline.verify import verify_path

    problems = [f"{p.name}: {problem}" for p in sorted(streamed.iterdir()) for problem in verify_path(p)]
    row["on_the_fly"] = {"clients": on_the_fly, "bytes": sum(r[2] for r in results[downloads:]),
                         "verify_problems": problems}
    row["errors"] += len(problems)
    return row


def summarise(name: str, size: int, downloads: int, start: float, last: float,
              results: list[tuple[int, int, int, str]], peak: Peak) -> dict[str, Any]:
    fetched = results[:downloads]
    errors = [r for r in fetched if r[0] != 0 or r[1] != 200 or r[2] != size]
    errors += [r for r in results[downloads:] if r[0] != 0 or r[1] != 200 or r[2] == 0]
    seconds = last - start
    total = sum(r[2] for r in fetched)
    return {"server": name, "seconds": round(seconds, 2), "bytes": total,
            "throughput_MBps": round(total / seconds / 1e6, 1), "errors": len(errors),
            "error_samples": [list(e) for e in errors[:3]],
            "peak_rss_MB": round(max(peak.peak, peak.hwm) / 1e6, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1000, help="archive size to aim at (default 1000)")
    parser.add_argument("--downloads", type=int, default=20)
    parser.add_argument("--on-the-fly", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1, help="static/pipeline pairs, alternating")
    parser.add_argument("--json", type=Path, help="save the results")
    args = parser.parse_args(argv)
    if shutil.which("curl") is None:
        raise SystemExit("bench_serve needs curl")
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as folder:
        work = Path(folder)
        load_before = os.getloadavg()
        corpus, registry, token, export_id, archive = prepare(work, args.size_mb)
        print(f"archive: {archive.stat().st_size:,} bytes", flush=True)
        rows = []
        for n in range(args.rounds):
            for row in (round_static(archive, args.downloads),
                        round_pipeline(corpus, registry, token, export_id, archive, work, args.downloads,
                                       args.on_the_fly)):
                row["round"] = n + 1
                rows.append(row)
                print(json.dumps(row), flush=True)
        load_after = os.getloadavg()
    static = [r["throughput_MBps"] for r in rows if r["server"].startswith("static")]
    ours = [r["throughput_MBps"] for r in rows if r["server"] == "pipeline serve"]
    ratio = sorted(ours)[len(ours) // 2] / sorted(static)[len(static) // 2]
    rss = max(r["peak_rss_MB"] for r in rows if r["server"] == "pipeline serve")
    errors = sum(r["errors"] for r in rows)
    floors = [("errors", errors, "== 0", errors == 0),
              ("pipeline serve peak RSS MB", rss, "<= 300", rss <= 300),
              ("download throughput / static", round(ratio, 2), ">= 0.8", ratio >= 0.8)]
    print(f"\nload average (1, 5, 15 min): before {load_before[0]:.1f} {load_before[1]:.1f} "
          f"{load_before[2]:.1f}, after {load_after[0]:.1f} {load_after[1]:.1f} {load_after[2]:.1f} "
          f"on {os.cpu_count()} cores")
    print(f"{'server':34} {'round':>5} {'seconds':>8} {'MB/s':>8} {'errors':>6} {'peak RSS MB':>11}")
    for r in rows:
        print(f"{r['server']:34} {r['round']:5} {r['seconds']:8.2f} {r['throughput_MBps']:8.1f} "
              f"{r['errors']:6} {r['peak_rss_MB']:11.1f}")
    print(f"\n{'floor':34} {'measured':>10} {'target':>8}  met")
    for name, value, target, met in floors:
        print(f"{name:34} {value:>10} {target:>8}  {'yes' if met else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "floors": floors, "load": [load_before, load_after]},
                                        indent=2))
    return 0 if all(met for *_, met in floors) else 1


if __name__ == "__main__":
    sys.exit(main())
