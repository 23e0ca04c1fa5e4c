"""A deterministic synthetic corpus that holds every case an export must handle.

Same arguments and seed give the same SQLite content and the same image bytes: ids follow insertion
order, external ids, texts and timestamps come from ``random.Random(seed)``, never from the clock.
Page images are drawn once per layout variant (recto/verso) and copied (or hard-linked) for the other
parts, so thousands of parts cost two encodes. Cases covered in each document (with >= 4 parts and >= 12
lines per part): block and line types numbered from 1 in both tables with the four of each that
eScriptorium's migrations seed (so ids overlap: block type 1 is Title, line type 1 is Main), an
untyped region, a region of a type outside the document's ontology (Marginalia), a region without
lines, orphan lines, mask-less lines (baseline only), one line with neither mask nor baseline,
layers named as eScriptorium names them (``manual``, one after a kraken model, an archived zip
import; some lines in one layer only, one empty text), confidences 0.0 and NULL, RTL and combining
text, emoji, XML special characters in texts and names, bad external ids (NULL, empty, ``12``,
duplicated), line types used but outside the ontology, text annotations within and across lines,
tags, document and part metadata, an empty original filename, ``f003.jpg`` + ``f003.png`` in one
document, IIIF source URLs, and a part without a stored size (read from the image header).

Models as eScriptorium keeps them: kraken's ``blla`` segmenter (public, run on every document), a
recognition model ``catmus-medieval-1.0`` and ``catmus-medieval-1.5`` fine-tuned from it on the
first document (its per-epoch version history, shared with a user and a group), which made the
``kraken:catmus-medieval-1.5`` layer of every document. Model files are small CoreML protobufs
laid out as kraken writes them (metadata, a VGSL spec, one layer of weights), from their own
random stream, so adding them changed nothing else the demo writes.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import pyvips

from pipeline.errors import UsageError
from pipeline.store import Corpus
from pipeline.store.corpus import default_media_root
from pipeline.store.writer import CorpusWriter

#: image format -> stored file extension
IMAGE_FORMATS = {"jpeg": ".jpg", "png": ".png", "tiff": ".tif", "webp": ".webp"}
_SAVE_OPTIONS: dict[str, dict[str, object]] = {
    "jpeg": {"Q": 85},
    "png": {"compression": 6},
    "tiff": {"compression": "deflate"},
    "webp": {"Q": 80},
}
#: what eScriptorium's migrations seed, in id order: both tables are numbered from 1, so ids overlap
SEEDED_BLOCK_TYPES = ("Title", "Main", "Commentary", "Illustration")
SEEDED_LINE_TYPES = ("Main", "Numbering", "Correction", "Signature")
VALID_BLOCK_TYPES = SEEDED_BLOCK_TYPES  # public + default: every new document gets them
OTHER_BLOCK_TYPE = "Marginalia"
VALID_LINE_TYPES = ("Main", "Heading")
OTHER_LINE_TYPE = "Interlinear"
#: block types, then line types, in creation (= id) order
BLOCK_TYPES = (*SEEDED_BLOCK_TYPES, OTHER_BLOCK_TYPE)
LINE_TYPES = (*SEEDED_LINE_TYPES, "Heading", OTHER_LINE_TYPE)
#: manual work, then a layer named after the kraken model that produced it
LAYERS = ("manual", "kraken:catmus-medieval-1.5")
#: who owns the demo (``users_user`` 1)
DEMO_OWNER = "demo"
#: an old zip import, archived (named as eScriptorium names imports)
ARCHIVED_LAYER = "Zip import 2024-03-01 10:00"
MIN_SIDE, MAX_SIDE = 100, 20_000
#: most pixels of ink drawn in Python per page; bigger pages are drawn smaller and enlarged
DRAW_PIXELS = 4_000_000
#: side of the grain tile repeated over the page
NOISE_TILE = 1024
#: lines needed besides the main column: title 1, commentary 2, marginalia 1, untyped 1, orphan 1
_SIDE_LINES = 6

_SPECIAL_TEXTS = (
    "Fish & chips <with> \"peas\" and 'vinegar'",
    "בְּרֵאשִׁית בָּרָא אֱלֹהִים אֵת הַשָּׁמַיִם",
    "بِسْمِ ٱللَّٰهِ ٱلرَّحْمَٰنِ ٱلرَّحِيمِ",
    "Cafe\u0301 de\u0301ja\u0300 vu, man\u0303ana",
    "Fish \U0001f41f & chips \U0001f35f",
)
_WORDS = (
    "in", "principio", "erat", "verbum", "et", "apud", "deum", "quod", "factum", "est", "vita", "lux",
    "hominum", "tenebrae", "eam", "non", "comprehenderunt", "fuit", "homo", "missus", "a", "deo", "cui",
)

Point = tuple[int, int]


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What ``build_demo`` made: where, and how much."""

    path: Path
    media_root: Path
    document_ids: tuple[int, ...]
    parts: int
    lines: int
    images: int

    def __str__(self) -> str:
        ids = ", ".join(map(str, self.document_ids))
        return (f"{self.path}: {len(self.document_ids)} documents (ids {ids}), {self.parts} parts, "
                f"{self.lines} lines; images in {self.media_root} ({self.images} drawn, copied for the "
                "other parts)")


