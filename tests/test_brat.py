"""The ``.ann`` grammar: tolerant reading, strict writing, offset units, ``X_`` names, ID numbering."""

from __future__ import annotations

import pytest

from pipeline.formats.brat import (
    AnnFile,
    BratError,
    Category,
    Extraction,
    OffsetMap,
    Passthrough,
    Section,
    decode_name,
    encode_name,
    parse_ann,
    resolve,
    write_ann,
)

M = "ann/doc.ann"


def test_reader_tolerates_crlf_bom_double_tabs_blank_lines_and_missing_final_lf() -> None:
    data = "\ufeffC1\t\tbreach \r\n\r\n\nT1\t\tGroup.Class 0 4\tsaid\r\nT2\t_SECTION 5 9\tTITLE".encode()
    ann = parse_ann(data, M)
    assert ann.categories == [Category("breach", "C1", 1)]
    assert ann.spans == [Extraction("Group", "Class", 0, 4, "said", "T1", 4), Section("TITLE", 5, 9, "T2", 5)]
    assert ann.passthrough == [] and ann.warnings == []


def test_reader_keeps_other_lines_as_passthrough_with_warnings_and_fragments() -> None:
    lines = [
        "T1\tLocation 0 5;16 23\tNorth America",  # discontinuous
        "R1\tOrigin Arg1:T3 Arg2:T4",
        "#1\tAnnotatorNotes T1\tsuspect",
        "*\tEquiv T1 T2",
        "T2\tG.C 0 4\tva\tlue",  # TAB inside the value
        "garbage",
        "T3\tNoDot 0 4\tword",
    ]
    ann = parse_ann("\n".join(lines).encode(), M)
    assert [p.text for p in ann.passthrough] == lines
    assert ann.passthrough[0].fragments == ((0, 5), (16, 23))
    assert [p.line for p in ann.passthrough] == list(range(1, 8))
    assert len(ann.warnings) == 7 and all(w.startswith(f"{M}:") for w in ann.warnings)
    assert not ann.spans


def test_c113_alone_section_reader_form_and_duplicate_ids() -> None:
    assert parse_ann(b"C113\t15000000\n", M).categories == [Category("15000000", "C113", 1)]
    ann = parse_ann(b"T1\t_SECTION.TITLE 0 3\tanything\nT1\tA.B 0 1\tx\n", M)
    assert ann.spans == [Section("TITLE", 0, 3, "T1", 1, "anything")]
    assert ann.passthrough == [Passthrough("T1\tA.B 0 1\tx", 2)]
    assert "duplicate id T1" in ann.warnings[0]


def test_u2028_inside_a_value_is_not_a_line_break() -> None:
    ann = parse_ann("T1\tA.B 0 3\ta\u2028b\x0cc\u0085\n".encode(), M)
    assert ann.spans[0].value == "a\u2028b\x0cc\u0085"


def test_empty_ann_and_invalid_utf8() -> None:
    assert not parse_ann(b"", M)
    with pytest.raises(BratError, match=r"ann/doc.ann:2: not valid UTF-8"):
        parse_ann(b"C1\tok\nC2\t\xff\n", M)


def test_x_prefix_per_component() -> None:
    assert encode_name("1999") == "X_1999" and decode_name("X_1999") == "1999"
    assert encode_name("Years") == "Years" and decode_name("X_abc") == "X_abc"
    ann = parse_ann(b"T1\tYears.X_1999 0 2\t99\n", M)
    assert (ann.spans[0].group, ann.spans[0].cls) == ("Years", "1999")
    data, _ = write_ann([], ann.spans, [], 2)
    assert data == b"T1\tYears.X_1999 0 2\t99\n"


@pytest.mark.parametrize(
    ("text", "cp", "u16"),
    [("ab", 2, 2), ("😀x", 1, 2), ("😀x", 2, 3), ("a😀😀b", 3, 5), ("e\u0301😀", 2, 2)],
)
def test_offset_map(text: str, cp: int, u16: int) -> None:
    m = OffsetMap(text, "utf16")
    assert m.encode(cp) == u16 == len(text[:cp].encode("utf-16-le")) // 2
    assert m.decode(u16) == cp
    assert m.length == len(text.encode("utf-16-le")) // 2


