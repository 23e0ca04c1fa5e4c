"""Archives of the demo corpus are byte-identical to those main wrote before the three-seams
redesign (issue 13): the digests in ``data/demo_digests.json`` were recorded by running THIS file
with ``--record`` in a checkout of main (the commit is named in the file).

Re-recorded once, deliberately, when every XML export began to say who made it (issue 20:
ALTO ``Processing``, PAGE ``MetadataItem`` of type ``processingStep``, METS ``metsHdr/agent``).
Before recording, every entry of every archive was compared with main's: entry names, times and
compression unchanged, and every XML entry that changed equal to main's once those three
provenance elements are removed; text and exchange outputs unchanged (same digests).

Everything goes through the command line only, so the same code runs on the old and the new
layout. Entry times in the zips come from the data, so equal data and options give equal bytes.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

DIGESTS = Path(__file__).parent / "data" / "demo_digests.json"
FIXTURES = Path(__file__).parent / "fixtures"

#: name -> ``pipeline export`` arguments (after ``--corpus/--document`` or ``--source``)
EXPORTS: dict[str, list[str]] = {
    "alto": ["--format", "alto"],
    "alto-images": ["--format", "alto", "--images"],
    "page": ["--format", "page"],
    "page-images": ["--format", "page", "--images"],
    "page-regions-parts": ["--format", "page", "--regions", "Main,orphan", "--parts", "1-2,4"],
    "text": ["--format", "text"],
    "exchange": ["--format", "exchange"],
    "exchange-document-utf16": ["--format", "exchange", "--unit", "document", "--offset-unit", "utf16"],
    "alto-jpeg-q80-max300": ["--format", "alto", "--images", "--image-format", "jpeg",
                             "--image-quality", "80", "--image-max-size", "300"],
    "page-png": ["--format", "page", "--images", "--image-format", "png"],
}
#: ``pipeline export --source`` of real exports in tests/fixtures
SOURCES: dict[str, tuple[str, list[str]]] = {
    "source-tapuscorpus-alto": ("escriptorium-tapuscorpus/alto", ["--format", "alto"]),
    "source-hooker-page-text": ("transkribus-page-joseph-hooker", ["--format", "text"]),
}
BULK_JOB = """
name = "bulk"
corpus = "{corpus}"
[archive]
directory = "{out}"
mode = "bulk"
[[outputs]]
format = "alto"
images = true
[[outputs]]
format = "text"
[[outputs]]
format = "exchange"
"""


def build(folder: Path) -> dict[str, str]:
    """Build the demo corpus in ``folder`` and export every variant; sha256 by variant name."""
    from pipeline.cli import main

    corpus = folder / "corpus.sqlite"
    assert main(["demo", str(corpus), "--documents", "2", "--parts", "4", "--lines", "12",
                 "--image-size", "400x560"]) == 0
    digests: dict[str, str] = {}
    for document in ("1", "2"):
        for name, args in EXPORTS.items():
            out = folder / f"{name}-{document}.out"
            assert main(["-q", "export", "--corpus", str(corpus), "--document", document, *args,
                         "-o", str(out)]) == 0, name
            digests[f"{name}-doc{document}"] = _sha(out)
    for name, (fixture, args) in SOURCES.items():
        out = folder / f"{name}.out"
        assert main(["-q", "export", "--source", str(FIXTURES / fixture), *args, "-o", str(out)]) == 0
        digests[name] = _sha(out)
    job = folder / "bulk.toml"
    job.write_text(BULK_JOB.format(corpus=corpus, out=folder / "bulk"))
    assert main(["-q", "run", str(job)]) == 0
    for path in sorted((folder / "bulk").glob("*.zip")):
        kind = path.name.split("_")[3]  # export_docall_bulk_<format>_...
        digests[f"bulk-{kind}"] = _sha(path)
    return digests


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_demo_archives_are_byte_identical_to_main_before_the_redesign(tmp_path: Path) -> None:
    recorded = json.loads(DIGESTS.read_text())
    digests = build(tmp_path)
    assert len(digests) == len(recorded["digests"]) == 2 * len(EXPORTS) + len(SOURCES) + 3
    differing = sorted(k for k in recorded["digests"] if digests.get(k) != recorded["digests"][k])
    assert not differing, f"archives differ from {recorded['commit']}: {differing}"


if __name__ == "__main__":  # python tests/test_identical.py --record COMMIT (in a checkout of main)
    import tempfile

    if sys.argv[1:2] != ["--record"] or len(sys.argv) != 3:
        sys.exit("usage: python tests/test_identical.py --record COMMIT")
    with tempfile.TemporaryDirectory() as tmp:
        result = build(Path(tmp))
    DIGESTS.write_text(json.dumps({"commit": sys.argv[2], "digests": result}, indent=1) + "\n")
    print(f"{len(result)} digests written to {DIGESTS}")
