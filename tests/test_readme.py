"""The README's Usage section, run as written, in order, on a fresh folder (issue 12, item 21)."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pyvips

ROOT = Path(__file__).resolve().parent.parent


def usage_commands() -> list[str]:
    """The commands of the ```sh block of README.md's Usage section, continuation lines joined."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Usage\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README.md's Usage section has no ```sh block"
    text = block[1].replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_usage_runs_in_order_on_a_fresh_folder(tmp_path: Path) -> None:
    commands = usage_commands()
    programs = [c.split()[1] for c in commands if c.startswith("pipeline ")]
    assert {"demo", "export", "import", "run", "exports", "verify"} <= set(programs), commands
    assert commands[0] == ". .venv/bin/activate"

    demo = next(c for c in commands if c.startswith("pipeline demo"))
    width, height = map(int, re.search(r"--image-size (\d+)x(\d+)", demo).groups())
    max_size = int(re.search(r"--image-max-size (\d+)", " ".join(commands))[1])
    assert max_size < max(width, height), "the downscaling example must downscale the demo's pages"
    shown = re.search(r"pipeline exports show (\S+)", " ".join(commands))[1]
    assert re.fullmatch(r"\d{14}[0-9a-f]{12}", shown), f"{shown!r} is not the shape of an export id"

    (tmp_path / "tests").symlink_to(ROOT / "tests")  # read only: the fixtures the README imports
    shutil.copytree(ROOT / "configs", tmp_path / "configs")  # jobs write next to their config
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for command in commands[1:]:
        command = command.replace("| less", "| cat")
        if command.startswith("pipeline exports show "):  # the newest real id instead of the example
            with sqlite3.connect(tmp_path / "corpus.sqlite") as db:
                newest = db.execute("SELECT id FROM pipeline_export ORDER BY id DESC").fetchone()
            command = command.replace(shown, newest[0])
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"

    # what the commands promised: downscaled images, and everything verified
    resized = max(tmp_path.glob("exports/*.zip"), key=lambda p: p.stat().st_mtime_ns)
    with zipfile.ZipFile(resized) as zf:
        image = next(n for n in zf.namelist() if n.endswith(".jpg"))
        page = pyvips.Image.new_from_buffer(zf.read(image), "")
    assert max(page.width, page.height) == max_size