def test_offset_inside_a_surrogate_pair_is_refused() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        OffsetMap("😀x", "utf16").decode(1)


def test_resolve_converts_units_checks_range_and_diagnoses_the_unit() -> None:
    text = "🐟 fish!"
    ann = parse_ann(b"T1\tA.B 3 7\tfish\n", M)
    resolved = resolve(ann, text, "utf16", M)
    assert (resolved.spans[0].start, resolved.spans[0].end) == (2, 6)
    cp = resolve(parse_ann(b"T1\tA.B 3 7\tfish\n", M), text, "codepoint", M)
    assert any("utf16" in w for w in cp.warnings)  # fits only in the other unit
    with pytest.raises(BratError, match=r"ann/doc.ann:2: offsets 3 9 out of range"):
        resolve(parse_ann(b"C1\tx\nT1\tA.B 3 9\tfish\n", M), text, "codepoint", M)


def test_value_different_from_span_is_never_checked() -> None:
    parsed = parse_ann(b"T20\tFinance.Money 0 11\t27,600,000 dollar\n", M)
    ann = resolve(parsed, "$27,600,000", "codepoint", M)
    assert ann.spans[0].value == "27,600,000 dollar" and ann.warnings == []


def test_writer_numbers_orders_and_keeps_ids() -> None:
    spans = [Extraction("G", "B", 5, 9, "v"), Section("TITLE", 0, 4), Extraction("G", "A", 5, 9, "w")]
    data, _ = write_ann([Category("x"), Category("y")], spans, ["R1\tRel Arg1:T1 Arg2:T2"], 10)
    assert data.decode() == (
        "C1\tx\nC2\ty\nT1\t_SECTION 0 4\tTITLE\nT2\tG.B 5 9\tv\nT3\tG.A 5 9\tw\nR1\tRel Arg1:T1 Arg2:T2\n"
    )
    kept = [Extraction("G", "A", 0, 1, "v", "T7"), Extraction("G", "A", 2, 3, "w")]
    data, _ = write_ann([Category("x", "C113")], kept, ["T9\tL 0 1;2 3\tx y"], 10)
    assert data.decode() == "C113\tx\nT7\tG.A 0 1\tv\nT10\tG.A 2 3\tw\nT9\tL 0 1;2 3\tx y\n"
    assert write_ann([], [], [], 0)[0] == b""


@pytest.mark.parametrize(
    ("categories", "spans", "message"),
    [
        ([Category("a b")], [], "space"),
        ([Category("a\tb")], [], "TAB"),
        ([], [Extraction("G", "C", 0, 1, "a\nb")], "TAB, CR or LF"),
        ([], [Extraction("G", "C", 0, 1, "")], "empty value"),
        ([], [Extraction("G", "C", 1, 1, "x")], "out of range"),
        ([], [Extraction("G", "C", 0, 11, "x")], "out of range"),
        ([], [Extraction("G-H", "C", 0, 1, "x")], "component"),
        ([], [Extraction("_G", "C", 0, 1, "x")], "component"),
        ([], [Section("BODY", 0, 1)], "BODY"),
        ([], [Extraction("G", "C", 0, 1, "x", "T1"), Extraction("G", "C", 0, 1, "x", "T1")], "duplicate"),
    ],
)
def test_writer_is_strict(categories: list[Category], spans: list, message: str) -> None:
    with pytest.raises(BratError, match=message):
        write_ann(categories, spans, [], 10)


def test_digit_leading_name_is_left_unchanged_with_a_warning() -> None:
    data, warnings = write_ann([], [Extraction("G", "1st", 0, 1, "x")], [], 1)
    assert data == b"T1\tG.1st 0 1\tx\n" and "1st" in warnings[0]


def test_annfile_truthiness() -> None:
    assert not AnnFile() and AnnFile(passthrough=[Passthrough("R1\tx")])
