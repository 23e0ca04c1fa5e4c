"""Outputs under real storage failures: a full disk while exporting, a folder without hard links."""

from __future__ import annotations

import errno
import os
import resource
import signal
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.demo import build_demo
from pipeline.sinks import local as archive_module
from pipeline.sinks import open_sink

#: a file-size limit that a fresh registry fits in, but no page image (let alone an archive)
FILE_LIMIT = 160_000


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """1 document x 3 parts, 600x800 JPEG pages (about 200 KB each, 1 MB as PNG)."""
    path = tmp_path / "corpus.sqlite"
    build_demo(path, documents=1, parts=3, lines=6, image_size=(600, 800), image_format="jpeg", seed=1)
    return path


def _limit_file_size() -> None:
    """In the child: no file may grow past FILE_LIMIT bytes; writing past it fails with EFBIG
    (SIGXFSZ, which would kill the process instead, is ignored, and stays so across exec)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


#: ``python THIEF pipeline-arguments...``: the CLI beside a thread that keeps failing libvips calls.
#: libvips keeps ONE error buffer for all threads and pyvips clears it whenever it raises, so this
#: thread takes (or swaps) the text of the export's own failures, as a concurrent transcode does.
THIEF = """
import sys, threading, pyvips
def steal():
    while True:
        try:
            pyvips.Image.new_from_buffer(b"not an image", "")
        except pyvips.Error:
            pass
