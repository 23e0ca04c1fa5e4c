"""Seeded fuzzing of everything a user hands us (issue 12, "Must show"): mutated zips, ALTO/PAGE/METS
files, ``.ann`` files, page images and job configs, all started from the real files in
``tests/fixtures`` (and a real exchange archive exported from them), driven through ``pipeline.cli.main``
with ``import``, ``export --source``, ``verify`` and ``run`` (and a sample through a subprocess).

Whatever the mutation, the pipeline must answer like a tool, not crash like a script:

* the exit code is 0, 1 or 2;
* stderr holds only our lines (each starting ``pipeline: ``), at most one ``error:`` line, never a
  traceback, never a line of libvips' own;
* nothing is half-written: a failed export leaves no file at its final name and no temporary file
  beside it; a failed import leaves the corpus (compared as an SQL dump) and its media folder as they
  were; no temporary file or folder survives a command.

The cases are deterministic (``FUZZ_SEED``, default 12) and their number is ``FUZZ_CASES`` (default
240, about a minute on two cores; run thousands locally with ``FUZZ_KEEP_GOING=1`` to look for
defects). A failure names its
case, so ``FUZZ_ONLY=<case>`` replays it alone.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.demo import build_demo
from pipeline.sinks import TEMP_PREFIX

FIXTURES = Path(__file__).parent / "fixtures"
CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SEED = int(os.environ.get("FUZZ_SEED", "12"))
CASES = int(os.environ.get("FUZZ_CASES", "240"))
ONLY = os.environ.get("FUZZ_ONLY")
#: report every failing case at the end instead of stopping at the first (for long local runs)
KEEP_GOING = bool(os.environ.get("FUZZ_KEEP_GOING"))
#: share of the cases per kind of input
SHARES = {"zip": 0.28, "xml": 0.30, "ann": 0.16, "image": 0.16, "config": 0.10}
#: page sets (folder below fixtures, XML files used); images are the real ones beside them
SETS = {
    "cremma": ("escriptorium-alto-cremma-mss-20", ["01R_P1S7P178_001.xml", "01R_P1S7P178_002.xml"]),
    "mets": ("escriptorium-tapuscorpus/alto", ["METS.xml", "0_4a125_default.xml", "1_14b3a_default.xml",
                                               "2_a91bf_default.xml", "3_eac6a_default.xml"]),
    "page": ("transkribus-page-joseph-hooker", ["JDH_2_16_144_002.xml"]),
    "tapus-page": ("escriptorium-tapuscorpus/page", ["0_4a125_default.xml"]),
}


# --- mutations ------------------------------------------------------------------------------------

#: replacement values for attributes and numbers: the ones that broke readers before, and friends
NASTY_VALUES = [
    "", " ", "0", "-1", "-0", "1e999", "-1e999", "Infinity", "-inf", "nan", "NaN", "1e308", "1" * 400,
    "9" * 4401, "0x10", "1,5", "1.5.5", "a", "1 2 3", "1,2 3,4", "1 2", "\u00e9", "&amp;", "&#0;", "&#xFFFE;",
    "{", "}", "structure {type:", "readingOrder {index:" + "9" * 30 + ";}", "x" * 70_000,
    "a" * 20_000 + "{", "../../etc/passwd", "/abs/path.jpg", "C:\\x.jpg", "\u202e.jpg", "a\tb",
]
NASTY_TAGS = ["x:alto", "PcGts", "alto", "mets:mets", "TextLine", "TextBlock", "TextRegion", "Page",
              "String", "Coords", "Baseline", "Shape", "Polygon", "Tags", "OtherTag", "ReadingOrder"]


def flip(data: bytes, rnd: random.Random, count: int, region: tuple[int, int] | None = None) -> bytes:
    out = bytearray(data)
    lo, hi = region or (0, len(out))
    for _ in range(count):
        if hi > lo:
            out[rnd.randrange(lo, hi)] = rnd.randrange(256)
    return bytes(out)


def truncate(data: bytes, rnd: random.Random) -> bytes:
    return data[: rnd.randrange(len(data))] if data else data


def mutate_xml(text: str, rnd: random.Random) -> tuple[str, str]:
    """One or more textual mutations of an XML file; returns the text and what was done."""
    done = []
    for _ in range(rnd.choice([1, 1, 1, 2, 3])):
        kind = rnd.choice(["attribute", "attribute", "attribute", "number", "tag", "drop-line",
                           "dup-line", "truncate", "bytes", "dtd", "prefix", "text", "encoding"])
        done.append(kind)
        if kind == "attribute":
            spots = list(re.finditer(r'(\s[\w:]+)="([^"]*)"', text))
            if spots:
                m = rnd.choice(spots)
                value = rnd.choice(NASTY_VALUES).replace('"', "&quot;").replace("<", "&lt;")
                if value.startswith("&") is False:
                    value = value.replace("&", "&amp;")
                text = f'{text[:m.start(2)]}{value}{text[m.end(2):]}'
        elif kind == "number":
            spots = list(re.finditer(r"\d+", text))
            if spots:
                m = rnd.choice(spots)
                text = text[: m.start()] + rnd.choice(["9" * rnd.randrange(10, 5000), "-" + m[0], "0"]) + \
                    text[m.end():]
        elif kind == "tag":
            spots = list(re.finditer(r"<(/?)([\w:]+)", text))
            if spots:
                m = rnd.choice(spots)
                text = text[: m.start(2)] + rnd.choice(NASTY_TAGS) + text[m.end(2):]
        elif kind in ("drop-line", "dup-line"):
            lines = text.split("\n")
            i = rnd.randrange(len(lines))
            lines[i:i + 1] = [] if kind == "drop-line" else [lines[i], lines[i]]
            text = "\n".join(lines)
        elif kind == "truncate":
            text = text[: rnd.randrange(len(text) + 1)]
        elif kind == "bytes":
            data = flip(text.encode("utf-8", "surrogateescape"), rnd, rnd.randrange(1, 6))
            text = data.decode("utf-8", "surrogateescape")
        elif kind == "dtd":
            decl = rnd.choice([
                '<!DOCTYPE x [<!ATTLIST Page HEIGHT CDATA "inf" WIDTH CDATA "1e999">]>',
                '<!DOCTYPE x [<!ENTITY e "eee">]>', '<!DOCTYPE x SYSTEM "http://127.0.0.1:9/x.dtd">',
                '<!DOCTYPE x [<!ATTLIST TextLine custom CDATA "structure {type:' + "t" * 5000 + '">]>',
            ])
            body = re.sub(r"^<\?xml[^>]*\?>\s*", "", text)
            text = f'<?xml version="1.0" encoding="UTF-8"?>\n{decl}\n{body}'
        elif kind == "prefix":
            text = re.sub(r"<(\w+) ", r"<q:\1 ", text, count=1)
        elif kind == "text":
            spots = list(re.finditer(r">([^<]+)<", text))
            if spots:
                m = rnd.choice(spots)
                value = rnd.choice(NASTY_VALUES).replace("<", "&lt;").replace("&", "&amp;")
                text = text[: m.start(1)] + value + text[m.end(1):]
        elif kind == "encoding":
            text = re.sub(r'encoding="[^"]*"', f'encoding="{rnd.choice(["latin-1", "utf-16", "bogus", ""])}"',
                          text, count=1)
    return text, "+".join(done)


def _headers(data: bytes, signature: bytes) -> list[int]:
    return [m.start() for m in re.finditer(re.escape(signature), data)]


#: (signature, field offset, struct format) of zip header fields worth lying in
LOCAL, CENTRAL, END = b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"
ZIP_FIELDS = [
    (LOCAL, 6, "<H"), (LOCAL, 8, "<H"), (LOCAL, 14, "<I"), (LOCAL, 18, "<I"), (LOCAL, 22, "<I"),
    (LOCAL, 26, "<H"), (LOCAL, 28, "<H"),
    (CENTRAL, 8, "<H"), (CENTRAL, 10, "<H"), (CENTRAL, 16, "<I"), (CENTRAL, 20, "<I"), (CENTRAL, 24, "<I"),
    (CENTRAL, 28, "<H"), (CENTRAL, 30, "<H"), (CENTRAL, 42, "<I"),
    (END, 8, "<H"), (END, 10, "<H"), (END, 12, "<I"), (END, 16, "<I"), (END, 20, "<H"),
]
ZIP_LIES = {"<H": [0, 1, 0x800, 0x801, 8, 9, 12, 14, 99, 0xFFFF], "<I": [0, 1, 2, 0xFFFFFFFF, 0x7FFFFFF0]}


def mutate_zip(data: bytes, rnd: random.Random) -> tuple[bytes, str]:
    kind = rnd.choice(["field", "field", "field", "header-bytes", "bytes", "truncate", "name-bytes",
                       "append"])
    if kind == "field":
        signature, offset, fmt = rnd.choice(ZIP_FIELDS)
        spots = _headers(data, signature)
        if not spots:
            return data, kind
        at = rnd.choice(spots) + offset
        value = rnd.choice(ZIP_LIES[fmt] + [rnd.randrange(1 << (16 if fmt == "<H" else 32))])
        out = bytearray(data)
        out[at:at + struct.calcsize(fmt)] = struct.pack(fmt, value)
        return bytes(out), f"field {signature[2:].hex()}+{offset}={value:#x}"
    if kind == "header-bytes":
        spots = _headers(data, rnd.choice([b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"]))
        if not spots:
            return data, kind
        start = rnd.choice(spots)
        return flip(data, rnd, rnd.randrange(1, 4), (start, min(len(data), start + 46))), kind
    if kind == "bytes":
        return flip(data, rnd, rnd.randrange(1, 9)), kind
    if kind == "truncate":
        return truncate(data, rnd), kind
    if kind == "name-bytes":  # invalid UTF-8 in a name, flagged UTF-8 or not
        out = bytearray(data)
        for signature, flags, name_at in ((b"PK\x01\x02", 8, 46), (b"PK\x03\x04", 6, 30)):
            for start in _headers(data, signature)[:1]:
                out[start + name_at + 1] = rnd.choice([0xFF, 0xC3, 0x80, 0x00, ord("/"), ord("\\")])
                if rnd.random() < 0.7:
                    out[start + flags:start + flags + 2] = struct.pack("<H", 0x800)
        return bytes(out), kind
    return data + flip(data[: rnd.randrange(1, 300)], rnd, 3), kind


def mutate_ann(text: str, rnd: random.Random) -> tuple[bytes, str]:
    lines = text.split("\n")
    done = []
    for _ in range(rnd.choice([1, 1, 2, 3])):
        kind = rnd.choice(["offset", "offset", "id", "type", "tab", "value", "line", "bytes", "crlf-bom",
                           "discontinuous"])
        done.append(kind)
        i = rnd.randrange(len(lines))
        line = lines[i]
        if kind == "offset":
            spots = list(re.finditer(r"(?<= )\d+", line))
            if spots:
                m = rnd.choice(spots)
                line = line[: m.start()] + rnd.choice(["9" * 4401, "-1", "0", "99999999999999999999", "",
                                                       "1e3", str(rnd.randrange(200))]) + line[m.end():]
        elif kind == "id":
            line = rnd.choice(["T", "C", "R", "Tx", "T" + "9" * 5000, "*", "#1", "T1", "C1", ""]) + \
                line[line.find("\t"):] if "\t" in line else line
        elif kind == "type":
            kind_name = rnd.choice(["_SECTION", "_SECTION.", "A.", ".B", "1.2", "X_1.X_2",
                                    "Person.Name.First", "é.ü", "A B"])
            line = re.sub(r"\t[^ \t]+", lambda _: "\t" + kind_name, line, count=1)  # noqa: B023
        elif kind == "tab":
            line = line.replace("\t", rnd.choice(["", " ", "\t\t", "\t\t\t"]), 1)
        elif kind == "value":
            line = line.rsplit("\t", 1)[0] + "\t" + rnd.choice(NASTY_VALUES)
        elif kind == "line":
            lines.insert(i, rnd.choice(["", "garbage", "T9\t_SECTION 0 1\tBODY", "C9\ta b", "A1\tNeg T1",
                                        "N1\tReference T1 Wikipedia:1\tx", "T99\tA.B 5 3\tzz"]))
        elif kind == "bytes":
            data = flip(line.encode("utf-8", "surrogateescape"), rnd, 2)
            line = data.decode("utf-8", "surrogateescape")
        elif kind == "crlf-bom":
            lines = [("\ufeff" if n == 0 else "") + li + "\r" for n, li in enumerate(lines)]
            continue
        elif kind == "discontinuous":
            digits = "9" * rnd.choice([2, 30, 4401])
            line = re.sub(r" (\d+) (\d+)\t", lambda m: f" {m[1]} {m[2]};{m[2]} {digits}\t",  # noqa: B023
                          line, count=1)
        lines[i] = line
    return "\n".join(lines).encode("utf-8", "surrogateescape"), "+".join(done)


def mutate_image(data: bytes, rnd: random.Random) -> tuple[bytes, str]:
    kind = rnd.choice(["header", "header", "segment-length", "sof", "truncate", "bytes", "empty", "swap"])
    out = bytearray(data)
    if kind == "header":
        return flip(data, rnd, rnd.randrange(1, 5), (2, min(len(data), 700))), kind
    if kind == "segment-length":  # a JPEG segment whose length lies
        segments = []
        i = 2
        while i + 4 < len(data) and data[i] == 0xFF and data[i + 1] != 0xDA:
            segments.append(i)
            i += 2 + struct.unpack_from(">H", data, i + 2)[0]
        if segments:
            at = rnd.choice(segments) + 2
            length = struct.unpack_from(">H", data, at)[0]
            length += rnd.choice([-200, -3, -1, 1, 115, 4000])
            out[at:at + 2] = struct.pack(">H", max(0, min(0xFFFF, length)))
        return bytes(out), kind
    if kind == "sof":  # the frame header lies about the size
        at = data.find(b"\xff\xc0")
        if at < 0:
            at = data.find(b"\xff\xc2")
        if at >= 0:
            field = rnd.choice([5, 7])
            out[at + field:at + field + 2] = struct.pack(">H", rnd.choice([0, 1, 3, 65535, 30000]))
        return bytes(out), kind
    if kind == "truncate":
        return truncate(data, rnd), kind
    if kind == "bytes":
        return flip(data, rnd, rnd.randrange(1, 20)), kind
    if kind == "empty":
        return b"", kind
    return (FIXTURES / "transkribus-page-joseph-hooker/JDH_2_16_144_002.xml").read_bytes()[:4000], kind


CONFIG_VALUES = ['""', "0", "-1", "1e999", "true", "[]", "{}", '"../../../../etc"', '"/dev/zero"',
                 "99999999999", '"alto"', '"nope"', '["x"]', '[1, "x"]', '{ format = "bmp" }',
                 '{ max_size = 0 }', '"\\u0000"', '"a/b"', '"' + "x" * 5000 + '"', "nan", "inf"]


def mutate_config(text: str, rnd: random.Random) -> tuple[str, str]:
    lines = text.split("\n")
    done = []
    for _ in range(rnd.choice([1, 1, 2])):
        kind = rnd.choice(["value", "value", "value", "drop", "unknown-key", "dup", "garbage", "section"])
        done.append(kind)
        spots = [n for n, li in enumerate(lines) if re.match(r"\s*[\w.]+\s*=", li)]
        if kind == "value" and spots:
            n = rnd.choice(spots)
            value = rnd.choice(CONFIG_VALUES)
            lines[n] = re.sub(r"=.*", lambda _: f"= {value}", lines[n], count=1)  # noqa: B023
        elif kind == "drop" and spots:
            del lines[rnd.choice(spots)]
        elif kind == "unknown-key":
            lines.insert(rnd.randrange(len(lines) + 1), f"{rnd.choice(['colour', 'concurency', 'keep'])} = 1")
        elif kind == "dup" and spots:
            n = rnd.choice(spots)
            lines.insert(n, lines[n])
        elif kind == "garbage":
            lines.insert(rnd.randrange(len(lines) + 1), rnd.choice(["[[", "= 3", "x = ", "\x00", "[select"]))
        elif kind == "section":
            lines.append(rnd.choice([
                "[[outputs]]", '[[outputs]]\nformat = "exchange"\nunit = "document"', "[archive]",
                '[[outputs]]\nformat = "page"\nregions = ["Nope"]',
                '[[outputs]]\nimages = true\nimage = { format = "png", max_size = 50 }',
            ]))
    return "\n".join(lines), "+".join(done)


# --- running and checking -------------------------------------------------------------------------


@dataclass
class World:
    """What every case starts from: real files, a corpus to import into, a corpus to run jobs on."""

    root: Path
    tmp: Path                     #: tempfile.tempdir while cases run: must be empty after each
    corpus: Path                  #: holds one imported document; copied before each import
    job_corpus: Path              #: a small demo corpus for ``pipeline run``
    exchange_text: str
    exchange_ann: str


def _dump(corpus: Path) -> list[str]:
    with sqlite3.connect(corpus) as conn:
        return list(conn.iterdump())


def _files(folder: Path) -> list[str]:
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def check_stderr(err: str, where: str) -> None:
    assert "Traceback" not in err, f"{where}: traceback\n{err}"
    lines = [line for line in err.split("\n") if line]
    strays = [line for line in lines if not line.startswith("pipeline: ")]
    assert not strays, f"{where}: stderr lines that are not ours: {strays[:3]}\n{err[:3000]}"
    errors = [line for line in lines if line.startswith("pipeline: error: ")]
    assert len(errors) <= 1, f"{where}: {len(errors)} error lines\n{err[:3000]}"


class Runner:
    def __init__(self, world: World, capfd: pytest.CaptureFixture[str]) -> None:
        self.world, self.capfd = world, capfd
        self.outcomes: dict[int, int] = {0: 0, 1: 0, 2: 0}

    def cli(self, where: str, *argv: str | Path) -> tuple[int, str, str]:
        self.capfd.readouterr()
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse
            rc = exc.code if isinstance(exc.code, int) else 2
        out, err = self.capfd.readouterr()
        where = f"{where}: pipeline {' '.join(str(a) for a in argv)[:300]}"
        assert rc in (0, 1, 2), f"{where}: exit code {rc}\n{err[:3000]}"
        check_stderr(err, where)
        assert not _files(self.world.tmp), f"{where}: temporary files left: {_files(self.world.tmp)[:5]}"
        self.outcomes[rc] += 1
        return rc, out, err

    def import_(self, where: str, path: Path, case_dir: Path, *options: str) -> int:
        corpus = case_dir / "c.sqlite"
        shutil.copyfile(self.world.corpus, corpus)
        before, media = _dump(corpus), _files(case_dir / "c.media")
        rc, _, _ = self.cli(where, "import", path, "--corpus", corpus, *options)
        if rc != 0:
            assert _dump(corpus) == before, f"{where}: a failed import changed the corpus"
            assert _files(case_dir / "c.media") == media, f"{where}: a failed import left files in the media"
        return rc

    def export_source(self, where: str, path: Path, case_dir: Path, *options: str) -> int:
        out_dir = case_dir / "out"
        out_dir.mkdir(exist_ok=True)
        target = out_dir / "result.zip"
        target.unlink(missing_ok=True)
        rc, _, _ = self.cli(where, "export", "--source", path, *options, "-o", target)
        left = _files(out_dir)
        if rc == 0:
            assert left == ["result.zip"], f"{where}: {left}"
            if "text" not in options:
                with zipfile.ZipFile(target) as zf:
                    assert zf.testzip() is None
        else:
            assert left == [], f"{where}: a failed export left {left}"
        return rc

    def verify(self, where: str, path: Path) -> int:
        rc, out, err = self.cli(where, "verify", path)
        assert rc in (0, 1) and err == "", f"{where}: verify wrote to stderr\n{err}"
        assert all(line.startswith(f"{path}: ") for line in out.splitlines()), f"{where}: {out[:2000]}"
        return rc

    def run_job(self, where: str, config: Path, case_dir: Path) -> int:
        corpus = case_dir / "job.sqlite"
        shutil.copyfile(self.world.job_corpus, corpus)
        shutil.copytree(self.world.job_corpus.with_suffix(".media"), case_dir / "job.media")
        archives = case_dir / "archives"
        rc, _, _ = self.cli(where, "run", config, "--set", f"corpus={corpus}", "--set",
                            f"archive.directory={archives}")
        for name in _files(archives):
            assert not Path(name).name.startswith(TEMP_PREFIX), f"{where}: temporary archive {name} left"
            if name.endswith(".zip"):
                with zipfile.ZipFile(archives / name) as zf:
                    assert zf.testzip() is None, f"{where}: {name} is damaged"
        return rc


# --- cases ----------------------------------------------------------------------------------------


def _copy_set(name: str, dest: Path) -> tuple[Path, list[str]]:
    folder, xmls = SETS[name]
    src = FIXTURES / folder
    dest.mkdir()
    for p in src.iterdir():
        if p.suffix.lower() != ".md" and (p.suffix.lower() != ".xml" or p.name in xmls):
            os.link(p, dest / p.name)  # cheap; a mutated file is unlinked and written anew (see _rewrite)
    return dest, xmls


def _rewrite(path: Path, data: bytes) -> None:
    """Replace a (hard-linked) file's content without touching the fixture it is linked to."""
    path.unlink()
    path.write_bytes(data)


