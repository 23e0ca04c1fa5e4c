"""The ``.ann`` line grammar of the expert.ai exchange archive (spec exchange-archive.md, 2-5).

Pure: bytes in, annotations out, and back. The reader is tolerant (CRLF, BOM, double TABs, blank
lines; unknown or unparseable lines become verbatim passthrough lines with a warning), the writer
strict (it raises rather than write a line the Platform or brat would misread). Offsets are code
points by default; :class:`OffsetMap` converts them to and from UTF-16 units for Java consumers.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from pipeline.errors import PipelineError

OffsetUnit = Literal["codepoint", "utf16"]
OFFSET_UNITS: tuple[OffsetUnit, ...] = ("codepoint", "utf16")

#: the writer's section type (the value field carries the name); *unconfirmed* exact Platform bytes
SECTION_TYPE = "_SECTION"
#: the default section: all text is BODY, so it is never written
BODY = "BODY"
BOM = "\ufeff"

#: ids and offsets longer than this are not numbers anyone wrote (and int() refuses 4,300 digits)
MAX_DIGITS = 18
_ID = re.compile(rf"([A-Za-z#*])(\d{{0,{MAX_DIGITS}}})")
_SPAN = re.compile(r"(\S+) (\d+ \d+(?:;\d+ \d+)*)")
_COMPONENT = re.compile(r"[A-Za-z0-9_]+")
_ENCODED_DIGITS = re.compile(r"X_([0-9]+)")
_FORBIDDEN_IN_VALUE = re.compile(r"[\t\r\n]")


class BratError(PipelineError):
    """Input that cannot be read, or annotations that cannot be written, named by file and line."""


@dataclass(frozen=True, slots=True)
class Category:
    """``C<n>\\t<category id>``: a document category (an opaque id such as an IPTC code)."""

    category: str
    id: str | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class Extraction:
    """``T<n>\\t<Group>.<Class> <start> <end>\\t<value>``; names decoded (no ``X_``), value opaque."""

    group: str
    cls: str
    start: int
    end: int
    value: str
    id: str | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class Section:
    """``T<n>\\t_SECTION <start> <end>\\t<NAME>``; ``value`` is the value field of the
    ``_SECTION.<NAME>`` reader form, kept but not interpreted."""

    name: str
    start: int
    end: int
    id: str | None = None
    line: int = 0
    value: str | None = None


Span = Extraction | Section


@dataclass(frozen=True, slots=True)
class Passthrough:
    """A line written back verbatim: other brat kinds, discontinuous spans, unparseable lines."""

    text: str
    line: int = 0
    fragments: tuple[tuple[int, int], ...] = ()

    @property
    def id(self) -> str:
        return self.text.partition("\t")[0]


@dataclass(slots=True)
class AnnFile:
    """One parsed ``.ann``: annotations in input order, passthrough lines, and what was odd about it."""

    categories: list[Category] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    passthrough: list[Passthrough] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.categories or self.spans or self.passthrough)


# --- offsets --------------------------------------------------------------------------------


class OffsetMap:
    """Code-point offsets of one text to and from ``unit`` offsets.

    UTF-16 offset = code-point offset + astral characters before it (spec 3); only the astral
    positions are kept, so a text without emoji costs nothing.
    """

    def __init__(self, text: str, unit: OffsetUnit = "codepoint") -> None:
        self.unit = unit
        astral = [i for i, c in enumerate(text) if c > "\uffff"] if unit == "utf16" else []
        self._astral = astral
        self._astral_units = [pos + k for k, pos in enumerate(astral)]
        self.length = len(text) + len(astral)

    def encode(self, offset: int) -> int:
        """Code points → unit."""
        return offset + bisect_left(self._astral, offset)

    def decode(self, offset: int) -> int:
        """Unit → code points; ValueError for an offset inside a surrogate pair."""
        k = bisect_left(self._astral_units, offset)
        if k and self._astral_units[k - 1] == offset - 1:
            raise ValueError(f"offset {offset} falls inside a surrogate pair")
        return offset - k


# --- names --------------------------------------------------------------------------------


def encode_name(name: str) -> str:
    """``1999`` → ``X_1999``: the Platform's rule for all-digit group and class names."""
    return f"X_{name}" if name.isascii() and name.isdigit() else name


def decode_name(name: str) -> str:
    """``X_1999`` → ``1999``; other names unchanged."""
    m = _ENCODED_DIGITS.fullmatch(name)
    return m[1] if m else name


# --- reading ------------------------------------------------------------------------------


