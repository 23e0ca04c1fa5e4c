"""``pipeline run``: config files, incremental nightly runs, reproducible archives, faults.

Configs are run as shipped, pointed at a demo corpus in tmp_path with ``--set`` (paths given with
``--set`` are relative to the CWD, paths in the file to the file's folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.demo import build_demo
from pipeline.sinks import TEMP_PREFIX
from pipeline.verify import verify_archive

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.fixture
def corpus(tmp_path: Path, demo_corpus: Path) -> Path:
    """A private copy of the demo corpus (runs write the registry into it, tests edit it)."""
    path = tmp_path / "demo.sqlite"
    shutil.copyfile(demo_corpus, path)
    shutil.copytree(demo_corpus.parent / "demo.media", tmp_path / "demo.media")
    return path


def run(config: str | Path, corpus: Path, out: Path, *extra: str) -> int:
    return main(["run", str(CONFIGS / config if isinstance(config, str) else config),
                 "--set", f"corpus={corpus}", "--set", f"archive.directory={out}", *extra])


def archives(folder: Path) -> dict[str, str]:
    """sha256 of every archive in ``folder``, by name."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.suffix in (".zip", ".txt") and not p.name.startswith(".")}


def zips(folder: Path) -> list[Path]:
    """The published archives (pathlib's glob also matches hidden partial files)."""
    return sorted(p for p in folder.glob("*.zip") if not p.name.startswith("."))


def report(folder: Path, job: str) -> dict:
    return json.loads((folder / f"{job}-report.json").read_text())


