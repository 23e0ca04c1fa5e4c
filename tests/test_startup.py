"""``pipeline --version`` and ``--help`` start fast: they load none of the heavy libraries (libvips,
pydantic, rich, lxml, zipstream-ng); each command imports what it uses when it runs.

Not a timed test: Python's own import log (``-X importtime``) says which modules a real run of the
command loaded, whatever the machine's speed. ``benchmarks.compare`` reports the time.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("pyvips", "pydantic", "rich", "lxml", "zipstream")


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
    """The other side: the modules the check looks for are the ones an export really loads."""
    _, modules = imported("-c", "import pipeline.export, pipeline.images")
    assert {"pyvips", "lxml", "zipstream"} <= modules
