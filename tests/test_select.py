"""Region filter parsing and the layout/row selection of spec section 2."""

from __future__ import annotations

import pytest

from pipeline.errors import UsageError
from pipeline.model import Document, Line, Part, Region, Typology
from pipeline.select import RegionFilter, layout, text_rows

MAIN, TITLE, STRAY = Typology(1, "Main"), Typology(2, "Title"), Typology(5, "Stray")
DOC = Document(1, "d", valid_block_types=(MAIN, TITLE), block_types=(MAIN, TITLE, STRAY))
BOX = ((0, 0), (1, 0), (1, 1))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, RegionFilter(None, True, True)),
        ("", RegionFilter(None, True, True)),
        (" , ", RegionFilter(None, True, True)),
        ("Main,Title,undefined,orphan", RegionFilter(frozenset({1, 2}), True, True)),
        ("Stray", RegionFilter(frozenset({5}), False, False)),  # a non-valid type in use can be named
        ("5, 2", RegionFilter(frozenset({5, 2}), False, False)),
        ("UNDEFINED", RegionFilter(frozenset(), True, False)),
        (" Orphan ", RegionFilter(frozenset(), False, True)),
    ],
)
def test_parse(spec: str | None, expected: RegionFilter) -> None:
    assert RegionFilter.parse(spec, DOC) == expected


@pytest.mark.parametrize("token", ["main", "7", "Nope"])
def test_parse_rejects_unknown_tokens(token: str) -> None:
    with pytest.raises(UsageError, match=rf"'{token}'.*Main, Title, Stray, undefined, orphan"):
        RegionFilter.parse(f"Main,{token}", DOC)


def test_everything_keeps_types_the_document_does_not_list() -> None:
    assert RegionFilter().keeps(Region(1, 0, BOX, Typology(99, "Unlisted")))


def test_layout_and_rows() -> None:
    part = Part(
        1, 1, 0, "x/p.jpg", 10, 10,
        regions=(Region(1, 0, BOX, MAIN), Region(2, 1, BOX, None), Region(3, 2, BOX, TITLE)),
        lines=(
            Line(10, 3, region_id=1, text="m"),
            Line(11, 0, region_id=2, text="u"),
            Line(12, 1, region_id=None, text="o"),
            Line(13, 2, region_id=3, text=""),
            Line(14, 4, region_id=99, text="dangling block id = orphan"),
        ),
    )  # fmt: skip
    lay = layout(part, RegionFilter(frozenset({1, 2}), True, False))
    assert [(r.id, [ln.id for ln in lines]) for r, lines in lay.blocks] == [(2, [11]), (3, [13]), (1, [10])]
    assert lay.orphans == []
    assert [ln.id for ln in layout(part, RegionFilter()).orphans] == [12, 14]
    assert [ln.id for ln in text_rows(part, RegionFilter())] == [11, 12, 10, 14]
    assert [ln.id for ln in text_rows(part, RegionFilter(frozenset({2}), False, False))] == []
    assert [ln.id for ln in text_rows(part, RegionFilter(frozenset(), True, False))] == [11]