def _zip_folder(folder: Path, archive: Path, rnd: random.Random) -> Path:
    method = rnd.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
    with zipfile.ZipFile(archive, "w", method) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())
    return archive


def case_zip(runner: Runner, rnd: random.Random, where: str, case_dir: Path) -> str:
    folder, _ = _copy_set(rnd.choice(["cremma", "mets", "page"]), case_dir / "set")
    archive = _zip_folder(folder, case_dir / "export.zip", rnd)
    data, what = archive.read_bytes(), []
    for _ in range(rnd.choice([1, 1, 2])):
        data, kind = mutate_zip(data, rnd)
        what.append(kind)
    archive.write_bytes(data)
    where = f"{where} [{'; '.join(what)}]"
    runner.import_(where, archive, case_dir)
    runner.export_source(where, archive, case_dir, "--images", "--format", rnd.choice(["alto", "page"]))
    runner.verify(where, archive)
    return where


def case_xml(runner: Runner, rnd: random.Random, where: str, case_dir: Path) -> str:
    name = rnd.choice(list(SETS))
    folder, xmls = _copy_set(name, case_dir / "set")
    victim = folder / rnd.choice(xmls)
    text, what = mutate_xml(victim.read_text(encoding="utf-8"), rnd)
    _rewrite(victim, text.encode("utf-8", "surrogateescape"))
    where = f"{where} [{name}/{victim.name}: {what}]"
    runner.import_(where, folder, case_dir, *(["--link"] if rnd.random() < 0.5 else []))
    runner.export_source(where, folder, case_dir, "--format", rnd.choice(["alto", "page", "text"]))
    runner.verify(where, _zip_folder(folder, case_dir / "pages.zip", rnd))
    return where