@dataclass(frozen=True, slots=True)
class _LineSlot:
    kind: str
    index: int
    baseline: tuple[Point, ...]
    mask: tuple[Point, ...] | None


@dataclass(frozen=True, slots=True)
class _RegionSlot:
    kind: str
    order: int
    box: tuple[Point, ...]
    lines: tuple[_LineSlot, ...]


@dataclass(frozen=True, slots=True)
class _Layout:
    """Regions in reading order, then orphan lines; line ``order`` follows this sequence."""

    regions: tuple[_RegionSlot, ...]
    orphans: tuple[_LineSlot, ...]

    def lines(self) -> list[tuple[_RegionSlot | None, _LineSlot]]:
        return [(r, ln) for r in self.regions for ln in r.lines] + [(None, ln) for ln in self.orphans]


def parse_image_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> ``(W, H)`` for the CLI; UsageError when malformed."""
    width, sep, height = text.lower().partition("x")
    if not (sep and width.strip().isdigit() and height.strip().isdigit()):
        raise UsageError(f"bad image size {text!r}: expected WIDTHxHEIGHT, e.g. 1240x1754")
    return int(width), int(height)


def _check_arguments(
    documents: int, parts: int, lines: int, image_size: tuple[int, int], image_format: str, seed: int
) -> None:
    for name, value, low in (("documents", documents, 1), ("parts", parts, 1), ("lines", lines, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise UsageError(f"--{name} must be an integer >= {low}, not {value!r}")
    if image_format not in IMAGE_FORMATS:
        raise UsageError(f"unknown image format {image_format!r}; choose one of {', '.join(IMAGE_FORMATS)}")
    if len(image_size) != 2 or not all(isinstance(v, int) and MIN_SIDE <= v <= MAX_SIDE for v in image_size):
        raise UsageError(f"image size {image_size!r}: each side must be between {MIN_SIDE} and {MAX_SIDE}")
    if lines > image_size[1] // 5:
        most = image_size[1] // 5
        raise UsageError(f"{lines} lines do not fit a page {image_size[1]} pixels high (at most {most})")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UsageError(f"--seed must be an integer, not {seed!r}")


def build_demo(
    path: str | os.PathLike[str],
    *,
    documents: int = 2,
    parts: int = 5,
    lines: int = 20,
    image_size: tuple[int, int] = (1240, 1754),
    image_format: str = "jpeg",
    seed: int = 0,
    link_images: bool = False,
) -> DemoSummary:
    """Create a new demo corpus at ``path`` with its media folder; UsageError for bad values.

    Each part gets its own image file, a copy of its variant's; ``link_images=True`` hard-links
    instead (saves disk on big demos, but the parts then share one file: damaging one damages all).
    Refuses to touch an existing corpus file or a non-empty media folder. On failure, removes what
    it created.
    """
    _check_arguments(documents, parts, lines, tuple(image_size), image_format, seed)
    path = Path(path)
    if path.exists() and (path.is_dir() or path.stat().st_size > 0):
        raise UsageError(f"{path} already exists; choose a new corpus file")
    path.parent.mkdir(parents=True, exist_ok=True)
    media_root = path.parent / default_media_root(path)
    if media_root.exists() and any(media_root.iterdir()):
        raise UsageError(f"media folder {media_root} already exists and is not empty")
    try:
        with Corpus.open(path, create=True) as corpus, corpus.transaction() as writer:
            builder = _Builder(writer, corpus.media_root, tuple(image_size), image_format, seed, link_images)
            doc_ids = tuple(builder.document(i, parts, lines) for i in range(documents))
            builder.models(doc_ids)
            return DemoSummary(path, corpus.media_root, doc_ids, builder.parts, builder.lines, builder.images)
    except BaseException:
        path.unlink(missing_ok=True)
        shutil.rmtree(media_root, ignore_errors=True)
        raise


def _rect(x0: int, y0: int, x1: int, y1: int) -> tuple[Point, ...]:
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def _column(kind: str, box: tuple[int, int, int, int], count: int) -> tuple[_LineSlot, ...]:
    """``count`` evenly spaced lines inside ``box``, top to bottom, masks inside the box."""
    x0, y0, x1, y1 = box
    pad = max(1, (x1 - x0) // 40)
    step = (y1 - y0) / max(count, 1)
    slots = []
    for i in range(count):
        top = y0 + step * i
        base = round(top + step * 0.78)
        mask = _rect(x0 + pad, round(top + step * 0.12), x1 - pad, min(round(top + step * 0.95), y1))
        slots.append(_LineSlot(kind, i, ((x0 + pad, base), ((x0 + x1) // 2, base), (x1 - pad, base)), mask))
    return tuple(slots)


@cache
def _layout(width: int, height: int, lines: int, variant: int) -> _Layout:
    """The page geometry: variant 0 (recto) has the side column on the right, 1 (verso) on the left."""

    def box(fx0: float, fy0: float, fx1: float, fy1: float) -> tuple[int, int, int, int]:
        return round(fx0 * width), round(fy0 * height), round(fx1 * width), round(fy1 * height)

    side = lines > _SIDE_LINES
    main_lines = lines - _SIDE_LINES if side else lines
    main_x, side_x = ((0.10, 0.66), (0.70, 0.92)) if variant == 0 else ((0.34, 0.90), (0.08, 0.30))
    ix0, iy0, ix1, iy1 = box(side_x[0], 0.44, side_x[1], 0.66)
    specs = (  # kind, block "order" (deliberately not reading order), box, lines
        ("title", 5, box(0.15, 0.04, 0.85, 0.11), 1 if side else 0),
        ("main", 3, box(main_x[0], 0.14, main_x[1], 0.78), main_lines),
        ("commentary", 2, box(side_x[0], 0.14, side_x[1], 0.40), 2 if side else 0),
        ("marginalia", 4, box(side_x[0], 0.70, side_x[1], 0.78), 1 if side else 0),
        ("untyped", 1, box(0.10, 0.82, 0.90, 0.89), 1 if side else 0),
    )
    regions = [_RegionSlot(kind, order, _rect(*b), _column(kind, b, n)) for kind, order, b, n in specs]
    pentagon = ((ix0, iy0), (ix1, iy0), (ix1, iy1), ((ix0 + ix1) // 2, iy1 + (iy1 - iy0) // 20), (ix0, iy1))
    regions.insert(3, _RegionSlot("illustration", 0, pentagon, ()))
    fy = round(0.945 * height)
    footer = ((round(0.45 * width), fy), (round(0.55 * width), fy))
    orphans = (_LineSlot("orphan", 0, footer, None),) if side else ()
    return _Layout(tuple(regions), orphans)


def _page_image(width: int, height: int, layout: _Layout, rng: random.Random) -> pyvips.Image:
    """A paper-coloured page with a soft gradient and grain, dark word strokes on every line.

    Only the ink is drawn in Python, at a scale that keeps it within ``DRAW_PIXELS`` (libvips
    enlarges it); grain is one tile repeated. The rest is a lazy libvips pipeline, so memory stays
    flat up to ``MAX_SIDE`` x ``MAX_SIDE`` pages.
    """
    scale = min(1.0, math.sqrt(DRAW_PIXELS / (width * height)))
    dw, dh = max(1, round(width * scale)), max(1, round(height * scale))
    ink = bytearray(dw * dh)

    def fill(x0: int, y0: int, x1: int, y1: int, level: int) -> None:
        """A rectangle given in page pixels, drawn at least one pixel wide and high."""
        if x1 <= x0 or y1 <= y0:
            return
        x0, y0 = max(0, math.floor(x0 * scale)), max(0, math.floor(y0 * scale))
        x1, y1 = min(dw, max(x0 + 1, round(x1 * scale))), min(dh, max(y0 + 1, round(y1 * scale)))
        run = bytes([level]) * max(0, x1 - x0)
        for y in range(y0, y1):
            ink[y * dw + x0 : y * dw + x1] = run

    for region in layout.regions:
        if region.kind == "illustration":
            xs, ys = [p[0] for p in region.box], [p[1] for p in region.box]
            fill(min(xs) + 4, min(ys) + 4, max(xs) - 4, max(ys) - 4, 90)
    for _, line in layout.lines():
        x, x_end, base = line.baseline[0][0], line.baseline[-1][0], line.baseline[0][1]
        room = base - line.mask[0][1] if line.mask else height // 60
        stroke = max(1, min(round(room * 0.5), height // (45 if line.kind == "title" else 70)))
        while x < x_end:
            word = max(2, round((x_end - line.baseline[0][0]) * rng.uniform(0.03, 0.10)))
            fill(x, base - stroke, min(x + word, x_end), base, 255)
            if rng.random() < 0.4:  # an ascender
                tall = x + rng.randrange(word)
                fill(tall, base - round(stroke * 1.6), tall + max(1, stroke // 4), base, 255)
            x += word + max(2, round(stroke * rng.uniform(0.5, 0.9)))
    tw, th = min(width, NOISE_TILE), min(height, NOISE_TILE)
    tile = pyvips.Image.new_from_memory(rng.randbytes(tw * th), tw, th, 1, "uchar")
    noise = tile.replicate(-(-width // tw), -(-height // th)).crop(0, 0, width, height)
    xyz = pyvips.Image.xyz(width, height)
    shade = 1 - xyz[0] * (0.04 / width) - xyz[1] * (0.09 / height)
    paper = shade * [236, 226, 200] + (noise - 128) * 0.05
    alpha = pyvips.Image.new_from_memory(bytes(ink), dw, dh, 1, "uchar").gaussblur(0.7)
    if (dw, dh) != (width, height):
        bilinear = pyvips.Interpolate.new("bilinear")
        alpha = alpha.affine([width / dw, 0, 0, height / dh], interpolate=bilinear)
        alpha = alpha.embed(0, 0, width, height, extend="copy")  # crops, or pads a rounding pixel
    alpha = alpha * (0.85 / 255)
    return (paper * (1 - alpha) + alpha * [45, 35, 30]).cast("uchar")


def _kraken(text: str, rng: random.Random) -> str:
    """An OCR-like variant of a manual text, so the two layers differ."""
    swaps = {"e": "c", "m": "rn", "i": "l", "u": "v"}
    return "".join(swaps[c] if c in swaps and rng.random() < 0.15 else c for c in text)


class _Builder:
    """Writes documents one part at a time; images are encoded once per layout variant."""

    def __init__(
        self,
        writer: CorpusWriter,
        media_root: Path,
        size: tuple[int, int],
        image_format: str,
        seed: int,
        link_images: bool,
    ) -> None:
        self.w = writer
        self.link_images = link_images
        self.media_root = media_root
        self.size = size
        self.format = image_format
        self.seed = seed
        self.rng = random.Random(seed)
        self.epoch = datetime(2023, 1, 1, tzinfo=UTC) + timedelta(minutes=seed % 525_600)
        self.parts = self.lines = self.images = 0
        self._image_files: dict[int, Path] = {}
        self.block_types = {n: writer.add_block_type(n) for n in BLOCK_TYPES}
        self.line_types = {n: writer.add_line_type(n) for n in LINE_TYPES}
        self.page_type = writer.add_part_type("Page")
        self.owner = writer.add_user(DEMO_OWNER)  # first: id 1, the PostgreSQL demo's user

    def _hex(self) -> str:
        return f"{self.rng.getrandbits(32):08x}"

    def _sentence(self) -> str:
        return " ".join(self.rng.choice(_WORDS) for _ in range(self.rng.randint(4, 9)))

    def document(self, index: int, parts: int, lines: int) -> int:
        w = self.w
        created = self.epoch + timedelta(days=index)
        doc_id = w.add_document(
            f"Demo {index + 1}: Letters & Notes <draft> \"Paris\" d'Ivry",
            created_at=created,
            updated_at=created + timedelta(days=30, seconds=self.rng.randrange(86_400)),
        )
        layers = [w.add_layer(doc_id, name, created_at=created) for name in LAYERS]
        w.add_layer(doc_id, ARCHIVED_LAYER, archived=True, created_at=created)
        w.set_valid_types(
            doc_id,
            [self.block_types[n] for n in VALID_BLOCK_TYPES],
            [self.line_types[n] for n in VALID_LINE_TYPES],
        )
        for tag in ("demo", "synthetic & <test>", *(("médiéval",) if index % 2 == 0 else ())):
            w.add_tag(doc_id, tag)
        metadata = (("Author", "Anonymous & Co. <unknown>"), ("Language", "lat"), ("Seed", str(self.seed)))
        for key, value in metadata:
            w.add_metadata(doc_id, key, value)
        taxonomies = (
            w.add_taxonomy(doc_id, "Person", typology="Entity", abbreviation="PER", marker_type=3),
            w.add_taxonomy(doc_id, "Place", typology="Entity", abbreviation="PLA", marker_type=4),
        )
        for k in range(parts):
            self._part(doc_id, k, created + timedelta(minutes=k + 1), layers, taxonomies, lines)
        return doc_id

    def _image(self, doc_id: int, k: int, layout: _Layout, variant: int) -> str:
        """Store the part's image (drawn on first use of the variant, then copied or linked)."""
        ext = IMAGE_FORMATS[self.format]
        relative = f"documents/{doc_id}/f{k + 1:03d}_{self.rng.getrandbits(24):06x}{ext}"
        target = self.media_root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        source = self._image_files.get(variant)
        if source is None:
            image_rng = random.Random(f"{self.seed}-image-{variant}")
            page = _page_image(*self.size, layout, image_rng)
            page.write_to_file(str(target), **_SAVE_OPTIONS[self.format])
            self._image_files[variant] = target
            self.images += 1
        elif self.link_images:
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        else:
            shutil.copyfile(source, target)
        return relative

    def _part(
        self,
        doc_id: int,
        k: int,
        created: datetime,
        layers: list[int],
        taxonomies: tuple[int, int],
        lines: int,
    ) -> None:
        w, rng = self.w, self.rng
        variant = k % 2
        layout = _layout(*self.size, lines, variant)
        image = self._image(doc_id, k, layout, variant)
        created = created.replace(microsecond=rng.randrange(1, 10**6) if k % 2 == 0 else 0)
        name = ("Folio 1r & <cover> \"front\" d'or" if k == 0 else f"Folio {k + 1}") if k % 3 == 0 else ""
        original = {1: "", 3: "f003.png"}.get(k, f"f{k + 1:03d}.jpg")
        source = f"https://iiif.example.org/iiif/2/demo%2Fd{doc_id}%2Ff{k + 1:03d}/full/full/0/default.jpg"
        width, height = self.size
        part_id = w.add_part(
            doc_id,
            k,
            image,
            original_filename=original,
            name=name,
            source=source if k % 2 == 0 else "",
            typology_id=self.page_type if k % 3 == 1 else None,
            width=None if k == 1 else width,
            height=None if k == 1 else height,
            created_at=created,
            updated_at=created + timedelta(seconds=rng.randrange(1, 10**6)),
        )
        w.add_part_metadata(part_id, "Folio", f"{k // 2 + 1}{'rv'[k % 2]}")
        if k == 0:
            w.add_part_metadata(part_id, "Condition", "water damage & <stains> \"faded\"")
        self.parts += 1

        block_ids: dict[str, int] = {}
        for region in layout.regions:
            external: str | None = f"eSc_textblock_{self._hex()}"
            if (k, region.kind) == (0, "untyped"):
                external = ""
            elif (k, region.kind) == (2, "commentary"):
                external = None
            type_id = None if region.kind == "untyped" else self.block_types[_BLOCK_TYPE_OF[region.kind]]
            block_ids[region.kind] = w.add_block(part_id, region.order, region.box, type_id, external)

        main_count = sum(1 for _, ln in layout.lines() if ln.kind == "main")
        line_ids: dict[tuple[str, int], int] = {}
        texts: list[tuple[int, int, str, float | None]] = []
        shared_id = f"eSc_line_{self._hex()}"
        for order, (region, slot) in enumerate(layout.lines()):
            baseline: tuple[tuple[float, float], ...] | None = slot.baseline
            mask = slot.mask if not (slot.kind == "commentary" and k % 2 == 1) else None
            if k == 0 and slot.kind == "main" and slot.index == main_count - 1 and main_count > 1:
                baseline = mask = None
            elif k == 0 and slot.kind == "main" and slot.index == 0:
                baseline = tuple((x, y + 0.5) for x, y in slot.baseline)
            line_external: str | None = f"eSc_line_{self._hex()}"
            if k == 0 and slot.kind == "main" and slot.index == 2:
                line_external = "12"
            elif k == 1 and slot.kind == "main" and slot.index in (0, 1):
                line_external = shared_id
            elif k == 2 and slot.kind == "title":
                line_external = None
            line_id = w.add_line(
                part_id,
                order,
                baseline,
                mask,
                block_ids[region.kind] if region else None,
                self.line_types[t] if (t := _LINE_TYPE_OF.get(slot.kind)) else None,
                line_external,
            )
            line_ids[(slot.kind, slot.index)] = line_id
            self.lines += 1
            manual = self._text(slot, k)
            if not (slot.kind == "untyped" and k % 2 == 1):
                content = "" if (k, slot.kind) == (0, "marginalia") else manual
                texts.append((line_id, layers[0], content, None))
            if not (slot.kind == "commentary" and slot.index == 1):
                confidence: float | None = round(rng.uniform(0.55, 0.99), 4)
                if slot.kind == "main" and slot.index in (0, 1):
                    confidence = 0.0 if slot.index == 0 else None
                texts.append((line_id, layers[1], _kraken(manual, rng), confidence))
        w.add_texts(texts)

        if main_count >= 3:
            person, place = taxonomies
            first, second, third = (line_ids[("main", i)] for i in range(3))
            w.add_text_annotation(person, part_id, layers[0], first, 0, first, 4, comments=["check & verify"])
            place_value = "Paris & <Île-de-France>"
            w.add_text_annotation(place, part_id, layers[0], second, 3, third, 4, value=place_value)
            w.add_text_annotation(person, part_id, layers[1], first, 0, first, 4, value="Q1")

    def models(self, doc_ids: tuple[int, ...]) -> None:
        """The demo's models (see the module docstring), linked to the documents."""
        w, epoch = self.w, self.epoch
        rng = random.Random(f"{self.seed}-models")
        blla = self._model(rng, "blla", 1, "models/3f2a9c1e/blla.mlmodel", epochs=50, accuracy=0.9693,
                           public=True, owner=None, created=epoch - timedelta(days=700))
        base = self._model(rng, "catmus-medieval-1.0", 2, "models/8d41b7a0/catmus-medieval-10.mlmodel",
                           epochs=38, accuracy=0.9512, public=True, owner="catmus", script="Latin",
                           created=epoch - timedelta(days=300))
        tuned = self._model(rng, "catmus-medieval-1.5", 2, "models/c07e52d9/catmus-medieval-15.mlmodel",
                            epochs=6, accuracy=0.9781, public=False, owner=DEMO_OWNER, script="Latin",
                            created=epoch + timedelta(hours=6), parent=base)
        w.share_model(tuned, user="reviewer", created_at=epoch + timedelta(days=1))
        w.share_model(tuned, group="Paleography seminar", created_at=epoch + timedelta(days=1))
        for index, doc_id in enumerate(doc_ids):
            ran = epoch + timedelta(days=index, hours=2)
            w.link_model(blla, doc_id, executed_on=ran)
            # trained on the first document, then run on every one (one row per pair, as eScriptorium)
            trained = epoch + timedelta(hours=12) if index == 0 else None
            w.link_model(tuned, doc_id, trained_on=trained, executed_on=ran + timedelta(days=2),
                         created_at=epoch + timedelta(hours=6) if index == 0 else None)

    def _model(
        self, rng: random.Random, name: str, job: int, file: str, *, epochs: int, accuracy: float,
        public: bool, owner: str | None, created: datetime, script: str | None = None,
        parent: int | None = None,
    ) -> int:
        """A model file under the media root and its row, with one version per training epoch."""
        data = _mlmodel(rng, name, job, epochs, accuracy)
        target = self.media_root / file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        total = rng.randrange(20_000, 90_000)
        versions = []
        for epoch in range(1, epochs + 1):  # eScriptorium keeps every epoch, newest first
            at = (created + timedelta(minutes=17 * epoch)).isoformat()
            acc = round(accuracy - (epochs - epoch) * 0.004 * rng.random(), 4)
            versions.insert(0, {
                "revision": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "author": owner or "admin", "source": "kraken", "created_at": at, "updated_at": at,
                "data": {"file": file.replace(".mlmodel", f"_{epoch}.mlmodel"), "file_size": len(data),
                         "job": job, "training_epoch": epoch, "training_accuracy": acc,
                         "training_total": total, "training_errors": round(total * (1 - acc)),
                         "public": public},
            })
        updated = created + timedelta(minutes=17 * epochs + 3)
        return self.w.add_model(
            name, job, file, len(data), owner=owner, parent_id=parent, script=script,
            training_epoch=epochs, training_accuracy=accuracy, training_total=total,
            training_errors=round(total * (1 - accuracy)), public=public,
            revision=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            version_author=owner or "admin", version_source="kraken", version_created_at=created,
            version_updated_at=updated, versions=versions,
        )

    def _text(self, slot: _LineSlot, k: int) -> str:
        if slot.kind == "main" and slot.index < len(_SPECIAL_TEXTS):
            return _SPECIAL_TEXTS[slot.index]
        if slot.kind == "title":
            return f"INCIPIT LIBER {k + 1}"
        if slot.kind == "orphan":
            return str(k + 1)
        if slot.kind == "marginalia":
            return "nota bene"
        return self._sentence()


