"""A job on a local Dask cluster against the in-process runner, and Dask's per-task overhead.

``python -m benchmarks.bench_dask [--documents 20 --parts 50 --lines 20 --workers 2 --repeat 1]``
builds a demo corpus (``--documents`` x ``--parts``, JPEG pages), then runs ``pipeline run`` as a
user does, each run a process of its own, alternating the executors so a change in the machine's
load hits both alike:

- **ALTO + PAGE, no images**: two archives per document (floor: Dask ≥ 1.6x the in-process speed);
- **ALTO, JPEG images transcoded** (q80, at most 1000 px): one archive per document (floor ≥ 1.0x).

``--executor local`` is today's in-process runner (``concurrency = 2``); ``--workers N`` starts a
local cluster of N worker processes for the job and stops it after (its start-up is included);
``--scheduler`` sends the job to a local cluster of N workers that the benchmark keeps running
(what a site with a standing cluster pays). The floors are judged on ``--workers N``.
Wall times are whole processes (fork to exit, planning included: the same for both); ``execute``
is the job report's ``duration_s`` (the exports alone); ``coord. cpu s`` is the CPU time of the job's
own process, the coordinator (in process: all the work; with Dask the workers' is not in it).
Speed ratios are in-process time / Dask time (above 1: Dask faster), on the whole process.

The **per-task overhead** is the round trip of an empty task on a running local cluster, one at a
time (submit, run, result), and the rate of 1,000 empty tasks submitted at once. Exit status 1
if a floor is missed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from distributed import Client, LocalCluster

from benchmarks.compare import compile_bytecode
from pipeline.demo import build_demo
from pipeline.jobs.executors import worker_env

#: (name, outputs TOML, speed floor of Dask over in-process)
JOBS = (
    ("ALTO + PAGE, no images", '[[outputs]]\nformat = "alto"\n\n[[outputs]]\nformat = "page"\n', 1.6),
    ("ALTO + JPEG images transcoded", '[[outputs]]\nformat = "alto"\nimages = true\n'
     'image = { format = "jpeg", quality = 80, max_size = 1000 }\n', 1.0),
)
REFERENCE = "in process (local)"


def job_file(folder: Path, corpus: Path, outputs: str) -> Path:
    path = folder / "job.toml"
    path.write_text(f'name = "bench"\ncorpus = "{corpus}"\nregistry = "{folder / "registry.sqlite"}"\n'
                    f'concurrency = 2\n\n[archive]\ndirectory = "{folder / "out"}"\n'
                    f'name = "{{document_id}}_{{format}}"\n\n{outputs}')
    return path


def run_job(job: Path, executor: list[str]) -> tuple[float, float, float]:
    """One ``pipeline run``: (wall s, execute s from the report, CPU s of the process tree)."""
    out = job.parent / "out"
    shutil.rmtree(out, ignore_errors=True)
    pipeline = str(Path(sys.executable).with_name("pipeline"))
    before = os.times()
    start = time.perf_counter()
    subprocess.run([pipeline, "-q", "run", str(job), *executor], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    report = json.loads((out / "bench-report.json").read_text())
    assert not report["failed"], report["failed"]
    return wall, report["duration_s"], cpu


def overhead(client: Client, count: int = 200) -> tuple[float, float, float]:
    """(median, fastest, empty tasks per second) on a running cluster."""
    from pipeline.jobs.executors import round_trip

    client.submit(round_trip, pure=False).result()  # warm up: the function reaches the workers
    times = []
    for _ in range(count):
        start = time.perf_counter()
        client.submit(round_trip, pure=False).result()
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    client.gather(client.map(lambda _: 0, range(1000), pure=False))
    rate = 1000 / (time.perf_counter() - start)
    return statistics.median(times), min(times), rate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--documents", type=int, default=20)
    ap.add_argument("--parts", type=int, default=50)
    ap.add_argument("--lines", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", type=Path, help="save the results here")
    ap.add_argument("--only", type=int, choices=(1, 2), help="run only job 1 (no images) or 2 (images)")
    args = ap.parse_args(argv)
    compile_bytecode()  # as an installed package has it: workers and coordinator alike
    results: dict[str, object] = {"load_before": os.getloadavg()}
    missed = []
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as tmp:
        folder = Path(tmp)
        corpus = folder / "corpus.sqlite"
        print(f"building {args.documents} documents x {args.parts} parts x {args.lines} lines", flush=True)
        build_demo(corpus, documents=args.documents, parts=args.parts, lines=args.lines,
                   image_size=(1240, 1754), seed=1)
        cluster = LocalCluster(n_workers=args.workers, processes=True, threads_per_worker=1,
                               dashboard_address=":0", silence_logs=logging.ERROR,
                               preload=["pipeline.jobs.executors"], env=worker_env(args.workers))
        client = Client(cluster)
        started = f"dask, {args.workers} workers started by the job"
        contenders = {REFERENCE: ["--executor", "local"], started: ["--workers", str(args.workers)],
                      "dask, running cluster": ["--scheduler", cluster.scheduler_address]}
        print(f"{'job':30} {'executor':36} {'runs':>4} {'wall s':>7} {'execute s':>9} "
              f"{'coord. cpu s':>12} speed")
        for number, (name, outputs, floor) in enumerate(JOBS, 1):
            if args.only not in (None, number):
                continue
            job = job_file(folder, corpus, outputs)
            times: dict[str, list[tuple[float, float, float]]] = {k: [] for k in contenders}
            for _ in range(args.repeat):
                for label, flags in contenders.items():
                    times[label].append(run_job(job, flags))
            medians = {k: tuple(statistics.median(r[i] for r in v) for i in range(3))
                       for k, v in times.items()}
            reference = medians[REFERENCE][0]
            for label, (wall, execute, cpu) in medians.items():
                print(f"{name:30} {label:36} {args.repeat:>4} {wall:7.2f} {execute:9.2f} {cpu:12.2f} "
                      f"{reference / wall:5.2f}x", flush=True)
            ratio = reference / medians[started][0]
            results[name] = {"medians": medians, "ratio": ratio, "floor": floor}
            if ratio < floor:
                missed.append(f"{name}: {ratio:.2f}x < {floor}x")
        median, fastest, rate = overhead(client)
        client.close()
        cluster.close()
    print(f"per-task overhead (empty task round trip, {args.workers} workers): median {median * 1e3:.1f} ms, "
          f"fastest {fastest * 1e3:.1f} ms; 1,000 empty tasks at once: {rate:,.0f} tasks/s")
    results |= {"overhead_median_s": median, "overhead_min_s": fastest, "empty_tasks_per_s": rate,
                "load_after": os.getloadavg()}
    print(f"load average before: {results['load_before']}, after: {results['load_after']}")
    for line in missed:
        print(f"MISSED {line}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