def case_ann(runner: Runner, rnd: random.Random, where: str, case_dir: Path) -> str:
    data, what = mutate_ann(runner.world.exchange_ann, rnd)
    archive = case_dir / "exchange.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("test/letter.txt", runner.world.exchange_text)
        zf.writestr("ann/letter.ann", data)
    where = f"{where} [{what}]"
    if runner.import_(where, archive, case_dir) == 0:  # and back out: kept ids and passthrough lines
        out = case_dir / "back.zip"
        rc, _, _ = runner.cli(where, "export", "--corpus", case_dir / "c.sqlite", "--document", "letter",
                              "--format", "exchange", "--layer", "manual", "-o", out)
        assert rc != 0 or out.exists()
    return where


def case_image(runner: Runner, rnd: random.Random, where: str, case_dir: Path) -> str:
    folder, _ = _copy_set(rnd.choice(["cremma", "tapus-page"]), case_dir / "set")
    victim = rnd.choice(sorted(folder.glob("*.jpg")))
    data, what = mutate_image(victim.read_bytes(), rnd)
    _rewrite(victim, data)
    where = f"{where} [{victim.name}: {what}]"
    runner.import_(where, folder, case_dir, *(["--link"] if rnd.random() < 0.3 else []))
    options = rnd.choice([[], ["--image-max-size", "300"],
                          ["--image-format", "png", "--image-max-size", "200"]])
    runner.export_source(where, folder, case_dir, "--images", *options)
    return where


