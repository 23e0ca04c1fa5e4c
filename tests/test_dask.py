"""``pipeline run`` on a Dask cluster of real worker processes (``[executor] kind = "dask"``).

One local cluster of 2 worker processes (1 thread each) is shared by the module's tests, which
pass its address with ``--scheduler``; the first test lets the job start and stop a cluster of
its own with ``--workers 2``. Jobs run through the CLI, in this process (the coordinator), and
their archives are compared with those of the in-process executor.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from pipeline.cli import main
from pipeline.demo import build_demo
from pipeline.registry import Registry
from pipeline.sinks import TEMP_PREFIX
from pipeline.verify import verify_archive

pytestmark = pytest.mark.slow

#: one archive per document and output; names without the time, so two runs name alike
JOB = """\
name = "night"
corpus = "{corpus}"

[select]
changed_only = {changed_only}

[archive]
directory = "{out}"
mode = "document"
name = "{{document_id}}_{{format}}_{{fingerprint}}"

[[outputs]]
format = "alto"
images = true
image = {{ format = "jpeg", quality = 80, max_size = 400 }}

[[outputs]]
format = "page"

[[outputs]]
format = "text"
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, Client]]:
    """A local cluster of 2 worker processes: its address and a client of the test's own."""
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, memory_limit="1GiB",
                      dashboard_address=":0") as local, Client(local) as client:
        yield local.scheduler_address, client


@pytest.fixture(scope="module")
def demo4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 documents x 5 parts with JPEG pages (built once; tests copy it)."""
    path = tmp_path_factory.mktemp("dask-demo") / "demo.sqlite"
    build_demo(path, documents=4, parts=5, lines=12, image_size=(600, 800), seed=3)
    return path


@pytest.fixture
def corpus(tmp_path: Path, demo4: Path) -> Path:
    """A private copy (jobs write their registry into it, tests edit it)."""
    shutil.copyfile(demo4, tmp_path / "demo.sqlite")
    shutil.copytree(demo4.parent / "demo.media", tmp_path / "demo.media")
    return tmp_path / "demo.sqlite"


def job_file(tmp_path: Path, corpus: Path, out: Path, *, changed_only: bool = False) -> Path:
    path = tmp_path / f"job-{out.name}.toml"
    path.write_text(JOB.format(corpus=corpus, out=out, changed_only=str(changed_only).lower()))
    return path


def archives(folder: Path) -> dict[str, str]:
    """sha256 of every published archive in ``folder``, by name."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.suffix in (".zip", ".txt") and not p.name.startswith(".")}


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith((TEMP_PREFIX, ".pipeline-creating-"))]


def report(folder: Path) -> dict:
    return json.loads((folder / "night-report.json").read_text())