@pytest.mark.parametrize("config", ["demo.toml", "nightly.toml", "benchmark.toml"])
def test_shipped_configs_run_and_verify(config: str, corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(config, corpus, out) == 0
    written = zips(out)
    assert written and all(verify_archive(z) == [] for z in written)
    assert not report(out, config.removesuffix(".toml"))["failed"]


def test_dry_run_writes_nothing(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert run("demo.toml", corpus, out, "--dry-run") == 0
    printed = capsys.readouterr().out
    assert "6 archives to write" in printed and "4 parts" in printed
    assert not out.exists()


def test_nightly_rerun_exports_nothing_then_only_the_changed_document(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    name = 'archive.name="{document_id}_{format}_{fingerprint}"'
    per_document = ("--set", 'archive.mode="document"', "--set", name)
    assert run("nightly.toml", corpus, out, *per_document) == 0
    first = archives(out)
    assert len(first) == 4
    capsys.readouterr()
    assert run("nightly.toml", corpus, out, *per_document) == 0
    assert "0 archives written, 4 unchanged" in capsys.readouterr().out
    assert archives(out) == first

    with sqlite3.connect(corpus) as db:
        (line_id,) = db.execute(
            "SELECT t.line_id FROM core_linetranscription t JOIN core_line l ON l.id = t.line_id"
            " JOIN core_documentpart p ON p.id = l.document_part_id WHERE p.document_id = 2 LIMIT 1"
        ).fetchone()
        db.execute("UPDATE core_linetranscription SET content = 'changed' WHERE line_id = ?", (line_id,))
    assert run("nightly.toml", corpus, out, *per_document) == 0
    result = report(out, "nightly")
    assert {e["documents"][0]["id"] for e in result["exported"]} == {2}
    assert len(result["exported"]) == 2 and len(result["skipped"]) == 2
    # retention (keep = 7) leaves the older archives of document 2 alongside the new ones
    assert set(first) < set(archives(out))


def test_retention_keeps_the_newest(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    settings = ("--set", "archive.keep=1", "--set", 'outputs=[{format = "text"}]')
    for text in ("one", "two"):
        with sqlite3.connect(corpus) as db:
            db.execute("UPDATE core_linetranscription SET content = ? WHERE id = 1", (text,))
        assert run("nightly.toml", corpus, out, *settings) == 0
    (kept,) = zips(out)
    last = report(out, "nightly")
    assert last["pruned"] and kept == Path(last["exported"][0]["path"])


def test_two_runs_give_identical_archives(corpus: Path, tmp_path: Path) -> None:
    for config in ("demo.toml", "nightly.toml"):
        a, b = tmp_path / config / "a", tmp_path / config / "b"
        assert run(config, corpus, a) == 0 and run(config, corpus, b) == 0
        assert sorted(archives(a).values()) == sorted(archives(b).values())


@pytest.mark.parametrize(("setting", "key"), [
    ("outputs.0.colour=1", "outputs[0].colour: unknown key"),
    ("concurrency='many'", "concurrency: Input should be a valid integer"),
    ("outputs.1.format='docx'", "outputs[1].format"),
    ("corpus='missing.sqlite'", "corpus: no such corpus file"),
    ("outputs.1.regions=['Main', 'Footnote']", "outputs[1].regions: document"),
    ("outputs.0.layer='nope'", "outputs[0].layer: document"),
    ("archive.name='{format}'", "archive: a per-document archive name needs {document_id}"),
])
def test_bad_configs_exit_2_naming_the_key(
    setting: str, key: str, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["run", str(CONFIGS / "demo.toml"), "--set", f"corpus={corpus}",
                 "--set", f"archive.directory={out}", "--set", setting]) == 2
    err = capsys.readouterr().err
    assert "demo.toml" in err and key in err
    assert not out.exists()


def test_bad_config_file(tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "job.toml"
    config.write_text(f'corpus = "{corpus.name}"\n[archive]\ndirectory = "x"\n[[outputs]]\nformat = 3\n')
    assert main(["run", str(config)]) == 2
    assert "job.toml: outputs[0].format: Input should be" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_job_resumes(tmp_path: Path) -> None:
    corpus = tmp_path / "big.sqlite"
    build_demo(corpus, documents=6, parts=40, lines=12, image_size=(1200, 1600), seed=1, link_images=True)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pipeline.cli", "run", str(CONFIGS / "benchmark.toml"),
               "--set", f"corpus={corpus}", "--set", f"archive.directory={out}",
               "--set", "concurrency=1", "--set", "select.changed_only=true"]
    env = dict(os.environ, PYTHONPATH=str(CONFIGS.parent))
    job = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not zips(out) and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.wait()
    done = zips(out)
    assert 0 < len(done) < 6, "the job should have been killed midway"
    assert all(verify_archive(z) == [] for z in done)

    assert subprocess.run(command, env=env, capture_output=True).returncode == 0
    result = report(out, "benchmark")
    assert len(result["skipped"]) == len(done) and len(result["exported"]) == 6 - len(done)
    assert len(zips(out)) == 6
    assert all(verify_archive(z) == [] for z in zips(out))
    assert not list(out.glob(f"{TEMP_PREFIX}*"))


def test_archive_published_before_its_registry_update_is_recovered(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kill between the rename and the registry update leaves a complete file and a 'running'
    record: the next run takes the file as done and records it, instead of exporting it again."""
    out = tmp_path / "out"
    per_document = ("--set", 'archive.mode="document"', "--set",
                    'archive.name="{document_id}_{format}_{fingerprint}"')
    assert run("nightly.toml", corpus, out, *per_document) == 0
    first = archives(out)
    with sqlite3.connect(corpus) as db:
        (victim, sha) = db.execute("SELECT id, sha256 FROM pipeline_export WHERE path LIKE ? LIMIT 1",
                                   (f"{out}/%",)).fetchone()
        db.execute("UPDATE pipeline_export SET status = 'running', size = NULL, sha256 = NULL WHERE id = ?",
                   (victim,))
    capsys.readouterr()
    assert run("nightly.toml", corpus, out, *per_document) == 0
    assert "0 archives written, 4 unchanged" in capsys.readouterr().out
    assert archives(out) == first
    with sqlite3.connect(corpus) as db:
        row = db.execute("SELECT status, sha256 FROM pipeline_export WHERE id = ?", (victim,)).fetchone()
    assert row == ("complete", sha)


FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_a_job_can_read_a_folder_of_alto_instead_of_a_corpus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "convert.toml"
    config.write_text(f'''
source = "{FIXTURES / "escriptorium-tapuscorpus" / "alto"}"
[select]
changed_only = true
[archive]
directory = "out"
[[outputs]]
format = "alto"
images = true
image = {{ format = "jpeg", max_size = 800 }}
[[outputs]]
format = "page"
''')
    assert main(["run", str(config)]) == 0
    written = zips(tmp_path / "out")
    assert len(written) == 2 and all(verify_archive(z) == [] for z in written)
    assert (tmp_path / "out" / ".pipeline-registry.sqlite").is_file()
    capsys.readouterr()
    assert main(["run", str(config)]) == 0
    assert "0 archives written, 2 unchanged" in capsys.readouterr().out


@pytest.mark.parametrize("inputs", ['corpus = "{c}"\nsource = "{s}"', ""])
def test_a_job_reads_exactly_one_input(tmp_path: Path, corpus: Path, inputs: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "job.toml"
    config.write_text(inputs.format(c=corpus, s=FIXTURES) + '\n[archive]\ndirectory = "x"\n'
                      '[[outputs]]\nformat = "alto"\n')
    assert main(["run", str(config)]) == 2
    assert "either corpus" in capsys.readouterr().err


def test_a_skipped_image_makes_the_job_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "c.sqlite"
    summary = build_demo(corpus, documents=2, parts=2, lines=12, image_size=(300, 400))
    victim = sorted((summary.media_root / "documents" / "2").iterdir())[0]
    victim.write_bytes(b"not an image at all")
    out = tmp_path / "out"
    assert run("demo.toml", corpus, out, "--set", 'outputs.0.on_error="skip"') == 1
    exported = report(out, "demo")["exported"]
    skipped = [e for e in exported if e["skipped_images"]]
    assert len(skipped) == 1 and skipped[0]["documents"][0]["id"] == 2
    assert all(verify_archive(z) == [] for z in zips(out))


def test_outputs_without_layer_read_each_imported_documents_own_layer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Imports name their layers after themselves; an output without ``layer`` reads ``manual`` if
    a document has it, else its only layer, decided per document when the job is planned."""
    corpus = tmp_path / "c.sqlite"
    assert main(["import", str(FIXTURES / "escriptorium-tapuscorpus" / "page"), "--corpus", str(corpus)]) == 0
    assert main(["import", str(FIXTURES / "escriptorium-tapuscorpus" / "alto"), "--corpus", str(corpus)]) == 0
    config = tmp_path / "job.toml"
    config.write_text(f'corpus = "{corpus}"\n[select]\nchanged_only = true\n[archive]\ndirectory = "out"\n'
                      '[[outputs]]\nformat = "page"\n')
    assert main(["run", str(config)]) == 0
    written = zips(tmp_path / "out")
    assert len(written) == 2 and all(verify_archive(z) == [] for z in written)
    with sqlite3.connect(corpus) as db:
        layers = dict(db.execute("SELECT document_id, layer FROM pipeline_export WHERE status = 'complete'"))
    assert layers == {1: "Default PAGE Import", 2: "METS Import"}
    capsys.readouterr()
    assert main(["run", str(config)]) == 0
    assert "0 archives written, 2 unchanged" in capsys.readouterr().out
    with sqlite3.connect(corpus) as db:  # a second layer: the job cannot choose for document 1
        db.execute("INSERT INTO core_transcription (document_id, name, archived, created_at)"
                   " VALUES (1, 'kraken:catmus-print-fondue-large', 0, '2024-03-01T10:00:00+00:00')")
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "outputs[0].layer" in err and "'kraken:catmus-print-fondue-large'" in err