def decode_utf8(data: bytes, member: str) -> str:
    """Strict UTF-8; the error names the member and the line of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise BratError(f"{member}:{line}: not valid UTF-8 (byte {exc.start}: {exc.reason})") from None


def parse_ann(data: bytes, member: str) -> AnnFile:
    """Parse ``.ann`` bytes (syntax only; offsets are checked by :func:`resolve`).

    Split on LF only (never ``str.splitlines()``: U+2028 and friends may occur in values), one
    trailing CR and trailing spaces stripped, blank lines skipped but counted.
    """
    text = decode_utf8(data, member).removeprefix(BOM)
    result = AnnFile()
    seen: set[str] = set()
    for number, raw in enumerate(text.split("\n"), start=1):
        raw = raw.removesuffix("\r")
        line = raw.rstrip(" ")
        if not line:
            continue
        where = f"{member}:{number}"
        item = _parse_line(line, number, where, result.warnings)
        if isinstance(item, Passthrough):
            result.passthrough.append(replace(item, text=raw))
            continue
        if item.id in seen:
            result.warnings.append(f"{where}: error: duplicate id {item.id}; line kept as passthrough")
            result.passthrough.append(Passthrough(raw, number))
            continue
        seen.add(item.id or "")
        (result.categories if isinstance(item, Category) else result.spans).append(item)
    return result


def _parse_line(line: str, number: int, where: str, warnings: list[str]) -> Category | Span | Passthrough:
    """One non-blank line; anything not a C, extraction or section line becomes passthrough."""
    ident, tab, rest = line.partition("\t")
    rest = rest.removeprefix("\t")  # third-party tools write two TABs after the ID
    m = _ID.fullmatch(ident)
    kind = m[1] if m and tab and (m[2] or m[1] == "*") else None
    if kind == "C" and rest and not re.search(r"[\t ]", rest):
        return Category(rest, ident, number)
    if kind == "T":
        span = _parse_span(ident, rest, number, where, warnings)
        if span is not None:
            return span
    if kind is None:
        warnings.append(f"{where}: unparseable line kept as passthrough")
    elif kind != "T":
        label = "malformed category" if kind == "C" else f"{kind!r} annotation"
        warnings.append(f"{where}: {label} kept as passthrough")
    return Passthrough(line, number, _fragments(rest, where) if kind == "T" else ())


def _parse_span(ident: str, rest: str, number: int, where: str, warnings: list[str]) -> Span | None:
    head, tab, value = rest.partition("\t")
    m = _SPAN.fullmatch(head)
    problem = None
    if not tab or not m:
        problem = "malformed T line"
    elif "\t" in value:
        problem = "TAB inside the value of a T line"
    elif ";" in m[2]:
        problem = "discontinuous span"
    elif not value:
        problem = "empty value"
    if problem is None:
        assert m is not None
        start, end = (_offset(v, where) for v in m[2].split(" "))
        kind, dot, name = m[1].partition(".")
        if kind == SECTION_TYPE and (name or not dot):
            return Section(name, start, end, ident, number, value) if dot else Section(
                value, start, end, ident, number
            )
        group, _, cls = m[1].partition(".")
        if dot and _COMPONENT.fullmatch(group) and _COMPONENT.fullmatch(cls):
            return Extraction(decode_name(group), decode_name(cls), start, end, value, ident, number)
        problem = f"type {m[1]!r} is not Group.Class"
    warnings.append(f"{where}: {problem}; kept as passthrough")
    return None


def _fragments(rest: str, where: str) -> tuple[tuple[int, int], ...]:
    """The ordered ``start end`` fragments of a (possibly discontinuous) T line, for inspection."""
    m = _SPAN.fullmatch(rest.partition("\t")[0])
    if not m:
        return ()
    pairs = (frag.split(" ") for frag in m[2].split(";"))
    return tuple((_offset(s, where), _offset(e, where)) for s, e in pairs)


def _offset(digits: str, where: str) -> int:
    """A span offset; BratError for one no text could reach (and int() would refuse past 4,300 digits)."""
    if len(digits) > MAX_DIGITS:
        raise BratError(f"{where}: offset {digits[:12]}... ({len(digits):,} digits) out of range")
    return int(digits)


def resolve(ann: AnnFile, text: str, unit: OffsetUnit, member: str) -> AnnFile:
    """``ann`` with span offsets turned into code points of ``text`` and checked.

    Raises BratError naming the member and line for offsets outside ``0 <= start < end <= len``;
    warns when a value matches the covered text only under the other unit (spec 3, diagnostic).
    """
    maps = {u: OffsetMap(text, u) for u in OFFSET_UNITS}
    chosen, other = maps[unit], maps["utf16" if unit == "codepoint" else "codepoint"]
    spans: list[Span] = []
    for span in ann.spans:
        where = f"{member}:{span.line}"
        if not 0 <= span.start < span.end <= chosen.length:
            raise BratError(
                f"{where}: offsets {span.start} {span.end} out of range for a text of {chosen.length} "
                f"{unit} units"
            )
        try:
            start, end = chosen.decode(span.start), chosen.decode(span.end)
        except ValueError as exc:
            raise BratError(f"{where}: {exc} ({unit} offsets)") from None
        if isinstance(span, Extraction) and span.value != text[start:end]:
            fits = _covered(text, other, span.start, span.end)
            if fits == span.value:
                ann.warnings.append(f"{where}: value matches the covered text in {other.unit} offsets")
        spans.append(replace(span, start=start, end=end))
    return replace(ann, spans=spans)


def _covered(text: str, offsets: OffsetMap, start: int, end: int) -> str | None:
    try:
        return text[offsets.decode(start) : offsets.decode(end)] if end <= offsets.length else None
    except ValueError:
        return None


# --- writing ------------------------------------------------------------------------------


def write_ann(
    categories: Sequence[Category],
    spans: Sequence[Span],
    passthrough: Iterable[str],
    length: int,
) -> tuple[bytes, list[str]]:
    """The ``.ann`` bytes (empty for no annotations) and warnings; offsets are already in the unit
    of ``length``, the text's length.

    Read annotations keep their IDs; new ones are numbered after the highest of their letter
    (passthrough IDs included), so a file written from scratch has ``C1…Cn`` and ``T1…Tn``.
    Order: C lines as given, T lines by (start, end, given order), then passthrough lines.
    Raises BratError for anything the grammar forbids (spec 5).
    """
    kept = list(passthrough)
    warnings: list[str] = []
    numbers = _Numbers([*(c.id for c in categories), *(s.id for s in spans), *(_lead(p) for p in kept)])
    lines = [f"{numbers.take('C', c.id)}\t{_category(c)}" for c in categories]
    for span in sorted(spans, key=lambda s: (s.start, s.end)):
        if not 0 <= span.start < span.end <= length:
            raise BratError(f"span {span.start} {span.end} out of range for a text of length {length}")
        kind, value = _type_and_value(span, warnings)
        lines.append(f"{numbers.take('T', span.id)}\t{kind} {span.start} {span.end}\t{value}")
    for text in kept:
        if "\r" in text or "\n" in text:
            raise BratError(f"passthrough line {text!r} contains a line break")
    lines.extend(kept)
    return "".join(f"{line}\n" for line in lines).encode(), warnings


def _lead(line: str) -> str:
    return line.partition("\t")[0]


class _Numbers:
    """Hands out IDs: kept ones are checked for duplicates, new ones follow the highest per letter."""

    def __init__(self, ids: Iterable[str | None]) -> None:
        self._used: set[str] = set()
        self._next: dict[str, int] = {"C": 1, "T": 1}
        for ident in ids:
            m = _ID.fullmatch(ident or "")
            if m and m[2]:
                self._next[m[1]] = max(self._next.get(m[1], 1), int(m[2]) + 1)

    def take(self, letter: str, ident: str | None) -> str:
        if ident is None:
            ident = f"{letter}{self._next[letter]}"
            self._next[letter] += 1
        elif not ident.startswith(letter) or not ident[1:].isdigit():
            raise BratError(f"id {ident!r} is not {letter}<number>")
        if ident in self._used:
            raise BratError(f"duplicate id {ident}")
        self._used.add(ident)
        return ident


def _category(category: Category) -> str:
    _check_value(category.category, "category id")
    if " " in category.category:
        raise BratError(f"category id {category.category!r} contains a space")
    return category.category


def _type_and_value(span: Span, warnings: list[str]) -> tuple[str, str]:
    if isinstance(span, Section):
        if span.name == BODY:
            raise BratError("the default section BODY is never written")
        _check_value(span.name, "section name")
        return SECTION_TYPE, span.name
    components = [encode_name(span.group), encode_name(span.cls)]
    for name in components:
        if not _COMPONENT.fullmatch(name) or name.startswith("_"):
            raise BratError(f"extraction type component {name!r}: need [A-Za-z0-9_]+, not starting with _")
        if name[0].isdigit():
            warnings.append(f"type component {name!r} starts with a digit; left unchanged")
    _check_value(span.value, "value")
    return ".".join(components), span.value


def _check_value(value: str, what: str) -> None:
    if not value:
        raise BratError(f"empty {what}")
    if _FORBIDDEN_IN_VALUE.search(value):
        raise BratError(f"{what} {value!r} contains a TAB, CR or LF")
