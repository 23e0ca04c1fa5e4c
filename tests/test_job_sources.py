"""Jobs and exports that read a zip or folder of ALTO with its images (``source = ...``).

The zips are made from a real eScriptorium ALTO export (``fixtures/escriptorium-alto-cremma-mss-20``),
its three pages repeated under new names (each XML names its own image), so a job has enough parts
for its tasks to overlap.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.sinks import TEMP_PREFIX
from pipeline.verify import verify_archive

CREMMA = Path(__file__).resolve().parent / "fixtures" / "escriptorium-alto-cremma-mss-20"
PAGES = sorted(CREMMA.glob("*.xml"))
#: the CLI as a user runs it, in a process of its own
PIPELINE = [sys.executable, "-m", "pipeline.cli"]


def make_zip(path: Path, pages: int, *, damage: int | None = None) -> Path:
    """A zip of ``pages`` ALTO pages with JPEG images (stored, as eScriptorium writes them).

    ``damage``: that page's image member gets a flipped byte, so reading it fails its CRC check."""
    with zipfile.ZipFile(path, "w") as zf:
        for n in range(pages):
            source = PAGES[n % len(PAGES)]
            name = f"p{n + 1:03d}"
            xml = source.read_text(encoding="utf-8")
            xml = re.sub(r"<fileName>[^<]*</fileName>", f"<fileName>{name}.jpg</fileName>", xml)
            zf.writestr(f"{name}.xml", xml, zipfile.ZIP_DEFLATED)
            zf.writestr(f"{name}.jpg", source.with_suffix(".jpg").read_bytes(), zipfile.ZIP_STORED)
    if damage is not None:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(f"p{damage:03d}.jpg")
        data = bytearray(path.read_bytes())
        at = info.header_offset + 30 + len(info.filename) + len(info.extra) + 1000
        data[at] ^= 0xFF
        path.write_bytes(bytes(data))
    return path


def job(tmp_path: Path, source: Path, *, outputs: str, name: str = "job", extra: str = "") -> Path:
    config = tmp_path / f"{name}.toml"
    config.write_text(f'source = "{source}"\nconcurrency = 2\n{extra}\n'
                      f'[archive]\ndirectory = "out"\n{outputs}')
    return config


PASSTHROUGH = '[[outputs]]\nformat = "alto"\nimages = true\n[[outputs]]\nformat = "page"\nimages = true\n'