def case_config(runner: Runner, rnd: random.Random, where: str, case_dir: Path) -> str:
    base = rnd.choice(["demo.toml", "nightly.toml"])
    text, what = mutate_config((CONFIGS / base).read_text(encoding="utf-8"), rnd)
    config = case_dir / "job.toml"
    config.write_text(text.replace("max_size = 2000", "max_size = 100"), encoding="utf-8")
    where = f"{where} [{base}: {what}]"
    runner.run_job(where, config, case_dir)
    return where


CASES_BY_KIND: dict[str, Callable[[Runner, random.Random, str, Path], str]] = {
    "zip": case_zip, "xml": case_xml, "ann": case_ann, "image": case_image, "config": case_config,
}


def plan(cases: int, seed: int) -> Iterator[tuple[str, str, int]]:
    """(case name, kind, case seed) for ``cases`` cases, kinds interleaved, deterministic."""
    kinds = [kind for kind, share in SHARES.items() for _ in range(max(1, round(cases * share)))]
    random.Random(seed).shuffle(kinds)
    for n, kind in enumerate(kinds):
        yield f"{kind}-{seed}-{n}", kind, seed * 1_000_003 + n


# --- the world, built once ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("fuzz")
    corpus = root / "base.sqlite"
    assert main(["-q", "import", str(FIXTURES / "escriptorium-alto-cremma-mss-20"), "--corpus", str(corpus),
                 "--document", "page", "--layer", "manual", "--link"]) == 0
    exchange = root / "exchange.zip"
    assert main(["-q", "export", "--corpus", str(corpus), "--document", "page", "--format", "exchange",
                 "--unit", "document", "-o", str(exchange)]) == 0
    with zipfile.ZipFile(exchange) as zf:
        text = zf.read("test/page.txt").decode()
        ann = next((zf.read(n).decode() for n in zf.namelist() if n.endswith(".ann")), "")
    ann = ann or "C1\tPublished\n"
    # a real text, with annotations over its real words (the cremma page has none of its own)
    words = [m for m in re.finditer(r"\w{3,}", text)][:12]
    ann += "".join(f"T{n}\tEntity.{['Person', 'Place', 'Date'][n % 3]} {m.start()} {m.end()}\t{m[0]}\n"
                   for n, m in enumerate(words, start=1))
    ann += f"T99\t_SECTION 0 {len(text.split(chr(10))[0])}\tHEADER\nR1\tRel Arg1:T1 Arg2:T2\n"
    job_corpus = root / "job.sqlite"
    build_demo(job_corpus, documents=2, parts=2, lines=4, image_size=(300, 400), image_format="jpeg", seed=3)
    tmp = root / "tmp"
    tmp.mkdir()
    saved = tempfile.tempdir
    tempfile.tempdir = str(tmp)
    try:
        yield World(root, tmp, corpus, job_corpus, text, ann)
    finally:
        tempfile.tempdir = saved