_BLOCK_TYPE_OF = {
    "title": "Title",
    "main": "Main",
    "commentary": "Commentary",
    "illustration": "Illustration",
    "marginalia": OTHER_BLOCK_TYPE,
}
_LINE_TYPE_OF = {
    "title": "Heading",
    "main": "Main",
    "commentary": "Main",
    "marginalia": OTHER_LINE_TYPE,
}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: bytes | str | int) -> bytes:
    """One protobuf field: a varint for ints, length-delimited for bytes and text."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _mlmodel(rng: random.Random, name: str, job: int, epochs: int, accuracy: float) -> bytes:
    """A small kraken model file: a CoreML ``Model`` protobuf with kraken's metadata (``kraken_meta``,
    ``vgsl``) in ``description.metadata.userDefined`` and one layer of float weights (a few KB)."""
    recognition = job == 2
    spec = ("[1,120,0,1 Cr3,13,32 Do0.1,2 Mp2,2 S1(1x0)1,3 Lbx200 Do0.1,2 O1c97]" if recognition
            else "[1,1800,0,3 Cr7,7,64,2,2 Gn32 Cr3,3,128,2,2 Lbx32 Cr1,1,3 Ssigmoid O2l3]")
    meta = {
        "accuracy": [[step * 480, round(accuracy - (epochs - step) * 0.01, 4)]
                     for step in range(1, epochs + 1)],
        "hyper_params": {"completed_epochs": epochs, "lrate": 0.0001 if recognition else 2e-05,
                         "batch_size": 1, "quit": "early", "min_epochs": 5, "lag": 10},
        "model_type": "recognition" if recognition else "segmentation",
        "one_channel_mode": "L" if recognition else None,
        "seg_type": "baselines",
        "legacy_polygons": False,
    }
    user_defined = b"".join(
        _field(100, _field(1, key) + _field(2, value))
        for key, value in (("kraken_meta", json.dumps(meta)), ("vgsl", spec))
    )
    metadata = _field(1, f"{name} (kraken {'recognition' if recognition else 'segmentation'} model)")
    metadata += _field(2, "5.2.9") + _field(3, "eScriptorium demo") + _field(4, "CC-BY-4.0") + user_defined
    description = _field(1, _field(1, "input")) + _field(10, _field(1, "output")) + _field(100, metadata)
    weights = struct.pack(f"<{768}f", *(rng.gauss(0.0, 0.05) for _ in range(768)))
    layer = _field(1, "C_0") + _field(2, "input") + _field(3, "C_0_out") + _field(100, _field(1, weights))
    return _field(1, 5) + _field(2, description) + _field(500, _field(1, layer))