def zips(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.zip") if not p.name.startswith("."))


def report(folder: Path, job: str) -> dict:
    return json.loads((folder / f"{job}-report.json").read_text())


def test_tasks_sharing_a_zip_source_read_their_own_images(tmp_path: Path) -> None:
    """Two outputs with images from one zip, concurrency 2: both tasks extract the same members at
    once; each must read its own complete copy (it used to be rewritten under the other's reader)."""
    source = make_zip(tmp_path / "mss.zip", 40)
    config = job(tmp_path, source, outputs=PASSTHROUGH)
    for attempt in range(6):  # the race showed in 2 runs out of 3: six runs catch it
        out = tmp_path / f"out{attempt}"
        assert main(["run", str(config), "--set", f"archive.directory={out}"]) == 0
        written = zips(out)
        assert len(written) == 2 and all(verify_archive(z) == [] for z in written)
        for archive in written:
            with zipfile.ZipFile(archive) as zf:
                assert sum(n.endswith(".jpg") for n in zf.namelist()) == 40


def test_changed_only_skips_an_unchanged_zip_and_sees_a_changed_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = make_zip(tmp_path / "mss.zip", 6)
    config = job(tmp_path, source, outputs=PASSTHROUGH, extra="[select]\nchanged_only = true")
    assert main(["run", str(config)]) == 0
    assert len(zips(tmp_path / "out")) == 2
    capsys.readouterr()
    assert main(["run", str(config)]) == 0
    assert "0 archives written, 2 unchanged" in capsys.readouterr().out
    # same XML, one image replaced by another page's: both archives are out of date
    with zipfile.ZipFile(source) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    members["p002.jpg"] = members["p001.jpg"]
    with zipfile.ZipFile(source, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data, zipfile.ZIP_STORED if member.endswith(".jpg") else zipfile.ZIP_DEFLATED)
    assert main(["run", str(config)]) == 0
    assert "2 archives written, 0 unchanged" in capsys.readouterr().out


def test_planning_reads_no_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A dry run plans from the XML and the zip's directory: an image whose bytes are damaged is
    not noticed (it is only read when exported, and then fails its archive, not the job)."""
    source = make_zip(tmp_path / "mss.zip", 4, damage=3)
    config = job(tmp_path, source, outputs=PASSTHROUGH)
    assert main(["run", str(config), "--dry-run"]) == 0
    assert "2 archives to write" in capsys.readouterr().out
    assert main(["run", str(config)]) == 1
    err = capsys.readouterr().err
    assert "p003.jpg" in err and "Traceback" not in err
    assert zips(tmp_path / "out") == []


def test_extracted_images_are_deleted_once_in_the_archive(tmp_path: Path) -> None:
    """Disk use stays at a few images, not the whole zip: watch the job's temporary folder."""
    source = make_zip(tmp_path / "mss.zip", 60)
    config = job(tmp_path, source, outputs=PASSTHROUGH)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    run = subprocess.Popen([*PIPELINE, "run", str(config)], cwd=tmp_path,
                           env=os.environ | {"TMPDIR": str(tmp)}, stderr=subprocess.PIPE, text=True)
    most = 0
    while run.poll() is None:
        most = max(most, sum(1 for p in tmp.rglob("*") if p.is_file()))
        time.sleep(0.005)
    assert run.wait() == 0, run.stderr.read() if run.stderr else ""
    assert len(zips(tmp_path / "out")) == 2
    assert 0 < most <= 8, f"{most} extracted images on disk at once"
    assert list(tmp.rglob("*")) == []


def _wait_for_partial(folder: Path, process: subprocess.Popen[bytes]) -> Path:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = [p for p in folder.glob(f"{TEMP_PREFIX}*") if p.stat().st_size > 0]
        if found:
            return found[0]
        assert process.poll() is None, "the export finished before it could be caught writing"
        time.sleep(0.001)
    raise AssertionError("no partial file appeared")


def test_a_job_deletes_only_partial_files_of_dead_processes(tmp_path: Path) -> None:
    """A concurrent ``pipeline export -o DIR/`` into the job's folder keeps its temporary file;
    the one of an export killed midway is removed."""
    source = make_zip(tmp_path / "mss.zip", 60)
    out = tmp_path / "out"
    out.mkdir()
    export = [*PIPELINE, "export", "--source", str(source), "--images", "-o", f"{out}/"]
    killed = subprocess.Popen(export, stderr=subprocess.DEVNULL)
    stale = _wait_for_partial(out, killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    live = subprocess.Popen(export, stderr=subprocess.PIPE)
    try:
        wait_for = {stale}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (set(out.glob(f"{TEMP_PREFIX}*")) - wait_for):
            assert live.poll() is None
            time.sleep(0.001)
        (writing,) = set(out.glob(f"{TEMP_PREFIX}*")) - wait_for
        live.send_signal(signal.SIGSTOP)
        config = job(tmp_path, source, outputs='[[outputs]]\nformat = "page"\n')
        assert main(["run", str(config)]) == 0
        assert writing.exists(), "the job deleted a live export's temporary file"
        assert not stale.exists(), "the job left a dead export's temporary file"
    finally:
        live.send_signal(signal.SIGCONT)
    assert live.wait(timeout=300) == 0, live.stderr.read() if live.stderr else b""
    exported = [z for z in zips(out) if "_alto_" in z.name]
    assert len(exported) == 1 and verify_archive(exported[0]) == []
    assert list(out.glob(f"{TEMP_PREFIX}*")) == []


def test_a_failed_prune_is_reported_and_the_report_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = make_zip(tmp_path / "mss.zip", 3)
    config = job(tmp_path, source, outputs='[[outputs]]\nformat = "alto"\n', extra="", name="nightly")
    config.write_text(config.read_text().replace("[archive]\n", "[archive]\nkeep = 1\n"))
    assert main(["run", str(config), "--set", 'archive.name="old_{document_id}"']) == 0
    (old,) = zips(tmp_path / "out")
    old.unlink()
    old.mkdir()  # cannot be unlinked as a file: a real OSError from the prune
    (old / "keep").write_text("x")
    capsys.readouterr()
    assert main(["run", str(config)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "ExceptionGroup" not in err
    assert str(old) in err and "prune" in err
    written = report(tmp_path / "out", "nightly")
    assert len(written["exported"]) == 1
    assert [f["path"] for f in written["prune_failed"]] == [str(old)]
    assert old.is_dir()


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
@pytest.mark.parametrize("command", ["run", "export", "import"])
def test_an_endless_or_special_file_is_refused(tmp_path: Path, kind: str, command: str) -> None:
    path = Path("/dev/zero")
    if kind == "fifo":
        path = tmp_path / "pages.zip"
        os.mkfifo(path)
    args = {
        "run": ["run", str(job(tmp_path, path, outputs='[[outputs]]\nformat = "alto"\n'))],
        "export": ["export", "--source", str(path), "-o", str(tmp_path / "x.zip")],
        "import": ["import", str(path), "--corpus", str(tmp_path / "c.sqlite")],
    }[command]
    done = subprocess.run([*PIPELINE, *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, preexec_fn=_limited)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "not a regular file" in lines[0], done.stderr
    assert not (tmp_path / "x.zip").exists() and not list(tmp_path.glob(f"**/{TEMP_PREFIX}*"))