def test_local_cluster_gives_the_same_archives_as_in_process(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local, dask = tmp_path / "local", tmp_path / "dask"
    assert main(["run", str(job_file(tmp_path, corpus, local)), "--executor", "local"]) == 0
    assert main(["run", str(job_file(tmp_path, corpus, dask)), "--workers", "2",
                 "--set", 'executor.memory_limit="700MiB"']) == 0
    printed = capsys.readouterr()
    assert "12 archives written, 0 unchanged, 0 failed" in printed.out
    # the job's own cluster: 2 worker processes, each limited as asked (734,003,200 bytes)
    assert "executor dask: local cluster, 2 workers, memory limit 734.0 MB each" in printed.err
    expected = archives(local)
    assert len(expected) == 12 and archives(dask) == expected
    assert all(verify_archive(p) == [] for p in dask.iterdir() if p.suffix == ".zip")
    # the coordinator recorded each archive in the registry, with the worker's size and checksum
    done = {r.path: r for r in Registry(corpus).find(status="complete") if r.path.startswith(str(dask))}
    assert {Path(p).name for p in done} == set(expected)
    assert all(hashlib.sha256(Path(p).read_bytes()).hexdigest() == r.sha256 for p, r in done.items())
    entries = report(dask)["exported"]
    assert sorted(e["sha256"] for e in entries) == sorted(expected.values())


def _writer_pid(path: Path) -> int | None:
    """The process holding the flock of ``path`` (a sink locks its partial file while writing)."""
    try:
        inode = os.stat(path).st_ino
    except FileNotFoundError:
        return None
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
            return int(fields[4])
    return None


def test_a_worker_killed_midway_still_gives_every_archive_once(
    cluster: tuple[str, Client], corpus: Path, tmp_path: Path
) -> None:
    address, client = cluster
    out = tmp_path / "out"
    workers = set(client.run(os.getpid).values())
    codes: list[int] = []
    job = threading.Thread(target=lambda: codes.append(
        main(["run", str(job_file(tmp_path, corpus, out)), "--scheduler", address])))
    job.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and job.is_alive() and time.monotonic() < deadline:
        for partial in out.glob(f"{TEMP_PREFIX}*") if out.is_dir() else ():
            pid = _writer_pid(partial)
            if pid in workers:  # a worker writing an archive: kill it mid-write
                os.kill(pid, signal.SIGKILL)
                killed = partial.name
                break
        time.sleep(0.01)
    job.join(300)
    assert killed is not None, "the job ended before a worker could be killed while writing"
    assert codes == [0]
    result = report(out)
    assert not result["failed"]
    keys = [(e["output"], e["documents"][0]["id"]) for e in result["exported"]]
    assert sorted(keys) == sorted((o, d) for o in range(3) for d in range(1, 5))  # each exactly once
    assert len(archives(out)) == 12 and not leftovers(out) and killed not in os.listdir(out)
    assert all(verify_archive(p) == [] for p in out.glob("[!.]*.zip"))
    records = [r for r in Registry(corpus).list() if r.path.startswith(str(out))]
    assert sorted(r.status for r in records) == ["complete"] * 12
    assert workers - set(client.run(os.getpid).values()), "the killed worker was not replaced"


def test_a_failing_document_is_reported_and_the_others_complete(
    cluster: tuple[str, Client], corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with sqlite3.connect(corpus) as db:  # document 3's second page image is truncated
        (image,) = db.execute("SELECT image FROM core_documentpart WHERE document_id = 3"
                              " ORDER BY \"order\" LIMIT 1 OFFSET 1").fetchone()
    path = corpus.parent / "demo.media" / image
    path.write_bytes(path.read_bytes()[:3000])
    out = tmp_path / "out"
    assert main(["run", str(job_file(tmp_path, corpus, out)), "--scheduler", cluster[0]]) == 1
    result = report(out)
    (failed,) = result["failed"]
    assert failed["documents"][0]["id"] == 3 and failed["format"] == "alto"
    assert "part 2" in failed["error"] and Path(image).name in failed["error"]
    assert len(result["exported"]) == 11 and len(archives(out)) == 11 and not leftovers(out)
    err = capsys.readouterr().err
    assert "failed: " in err and "Traceback" not in err
    (record,) = Registry(corpus).find(status="failed")
    assert record.document_id == 3 and Path(image).name in (record.error or "")


def test_incremental_runs_skip_unchanged_documents(
    cluster: tuple[str, Client], corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    job = ["run", str(job_file(tmp_path, corpus, out, changed_only=True)), "--scheduler", cluster[0]]
    assert main(job) == 0
    first = archives(out)
    capsys.readouterr()
    assert main(job) == 0
    assert "0 archives written, 12 unchanged" in capsys.readouterr().out
    assert archives(out) == first
    with sqlite3.connect(corpus) as db:
        db.execute("UPDATE core_linetranscription SET content = 'changed' WHERE line_id IN"
                   " (SELECT l.id FROM core_line l JOIN core_documentpart p ON p.id = l.document_part_id"
                   "  WHERE p.document_id = 2 LIMIT 1)")
    assert main(job) == 0
    result = report(out)
    assert {e["documents"][0]["id"] for e in result["exported"]} == {2}
    assert len(result["exported"]) == 3 and len(result["skipped"]) == 9


def test_bulk_archives_stay_on_the_coordinator(
    cluster: tuple[str, Client], corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    job = job_file(tmp_path, corpus, out)
    assert main(["run", str(job), "--scheduler", cluster[0], "--set", 'archive.mode="bulk"',
                 "--set", 'archive.name="{job}_{format}"']) == 0
    assert sorted(archives(out)) == ["night_alto.zip", "night_pagexml.zip", "night_text.zip"]
    assert "bulk archives are written by this process" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "executor.workers=2"], 'executor: workers: only with kind = "dask"'),
    (["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"],
     "executor: workers and memory_limit start a local cluster"),
    (["--set", 'executor.memory_limit="lots"'], "executor.memory_limit"),
])
def test_executor_settings_are_checked_before_work(
    args: list[str], message: str, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(job_file(tmp_path, corpus, tmp_path / "out")), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_unreachable_scheduler_is_one_line(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(job_file(tmp_path, corpus, tmp_path / "out")), "--scheduler",
                 "tcp://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err and "Traceback" not in err
