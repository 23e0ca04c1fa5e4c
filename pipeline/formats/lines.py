"""Line datasets for handwriting recognition: which lines become crops, their boxes, names, texts,
metadata rows, splits and the dataset summary. Pure: model in, data out (the pixels are cut by
:mod:`pipeline.linecrops`).

The layout a dataset follows serves two readers at once:

* kraken's ``path`` format: ``<name>.png`` next to ``<name>.gt.txt`` (UTF-8, no trailing newline),
  for ``ketos train -f path``;
* Hugging Face's ``imagefolder``: ``metadata.jsonl`` beside the images with ``file_name`` and
  ``text`` (and the rest), in ``train/``, ``validation/``, ``test/`` folders when split, so
  ``datasets.load_dataset("imagefolder", data_dir=...)`` reads it unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pipeline.errors import UsageError
from pipeline.model import Document, Line, Part, Polygon, Region, Typology
from pipeline.select import RegionFilter, layout

if TYPE_CHECKING:
    from pipeline.options import LineOptions

SPLITS = ("train", "validation", "test")
METADATA_NAME = "metadata.jsonl"
SUMMARY_NAME = "dataset.json"
TEXT_SUFFIX = ".gt.txt"
#: height of a line known only by its baseline, when the page has no masked line to learn it from
DEFAULT_LINE_HEIGHT = 64
#: of a baseline-only line's height, the share above the baseline (ascenders) — the rest below it
ASCENT = 0.75

#: why a line gave no crop, as counted in the report and in ``dataset.json``
SkipReason = Literal[
    "no geometry", "fewer than 2 points", "outside the image", "no text", "too short",
    "no confidence", "low confidence", "line type",
]


@dataclass(frozen=True, slots=True)
class LineTypeFilter:
    """The selected line types: ids (None = every type) and untyped lines."""

    types: frozenset[int] | None = None
    undefined: bool = True

    @classmethod
    def parse(cls, spec: str | None, document: Document) -> LineTypeFilter:
        """``"default,Rubric,undefined"``: names or ids of the document's line types."""
        tokens = [t.strip() for t in (spec or "").split(",") if t.strip()]
        if not tokens:
            return cls()
        by_name = {t.name: t.id for t in document.valid_line_types}
        types: set[int] = set()
        undefined = False
        for token in tokens:
            if token.lower() == "undefined":
                undefined = True
            elif token in by_name:
                types.add(by_name[token])
            elif token.isdigit():
                types.add(int(token))  # a type used but not declared valid is still a type
            else:
                accepted = ", ".join([*by_name, "undefined"])
                raise UsageError(f"unknown line type {token!r}; accepted: {accepted} (or a type id)")
        return cls(frozenset(types), undefined)

    def keeps(self, line_type: Typology | None) -> bool:
        if line_type is None:
            return self.undefined
        return self.types is None or line_type.id in self.types


Box = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class LineCrop:
    """One line to cut: ``box`` ``(x0, y0, x1, y1)`` in page pixels (end exclusive, inside the
    page), ``polygon`` the line's shape in crop coordinates (its mask, else the band around its
    baseline), ``stem`` the file name without suffix, ``number`` the line's 1-based place on
    its page in reading order."""

    line: Line
    region: Region | None
    number: int
    box: Box
    polygon: Polygon
    text: str
    stem: str

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]


@dataclass(slots=True)
class PagePlan:
    """A page's crops in reading order and what was skipped, by reason."""

    crops: list[LineCrop]
    skipped: Counter[str]


def normalized(text: str, form: Literal["NFC", "NFD"] | None) -> str:
    return unicodedata.normalize(form, text) if form else text


