"""The benchmarks keep working: ``benchmarks.compare --quick`` prints every row and floor with
sane numbers, and every micro benchmark runs once.

Not timed assertions: the quick sizes are far too small for the floors to mean anything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from benchmarks.baselines import naive
from pipeline.demo import build_demo

ROOT = Path(__file__).resolve().parents[1]
CONTENDERS = {
    "1. pass-through": {"pipeline", "zip -0 -q (ref)", "naive"},
    "2. JPEG -> JPEG": {"pipeline", "vips-loop (ref)", "naive"},
    "3. ALTO only": {"pipeline", "lxml (ref)", "naive"},
    "4. 2000x3000 TIFF": {"pipeline", "naive"},
    "5. 20 parts": {"pipeline", "naive"},
    "5. 100 parts": {"pipeline", "naive"},
}


@pytest.mark.slow
def test_quick_run_prints_every_row(tmp_path: Path) -> None:
    saved = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare", "--quick", "--json", str(saved)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    for header in ("median s", "throughput", "vs ref", "vs naive", "peak RSS MB", "floor"):
        assert header in run.stdout
    data = json.loads(saved.read_text())
    found: dict[str, set[str]] = {}
    for result in data["results"]:
        row = next(r for r in CONTENDERS if result["row"].startswith(r))
        found.setdefault(row, set()).add(result["contender"])
        if result["note"]:  # only Info-ZIP may be missing, and then it says so
            assert result["contender"].startswith("zip") and "not installed" in result["note"]
            continue
        assert 0 < result["seconds"] < 120
        assert result["runs"] == 1
        assert 1 < result["rss_mb"] < 1024
        assert result["throughput"].split()[0].replace(",", "").replace(".", "").isdigit()
        for ratio in (result["vs_ref"], result["vs_naive"]):
            assert ratio is None or 0 < ratio < 1000
        assert result["contender"] in run.stdout
    assert found == CONTENDERS
    assert len(data["floors"]) == 6
    for floor in data["floors"]:
        assert floor["name"] in run.stdout


def test_naive_archive_has_alto_images_and_mets(tmp_path: Path) -> None:
    corpus = tmp_path / "c.sqlite"
    build_demo(corpus, documents=1, parts=3, lines=12, image_size=(300, 400), seed=2)
    out = tmp_path / "naive.zip"
    assert naive.export(corpus, 1, out, images=True, image_format="JPEG") == 3
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert names[-1] == "METS.xml"
        assert sum(n.endswith(".xml") for n in names) == 4
        assert sum(n.endswith(".jpg") for n in names) == 3
        mets = zf.read("METS.xml").decode()
        assert all(name in mets for name in names[:-1])
        assert b"<String CONTENT=" in zf.read(names[1])


@pytest.mark.slow
def test_micro_benchmarks_run_once() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks", "--benchmark-disable", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "8 passed in" in run.stdout
