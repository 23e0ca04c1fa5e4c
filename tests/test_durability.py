"""Outputs under real storage failures: a full disk while exporting, a folder without hard links."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.demo import build_demo

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


def export_on_full_disk(
    corpus: Path, out: Path, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """``pipeline export`` in a child process whose files cannot grow past FILE_LIMIT.

    The mechanism is RLIMIT_FSIZE (setrlimit(2)), the real kernel limit, which needs no root and no
    mount: every write the export makes (the image spool, the archive) fails as it would on a full
    disk, with EFBIG where a full disk gives ENOSPC; both are an output failure, never a bad image.
    """
    registry = tmp_path / "registry.sqlite"
    command = [sys.executable, "-m", "pipeline.cli", "-q", "export", "--corpus", str(corpus),
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