threading.Thread(target=steal, daemon=True).start()
from pipeline.cli import main
sys.exit(main(sys.argv[1:]))
"""


def export_on_full_disk(
    corpus: Path, out: Path, tmp_path: Path, *args: str, thief: bool = False
) -> subprocess.CompletedProcess[str]:
    """``pipeline export`` in a child process whose files cannot grow past FILE_LIMIT.

    The mechanism is RLIMIT_FSIZE (setrlimit(2)), the real kernel limit, which needs no root and no
    mount: every write the export makes (the image spool, the archive) fails as it would on a full
    disk, with EFBIG where a full disk gives ENOSPC; both are an output failure, never a bad image.
    """
    registry = tmp_path / "registry.sqlite"
    python = [sys.executable, "-c", THIEF] if thief else [sys.executable, "-m", "pipeline.cli"]
    command = [*python, "-q", "export", "--corpus", str(corpus),
               "--document", "1", "--registry", str(registry), "--images", "-o", f"{out}/", *args]
    env = {**os.environ, "TMPDIR": str(out)}
    return subprocess.run(command, preexec_fn=_limit_file_size, capture_output=True, text=True, timeout=300,
                          env=env, check=False)


@pytest.mark.parametrize("on_error", ["fail", "skip"])
@pytest.mark.parametrize("image_format", ["png", "original"])
def test_full_disk_fails_the_export_as_an_output_error(
    corpus: Path, tmp_path: Path, image_format: str, on_error: str
) -> None:
    """Transcoding (png: the spool of the first image fills up) or passing through (the archive
    fills up), with either bad-image policy: one line naming the output and the system's reason,
    exit 1, nothing published and no temporary file left; no page is reported as a bad image."""
    out = tmp_path / "out"
    out.mkdir()
    done = export_on_full_disk(corpus, out, tmp_path, "--image-format", image_format, "--on-error", on_error)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("pipeline: error: cannot write"), lines[0]
    assert os.strerror(errno.EFBIG) in lines[0] and str(out) in lines[0]
    assert "part " not in lines[0] and "skipped" not in lines[0]
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_full_disk_is_an_output_error_whatever_libvips_error_text_says(
    corpus: Path, tmp_path: Path, on_error: str
) -> None:
    """The same full disk while another thread keeps taking libvips' error text: the export's
    write failure then reads ``vips2png: unable to write to target`` or ``system error: Unknown
    error -1`` (so judged by its text, it was a bad page about 1 run in 5). Judged from the spool
    file itself, it is an output error every time: five runs each."""
    for run in range(5):
        out = tmp_path / f"out{run}"
        out.mkdir()
        done = export_on_full_disk(corpus, out, tmp_path, "--image-format", "png", "--on-error", on_error,
                                   thief=True)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, done.stderr
        assert lines[0].startswith("pipeline: error: cannot write") and os.strerror(errno.EFBIG) in lines[0]
        assert "part " not in lines[0] and "skipped" not in lines[0]
        assert list(out.iterdir()) == []


def export_in_process(corpus: Path, out: str, tmp_path: Path) -> int:
    return main(["-q", "export", "--corpus", str(corpus), "--document", "1", "--images",
                 "--registry", str(tmp_path / "registry.sqlite"), "-o", out])


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_published_archive_is_synced_with_its_folder(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """After the rename (``-o FILE``) or the no-overwrite publish (``-o DIR/``), the folder itself
    is fsynced, so a power cut cannot lose the name of a "complete" archive.

    A power cut cannot be staged in a test: ``os.fsync`` is wrapped (the real call still runs) to
    see which descriptors are synced, and the archive's folder must be one of them once the
    archive is at its final name.
    """
    out = tmp_path / "out"
    out.mkdir()
    synced_after_publish: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode) and any(p.suffix == ".zip" for p in out.iterdir()):
            synced_after_publish.append((info.st_dev, info.st_ino))

    monkeypatch.setattr(os, "fsync", fsync)
    target = str(out / "a.zip") if kind == "file" else f"{out}/"
    assert export_in_process(corpus, target, tmp_path) == 0
    assert synced_after_publish == [(out.stat().st_dev, out.stat().st_ino)]


@pytest.mark.parametrize("renameat2", ["renameat2", "no renameat2"])
def test_archive_is_published_where_hard_links_are_unavailable(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, renameat2: str
) -> None:
    """On a file system without hard links (some FUSE and SMB mounts: link(2) fails with EPERM),
    a no-overwrite export still publishes its archive, under a free name, never replacing an
    existing file, and leaves no temporary file; it used to fail and delete the finished archive.

    No such file system can be mounted here (no vfat, no FUSE server), so ``os.link`` alone is made
    to fail as such a mount makes it fail; everything else, the publish included, is real. With
    "no renameat2" the C library is taken to lack it (macOS, old glibc): the O_EXCL placeholder
    path runs.
    """
    if renameat2 == "no renameat2":
        monkeypatch.setattr(archive_module, "_renameat2", None)

    def no_links(*_: object, **__: object) -> None:
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", no_links)
    out = tmp_path / "out"
    out.mkdir()
    assert export_in_process(corpus, f"{out}/", tmp_path) == 0
    (archive,) = out.iterdir()
    with zipfile.ZipFile(archive) as zf:
        assert zf.testzip() is None and "METS.xml" in zf.namelist()
    # the same final name twice: the second archive goes next to the first, which stays as it was
    first = archive.read_bytes()
    for n in (2, 3):
        output = open_sink(out, name=archive.name)
        output.write(b"archive %d" % n)
        assert output.commit() == str(archive.with_name(f"{archive.stem}_{n}.zip"))
    assert archive.read_bytes() == first
    assert archive.with_name(f"{archive.stem}_3.zip").read_bytes() == b"archive 3"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [archive.name, f"{archive.stem}_2.zip", f"{archive.stem}_3.zip"]
    )


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 512 KB tmpfs, mounted for the test: a disk that really fills up (ENOSPC). Mounting needs
    root (as in CI); elsewhere the RLIMIT_FSIZE tests above stand for it."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        busy = subprocess.run(["umount", str(mount)], capture_output=True, text=True, check=False)
        if busy.returncode != 0:  # a file left open: detach the mount anyway, then fail
            subprocess.run(["umount", "--lazy", str(mount)], check=True)
            pytest.fail(f"files left open on the full file system: {busy.stderr.strip()}")


def test_full_tmpfs_fails_a_transcoding_export_with_skip_as_an_output_error(
    corpus: Path, tmp_path: Path, tiny_filesystem: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The output folder (and so the image spool beside it) on a full file system: ENOSPC."""
    out = tiny_filesystem / "out"
    out.mkdir()
    code = main(["-q", "export", "--corpus", str(corpus), "--document", "1", "--images",
                 "--image-format", "png", "--on-error", "skip",
                 "--registry", str(tmp_path / "registry.sqlite"), "-o", f"{out}/"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith("pipeline: error: cannot write"), lines
    assert os.strerror(errno.ENOSPC) in lines[0] and str(out) in lines[0]
    assert list(out.iterdir()) == []
