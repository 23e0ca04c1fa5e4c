"""``pipeline --version`` and ``--help`` start fast: they load none of the heavy libraries (libvips,
pydantic, rich, lxml, zipstream-ng, anyio); each command imports what it uses when it runs.

Not a timed test: Python's own import log (``-X importtime``) says which modules a real run of the
command loaded, whatever the machine's speed. ``benchmarks.compare`` reports the time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from pipeline.demo import build_demo
from pipeline.store import Corpus

HEAVY = ("pyvips", "pydantic", "rich", "lxml", "zipstream", "anyio")


def imported(*args: str) -> tuple[str, set[str]]:
    """Run ``python -X importtime ARGS``; its stdout and the top-level packages it loaded."""
    run = subprocess.run([sys.executable, "-X", "importtime", *args],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    # lines look like "import time:       231 |      34070 |   pipeline.memory"
    modules = {line.rsplit("|", 1)[1].strip().split(".")[0]
               for line in run.stderr.splitlines() if line.startswith("import time:") and "|" in line}
    assert "pipeline" in modules  # the log was read: the command's own package is in it
    return run.stdout, modules


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("export", "--help")])
def test_cli_start_up_loads_no_heavy_library(args: tuple[str, ...]) -> None:
    out, modules = imported("-m", "pipeline.cli", *args)
    assert "pipeline" in out
    assert not modules & set(HEAVY), f"pipeline {' '.join(args)} loaded {sorted(modules & set(HEAVY))}"


def test_export_still_loads_what_it_uses() -> None:
    """The other side: the modules the check looks for are the ones an export really loads
    (libvips only when an image is read or transcoded: see below)."""
    _, modules = imported("-c", "import pipeline.export, pipeline.vips; pipeline.vips.writable_formats(())")
    assert {"pyvips", "lxml", "zipstream"} <= modules


#: what a pass-through ALTO export from a corpus does not need: libvips (the images are copied and
#: their sizes stored), the exchange format and its brat annotations, the XML and METS readers
#: of folder sources, the schema validator
NOT_FOR_ALTO = ("pyvips", "pipeline.formats.brat", "pipeline.formats.exchange", "pipeline.writers.exchange",
                "pipeline.store.exchange", "pipeline.sources.folder", "pipeline.sources.xml",
                "pipeline.sources.mets", "pipeline.validate")


@pytest.fixture
def sized_corpus(tmp_path: Path) -> Path:
    """A demo corpus whose image sizes are stored, as a corpus that has seen its images once has."""
    path = tmp_path / "corpus.sqlite"
    build_demo(path, documents=1, parts=3, lines=4, image_size=(300, 400), seed=1)

    async def sizes() -> list[tuple[int, int, int]]:
        with Corpus.open(path) as store:
            document = await store.document(1)
            return [(p.id, p.width, p.height) async for p in store.parts(document)]

    with Corpus.open(path) as store, store.transaction() as writer:
        for part_id, width, height in anyio.run(sizes):
            writer.set_image_size(part_id, width, height)
    return path


#: runs the CLI with the arguments given, then prints every module loaded, on one line
LOADED = ("import sys; from pipeline.cli import main; code = main(sys.argv[1:]); "
          "print(*sorted(sys.modules)); sys.exit(code)")


def loaded(*args: str) -> set[str]:
    """The modules a real run of ``pipeline ARGS`` had loaded when it ended."""
    run = subprocess.run([sys.executable, "-c", LOADED, *args], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return set(run.stdout.splitlines()[-1].split())


def test_a_passthrough_alto_export_loads_only_what_it_uses(sized_corpus: Path, tmp_path: Path) -> None:
    """Each module imported costs every export its start-up: a pass-through ALTO export of JPEGs
    with stored sizes loads none of NOT_FOR_ALTO; exporting the exchange format does load its own,
    and transcoding loads libvips."""
    command = ("-q", "export", "--corpus", str(sized_corpus), "--document", "1")
    modules = loaded(*command, "--images", "-o", str(tmp_path / "alto.zip"))
    assert {"pipeline.writers.pagezip", "pipeline.formats.alto", "zipstream"} <= modules
    assert not modules & set(NOT_FOR_ALTO), sorted(modules & set(NOT_FOR_ALTO))
    modules = loaded(*command, "--format", "exchange", "-o", str(tmp_path / "exchange.zip"))
    assert {"pipeline.writers.exchange", "pipeline.formats.brat"} <= modules
    modules = loaded(*command, "--images", "--image-format", "png", "-o", str(tmp_path / "png.zip"))
    assert "pyvips" in modules