def plan_page(
    part: Part, document: Document, regions: RegionFilter, types: LineTypeFilter, options: LineOptions,
) -> PagePlan:
    """The crops of ``part``: lines of the selected regions (in reading order) and line types,
    with text and confidence that pass the filters and geometry inside the page."""
    skipped: Counter[str] = Counter()
    page = layout(part, regions)
    ordered: list[tuple[Region | None, Line]] = [(r, ln) for r, lines in page.blocks for ln in lines]
    ordered += [(None, ln) for ln in page.orphans]
    height = options.height or _median_mask_height(part.lines) or DEFAULT_LINE_HEIGHT
    crops: list[LineCrop] = []
    for number, (region, line) in enumerate(ordered, 1):
        reason = _text_skip(line, options, types)
        text = normalized(line.text or "", options.normalize)
        if reason is None and len(text) < options.min_length:
            reason = "too short"
        shape = None
        if reason is None:
            shape = line_shape(line, height)
            if isinstance(shape, str):
                reason, shape = shape, None
        box = None
        if shape is not None:
            box = crop_box(shape, part.width, part.height, options.padding)
            if box is None:
                reason = "outside the image"
        if reason is not None or box is None or shape is None:
            skipped[reason or "outside the image"] += 1
            continue
        polygon = tuple((x - box[0], y - box[1]) for x, y in shape)
        crops.append(LineCrop(line, region, number, box, polygon, text, crop_stem(document, part, number)))
    return PagePlan(crops, skipped)


def _text_skip(line: Line, options: LineOptions, types: LineTypeFilter) -> SkipReason | None:
    if not types.keeps(line.type):
        return "line type"
    if not line.text or not line.text.strip():
        return "no text"
    if options.min_confidence is not None:
        if line.confidence is None:
            return "no confidence"
        if line.confidence < options.min_confidence:
            return "low confidence"
    return None


def _median_mask_height(lines: Iterable[Line]) -> int | None:
    heights = [box[3] - box[1] for line in lines if line.mask and len(line.mask) >= 3
               and (box := _finite_box(line.mask)) is not None and box[3] > box[1]]
    return max(1, round(statistics.median(heights))) if heights else None


def _finite_box(points: Polygon) -> tuple[float, float, float, float] | None:
    if not all(math.isfinite(x) and math.isfinite(y) for x, y in points):
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def line_shape(line: Line, height: int) -> Polygon | SkipReason:
    """The line's polygon in page coordinates: its mask (3 points or more), else the band of
    ``height`` around its baseline (2 points or more, :data:`ASCENT` of it above); else why not."""
    mask, baseline = line.mask or (), line.baseline or ()
    if len(mask) >= 3 and _finite_box(mask) is not None:
        return tuple(mask)
    if len(baseline) >= 2 and _finite_box(baseline) is not None:
        up, down = height * ASCENT, height * (1 - ASCENT)
        return (*((x, y - up) for x, y in baseline), *((x, y + down) for x, y in reversed(baseline)))
    return "fewer than 2 points" if mask or baseline else "no geometry"


def crop_box(shape: Polygon, width: int, height: int, padding: int) -> Box | None:
    """The pixel box ``(x0, y0, x1, y1)`` covering ``shape`` plus ``padding``, clipped to the page;
    None when nothing of it lies inside the page."""
    box = _finite_box(shape)
    if box is None:
        return None
    x0 = max(0, math.floor(box[0]) - padding)
    y0 = max(0, math.floor(box[1]) - padding)
    x1 = min(width, math.ceil(box[2]) + padding)
    y1 = min(height, math.ceil(box[3]) + padding)
    if x1 <= x0 or y1 <= y0:
        return None
    if box[2] == box[0]:  # a vertical baseline of zero width still covers its pixel column
        x1 = max(x1, min(width, x0 + 1))
    return (x0, y0, x1, y1)


def crop_stem(document: Document, part: Part, number: int) -> str:
    """``doc<id>_p<page:04>_l<line:04>``: unique within a dataset of many documents, sorted as
    read (page, then line in reading order)."""
    return f"doc{document.id}_p{part.order + 1:04d}_l{number:04d}"


