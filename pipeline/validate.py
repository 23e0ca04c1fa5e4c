"""Schema validation of ALTO, PAGE and METS with the XSDs shipped in ``pipeline/schemas``; TEI with
the RELAX NG ``tei_all`` through Jing, when it is installed.

Schemas are chosen from the root namespace, loaded once and reused. Checks libxml2 skips
(ALTO ``TAGREFS`` and METS ``FILEID`` references) are done here too, so one call says
everything that is wrong with a file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import IO

from lxml import etree

from pipeline import ns

SCHEMA_DIR = Path(__file__).parent / "schemas"

ALTO_NS, PAGE2019_NS, PAGE2013_NS, METS_NS = ns.ALTO, ns.PAGE, ns.PAGE_2013, ns.METS

#: root namespace -> XSD files that a document in it must pass (ALTO: declared 4.2 and latest 4.4)
SCHEMAS: dict[str, tuple[str, ...]] = {
    ALTO_NS: ("alto/alto-4-2.xsd", "alto/alto-4-4.xsd"),
    PAGE2019_NS: ("page/2019-07-15/pagecontent.xsd",),
    PAGE2013_NS: ("page/2013-07-15/pagecontent.xsd",),
    METS_NS: ("mets/mets.xsd",),
}

_lock = threading.Lock()

# Secure parser for anything that is read back: no entities, no DTD, no network.
PARSER_OPTIONS = dict(resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False)


def parser() -> etree.XMLParser:
    """A parser that never resolves entities, loads DTDs or touches the network."""
    return etree.XMLParser(**PARSER_OPTIONS)


@cache
def schema(relpath: str) -> etree.XMLSchema:
    """The XSD at ``pipeline/schemas/<relpath>``, parsed once."""
    return etree.XMLSchema(etree.parse(str(SCHEMA_DIR / relpath)))


def validate_tree(tree: etree._ElementTree) -> list[str]:
    """Errors of a parsed document, as ``"line N: message"`` strings; empty when valid."""
    root = tree.getroot()
    ns = etree.QName(root).namespace or ""
    if ns not in SCHEMAS:
        return [f"line {root.sourceline}: unknown root element {root.tag}"]
    errors: list[str] = []
    for rel in SCHEMAS[ns]:
        with _lock:  # XMLSchema objects are not safe to share between threads
            xsd = schema(rel)
            if not xsd.validate(tree):
                errors += [f"line {e.line}: {e.message} ({Path(rel).name})" for e in xsd.error_log]
    errors += _reference_errors(root, ns)
    return errors


def validate(source: str | Path | IO[bytes]) -> list[str]:
    """Parse ``source`` and return its schema and reference errors (empty when valid)."""
    try:
        tree = etree.parse(source if not isinstance(source, Path) else str(source), parser())
    except etree.XMLSyntaxError as exc:
        return [f"line {exc.lineno}: not well-formed: {syntax_message(exc)}"]
    return validate_tree(tree)


def syntax_message(exc: etree.XMLSyntaxError) -> str:
    """libxml2's message on one line: some (resource limits) carry a line break and a position."""
    return " ".join((exc.msg or "syntax error").split("\n")[0].split()) or "syntax error"


def _reference_errors(root: etree._Element, ns: str) -> list[str]:
    if ns == ALTO_NS:
        ids = set(root.xpath("//a:Tags/*/@ID", namespaces={"a": ALTO_NS}))
        return [
            f"line {el.sourceline}: TAGREFS {ref!r} names no OtherTag"
            for el in root.xpath("//*[@TAGREFS]")
            for ref in el.get("TAGREFS").split()
            if ref not in ids
        ]
    if ns == METS_NS:
        ids = set(root.xpath("//m:file/@ID", namespaces={"m": METS_NS}))
        return [
            f"line {el.sourceline}: FILEID {el.get('FILEID')!r} names no file"
            for el in root.xpath("//m:fptr", namespaces={"m": METS_NS})
            if el.get("FILEID") not in ids
        ]
    return []


# --- TEI: RELAX NG through Jing -------------------------------------------------------------------

TEI_NS = ns.TEI
TEI_SCHEMA = SCHEMA_DIR / "tei" / "tei_all.rng"
#: Jing prints ``file:line:column: error: message``
_JING_LINE = re.compile(r"^(?P<file>.*?):(?P<line>\d+):(?P<col>\d+): (?:error|fatal): (?P<msg>.*)$")


def jing() -> str | None:
    """The Jing executable (Debian package ``jing``), or None when it is not installed."""
    return shutil.which("jing")


def validate_tei(paths: Sequence[Path]) -> dict[Path, list[str]]:
    """Errors of TEI files against ``tei_all`` (one Jing run for all), as ``"line N: message"``.

    Raises :class:`FileNotFoundError` without Jing: lxml cannot compile ``tei_all`` in reasonable time.
    """
    exe = jing()
    if exe is None:
        raise FileNotFoundError("jing is not installed")
    errors: dict[Path, list[str]] = {Path(p): [] for p in paths}
    if not paths:
        return errors
    done = subprocess.run([exe, str(TEI_SCHEMA), *map(str, paths)], capture_output=True, text=True,
                          check=False)
    by_name = {str(p): p for p in errors}
    for line in done.stdout.splitlines():
        match = _JING_LINE.match(line)
        if match and match["file"] in by_name:
            errors[by_name[match["file"]]].append(f"line {match['line']}: {match['msg']} (tei_all.rng)")
    if done.returncode and not any(errors.values()):  # Jing failed without naming a file
        message = (done.stdout + done.stderr).strip().splitlines()
        detail = next((m for m in message if not m.startswith("[warning]")), f"exit {done.returncode}")
        for found in errors.values():
            found.append(f"jing failed: {detail}")
    return errors
