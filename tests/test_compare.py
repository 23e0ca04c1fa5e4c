"""The benchmarks keep working: ``benchmarks.compare --quick`` prints every row and floor with
sane numbers, a missed floor fails the run, and every micro benchmark runs once.

Not timed assertions: the quick sizes are far too small for the floors to mean anything, so the
floors' judgement is tested on given results and through an impossible ``--floor``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import pytest

from benchmarks import compare
from benchmarks.baselines import naive
from pipeline.demo import build_demo

ROOT = Path(__file__).resolve().parents[1]
#: the contenders of each comparison (``group`` in the JSON)
CONTENDERS = {
    "startup": {"pipeline --version", "python -c pass (ref)"},
    "passthrough": {"pipeline", "zip -0 -q (ref)", "naive"},
    "passthrough-process": {"pipeline export", "zip -0 + sync (ref)"},
    "transcode": {"pipeline", "vips-loop (ref)", "naive"},
    "transcode-process": {"pipeline export", "vips-loop + fsync (ref)"},
    "alto": {"pipeline", "lxml (ref)", "naive"},
    "giant": {"pipeline", "naive"},
    "many-small": {"pipeline", "naive"},
    "many-big": {"pipeline", "naive"},
}


def quick(tmp_path: Path, *options: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    saved = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare", "--quick", "--json", str(saved), *options],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert saved.exists(), run.stderr
    return run, json.loads(saved.read_text())


@pytest.mark.slow
def test_quick_run_prints_every_row(tmp_path: Path) -> None:
    run, data = quick(tmp_path)
    assert run.returncode == 0, run.stderr  # --quick: the default floors are shown, not enforced
    for header in ("median s", "min-max s", "throughput", "vs ref", "vs naive", "peak RSS MB", "judged on"):
        assert header in run.stdout
    found: dict[str, set[str]] = {}
    for result in data["results"]:
        found.setdefault(result["group"], set()).add(result["contender"])
        if result["note"]:  # only Info-ZIP may be missing, and then it says so
            assert result["contender"].startswith("zip") and "not installed" in result["note"]
            continue
        assert 0 < result["low"] <= result["seconds"] <= result["high"] < 120
        assert result["runs"] == (compare.STARTUP_RUNS if result["group"] == "startup" else 1)
        assert 1 < result["rss_mb"] < 1024
        if result["group"] != "startup":
            assert result["throughput"].split()[0].replace(",", "").replace(".", "").isdigit()
        for ratio in (result["vs_ref"], result["vs_naive"]):
            assert ratio is None or 0 < ratio < 1000
        assert result["contender"] in run.stdout
    assert found == CONTENDERS
    assert [f["key"] for f in data["floors"]] == list(compare.TARGETS)
    for floor in data["floors"]:
        assert floor["name"] in run.stdout
        assert floor["value"] is not None and floor["enforced"] is False


@pytest.mark.slow
def test_a_missed_floor_fails_the_run(tmp_path: Path) -> None:
    """An impossible transcoding floor (1000x the loop's speed) is missed, a generous start-up floor
    (1000 s) is met: the run exits 1 and names the missed floor, and only it."""
    run, data = quick(tmp_path, "--floor", "transcode=1000", "--floor", "startup=1000")
    assert run.returncode == 1, run.stdout + run.stderr
    floors = {f["key"]: f for f in data["floors"]}
    assert floors["transcode"]["met"] is False and floors["transcode"]["limit"] == 1000
    assert floors["startup"]["met"] is True
    assert [line for line in run.stderr.splitlines() if line.startswith("compare: floor missed")] == [
        f"compare: floor missed: transcoding speed / pyvips loop (whole process, median): "
        f"{floors['transcode']['measured']}, target >= 1000x"
    ]
    assert "MISSED" in next(line for line in run.stdout.splitlines() if line.startswith("transcoding speed"))


def test_an_unknown_floor_is_a_usage_error() -> None:
    run = subprocess.run([sys.executable, "-m", "benchmarks.compare", "--quick", "--floor", "speed=2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "'speed' is not a floor; floors: startup, passthrough, transcode" in run.stderr


def measures(**times: list[float]) -> list[compare.Measure]:
    return [compare.Measure(label, runs, [t * 1.5 for t in runs], 50.0) for label, runs in times.items()]


def test_floors_are_judged_on_whole_process_medians() -> None:
    """Slow whole-process pass-through misses its floor even though its best in-process run meets
    it; a floor that could not be measured is skipped, never missed; --floor limits replace the
    defaults, and only enforced floors count."""
    results = [
        *compare.row_results("passthrough", "1. in process", 100, "MB/s", measures(
            pipeline=[0.5, 0.6, 2.0], **{"zip -0 -q": [1.0, 1.0, 1.0]}), ref="zip -0 -q"),
        *compare.row_results("passthrough-process", "1. whole process", 100, "MB/s", measures(
            **{"pipeline export": [1.3, 1.5, 1.6], "zip -0 + sync": [1.2, 1.0, 0.9]}),
            ref="zip -0 + sync", pipeline="pipeline export"),
        *compare.row_results("transcode-process", "2. whole process", 100, "MP/s", measures(
            **{"pipeline export": [1.0, 1.1, 3.0], "vips-loop + fsync": [1.5, 1.4, 1.6]}),
            ref="vips-loop + fsync", pipeline="pipeline export"),
    ]
    whole = results[2]
    assert (whole.seconds, whole.low, whole.high, whole.role) == (1.5, 1.3, 1.6, "pipeline")
    floors = {f.key: f for f in compare.evaluate(results)}
    assert floors["passthrough"].value == 1.5 and floors["passthrough"].met is False  # median / median
    assert floors["transcode"].value == pytest.approx(1.5 / 1.1) and floors["transcode"].met is True
    assert floors["startup"].met is None and floors["startup"].measured == "not measured"
    assert [f.key for f in compare.missed(floors.values())] == ["passthrough"]
    assert compare.missed(compare.evaluate(results, {"passthrough": 1.5})) == []
    stricter = {"transcode": 2.0}
    missed = compare.missed(compare.evaluate(results, stricter))
    assert [f.key for f in missed] == ["passthrough", "transcode"]
    only = compare.evaluate(results, stricter, enforce={"transcode"})
    assert [f.key for f in compare.missed(only)] == ["transcode"]


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


#: the micro benchmarks in benchmarks/test_micro.py
MICRO_BENCHMARKS = 8


@pytest.mark.slow
def test_micro_benchmarks_run_once(tmp_path: Path) -> None:
    """Each micro benchmark runs once and passes. Counted from pytest's JUnit XML report, not its
    summary line, which also counts warnings (a tmpfs clean-up warning changed it before)."""
    report = tmp_path / "micro.xml"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks", "--benchmark-disable", "-q", "-p", "no:cacheprovider",
         f"--junitxml={report}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    suite = ElementTree.parse(report).getroot().find("testsuite")
    assert suite is not None, report.read_text()
    counts = {key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")}
    assert counts == {"tests": MICRO_BENCHMARKS, "failures": 0, "errors": 0, "skipped": 0}, run.stdout