def split_of(options: LineOptions, document: Document, part: Part) -> str | None:
    """The split of a page: None without ``split``; else from a hash of the seed and the
    document's (or page's) id, so a page keeps its split when the corpus grows and no page
    (or document) is ever in two splits."""
    if options.split is None:
        return None
    key = f"{options.seed}:{document.id}" if options.split_by == "document" else \
        f"{options.seed}:{document.id}:{part.id}"
    digest = hashlib.sha256(key.encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    cumulative = 0.0
    for name, ratio in zip(SPLITS, options.split, strict=True):
        cumulative += ratio
        if draw < cumulative:
            return name
    return next(name for name, ratio in reversed(list(zip(SPLITS, options.split, strict=True))) if ratio > 0)


def folder_of(split: str | None) -> str:
    """The folder of a split's files inside the dataset (``""``: the root)."""
    return f"{split}/" if split else ""


def metadata_row(
    crop: LineCrop, file_name: str, document: Document, part: Part, layer: str, split: str | None,
) -> dict[str, Any]:
    """One ``metadata.jsonl`` row: ``file_name`` relative to the metadata file, ``text``, then
    where the line comes from and its polygon in crop coordinates."""
    line = crop.line
    return {
        "file_name": file_name,
        "text": crop.text,
        "document_id": document.id,
        "document": document.name,
        "part_id": part.id,
        "page": part.order + 1,
        "page_image": part.image_filename,
        "line_id": line.id,
        "line_number": crop.number,
        "line_external_id": line.external_id,
        "region_id": crop.region.id if crop.region else None,
        "region_type": crop.region.type.name if crop.region and crop.region.type else None,
        "line_type": line.type.name if line.type else None,
        "layer": layer,
        "confidence": line.confidence,
        "split": split or "train",
        "box": list(crop.box),
        "polygon": [[round(x, 2), round(y, 2)] for x, y in crop.polygon],
    }


def metadata_line(row: dict[str, Any]) -> bytes:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


@dataclass(slots=True)
class DatasetSummary:
    """Counts as the dataset is written; :meth:`render` makes ``dataset.json``."""

    options: dict[str, Any]
    layer: str | None = None
    lines: Counter[str] = field(default_factory=Counter)
    pages: Counter[str] = field(default_factory=Counter)
    documents: dict[str, set[int]] = field(default_factory=dict)
    characters: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_pages: list[dict[str, Any]] = field(default_factory=list)

    def add_page(self, document: Document, split: str | None, plan: PagePlan) -> None:
        name = split or "train"
        self.pages[name] += 1
        self.documents.setdefault(name, set()).add(document.id)
        self.skipped.update(plan.skipped)

    def add_line(self, split: str | None, text: str) -> None:
        self.lines[split or "train"] += 1
        self.characters.update(text)

    def describe(self) -> str:
        """One line for the terminal: lines per split and lines skipped by reason."""
        splits = ", ".join(f"{name} {count}" for name, count in self.lines.items() if count)
        skipped = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items()))
        return f"{sum(self.lines.values())} lines ({splits or 'none'}); skipped {skipped or 'none'}"

    def render(self) -> bytes:
        splits = {name: {"lines": self.lines[name], "pages": self.pages[name],
                         "documents": len(self.documents.get(name, ()))}
                  for name in (SPLITS if self.options.get("lines", {}).get("split") else SPLITS[:1])}
        body = {
            "format": "lines",
            "layouts": ["kraken path (<name>.png + <name>.gt.txt)",
                        "Hugging Face imagefolder (metadata.jsonl)"],
            "layer": self.layer,
            "normalization": self.options.get("lines", {}).get("normalize"),
            "splits": splits,
            "lines": sum(self.lines.values()),
            "skipped_lines": dict(sorted(self.skipped.items())),
            "skipped_pages": self.skipped_pages,
            "characters": {char: count for char, count in
                           sorted(self.characters.items(), key=lambda kv: (-kv[1], kv[0]))},
            "options": self.options,
        }
        return json.dumps(body, ensure_ascii=False, indent=1).encode() + b"\n"


def describe_options(options: Any) -> dict[str, Any]:
    """Options as recorded in ``dataset.json`` (dataclasses to dicts, tuples to lists); whether it
    was zipped is left out, so a zip and a folder of the same data hold the same bytes."""
    described = json.loads(json.dumps(asdict(options), default=str))
    described.get("lines", {}).pop("unzipped", None)
    return described