def test_fuzz_every_input_kind(world: World, capfd: pytest.CaptureFixture[str]) -> None:
    runner = Runner(world, capfd)
    kinds: dict[str, int] = {}
    failures: list[str] = []
    seconds: dict[str, float] = {}
    for name, kind, case_seed in plan(CASES, SEED):
        if ONLY and name != ONLY:
            continue
        case_dir = world.root / name
        case_dir.mkdir()
        started = time.monotonic()
        try:
            CASES_BY_KIND[kind](runner, random.Random(case_seed), name, case_dir)
        except Exception as exc:
            if not KEEP_GOING:
                raise
            failures.append(f"{name}: {type(exc).__name__}: {str(exc)[:400]}")
            for path in world.tmp.iterdir():  # so that the next cases are judged on their own
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        finally:
            shutil.rmtree(case_dir, ignore_errors=True)
        kinds[kind] = kinds.get(kind, 0) + 1
        seconds[kind] = seconds.get(kind, 0.0) + time.monotonic() - started
    with capfd.disabled():
        print(f"\nfuzz: {sum(kinds.values())} cases {kinds}, commands by exit code {runner.outcomes}, "
              f"seconds by kind { {k: round(v, 1) for k, v in seconds.items()} }")
        print(*failures, sep="\n---\n")
    assert not failures, f"{len(failures)} failing cases"
    if not ONLY:
        assert sum(kinds.values()) >= CASES * 0.95
        assert runner.outcomes[0] and runner.outcomes[1] and runner.outcomes[2]  # the mutations do bite


def test_fuzz_sample_in_a_subprocess(tmp_path: Path) -> None:
    """A few mutated inputs through the installed entry point: what libvips or Python print at exit
    (after main returns) shows only here."""
    rnd = random.Random(SEED)
    for n in range(6):
        case_dir = tmp_path / str(n)
        case_dir.mkdir()
        folder, _ = _copy_set("cremma", case_dir / "set")
        victim = folder / "01R_P1S7P178_001.jpg"
        data, _ = mutate_image(victim.read_bytes(), rnd)
        _rewrite(victim, data)
        for argv in (["export", "--source", str(folder), "--images", "--image-format", "png",
                      "--image-max-size", "300", "-o", str(case_dir / "out.zip")],
                     ["import", str(folder), "--corpus", str(case_dir / "c.sqlite")]):
            done = subprocess.run([sys.executable, "-m", "pipeline.cli", *argv], capture_output=True,
                                  text=True, timeout=300, env={**os.environ, "TMPDIR": str(tmp_path)})
            assert done.returncode in (0, 1, 2)
            check_stderr(done.stderr, f"subprocess {n}: {argv[0]}")
