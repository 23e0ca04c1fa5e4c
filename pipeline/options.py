"""The option models, declared once: what an export does, what becomes of its images.

Plain dataclasses whose fields carry their help text; the CLI generates its flags from them
(:func:`flags`), the job file and the HTTP API validate input with pydantic directly
(``pydantic.TypeAdapter(ExportOptions).validate_json(...)``, strict; the class attribute
``__pydantic_config__`` forbids unknown keys), and ``__post_init__`` checks what types cannot
say, raising :class:`~pipeline.errors.OptionError` (a UsageError that pydantic reports under
the key). Importing this module loads neither pydantic nor libvips.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args, get_origin, get_type_hints

from pipeline.errors import OptionError, UsageError
from pipeline.vips import writable_formats

#: pydantic's settings for every option model: unknown keys and loose types are errors
STRICT: dict[str, Any] = {"extra": "forbid", "strict": True}

#: image output format name -> suffix written, and the suffixes that already mean that format
IMAGE_FORMATS: dict[str, tuple[str, ...]] = {
    "jpeg": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "png": (".png",),
    "webp": (".webp",),
    "tiff": (".tif", ".tiff"),
    "jp2": (".jp2", ".j2k", ".jpx"),
}
ORIGINAL = "original"
LOOKAHEAD = 3


def option(help: str, *, flag: str | None = None, metavar: str | None = None, cli: bool = True) -> Any:
    """Field metadata: the help text, and the CLI flag when it is not ``--<image->name``."""
    return {"help": help, "flag": flag, "metavar": metavar, "cli": cli}


def supported_image_formats() -> tuple[str, ...]:
    """Output formats this libvips can write, ``original`` first."""
    written = tuple((name, suffixes[0]) for name, suffixes in IMAGE_FORMATS.items())
    return (ORIGINAL, *writable_formats(written))


@dataclass(frozen=True, slots=True)
class ImageOptions:
    """How images are exported. ``original`` without resizing passes the file through unchanged.

    Transcoded images lose their metadata unless ``keep_metadata``; the colour profile is always
    kept, since dropping it changes the colours.
    """

    __pydantic_config__ = STRICT

    format: str = field(default=ORIGINAL, metadata=option(
        "original (default: unchanged), jpeg, png, webp, tiff or jp2 (if libvips has it)", metavar="FORMAT"))
    quality: int | None = field(default=None, metadata=option(
        "quality of lossy image formats (default: the encoder's)", metavar="1-100"))
    max_size: int | None = field(default=None, metadata=option(
        "downscale images to at most N pixels on the longest side; coordinates follow", metavar="N"))
    keep_metadata: bool = field(default=False, metadata=option(
        "keep EXIF/XMP/IPTC in transcoded images", flag="--keep-metadata"))
    lookahead: int = field(default=LOOKAHEAD, metadata=option(
        "parts whose images are transcoded ahead of the one being written", metavar="N"))

    def __post_init__(self) -> None:
        if self.format != ORIGINAL:
            supported = supported_image_formats()
            if self.format not in supported:
                raise OptionError(f"image format {self.format!r} is not supported by this libvips "
                                  f"(supported: {', '.join(supported)})")
        if self.quality is not None and not 1 <= self.quality <= 100:
            raise OptionError(f"image quality must be 1-100, not {self.quality}")
        if self.max_size is not None and self.max_size < 1:
            raise OptionError(f"image max size must be a positive number of pixels, not {self.max_size}")
        if self.lookahead < 0:
            raise OptionError("image lookahead cannot be negative")

    @property
    def passthrough(self) -> bool:
        """Every image goes into the archive unchanged: nothing to transcode ahead of the writer."""
        return self.format == ORIGINAL and self.max_size is None


@dataclass(frozen=True, slots=True)
class LineOptions:
    """How the ``lines`` format makes a training dataset of line images and their texts.

    ``split`` are train/validation/test ratios (``"0.8,0.1,0.1"`` on the command line, a list in a
    job file), normalised to sum 1; whole documents or pages go to one split, chosen from a hash of
    ``seed`` and their id.
    """

    __pydantic_config__ = STRICT

    padding: int = field(default=0, metadata=option(
        "lines format: pixels around each line's box (default: 0)", flag="--line-padding", metavar="N"))
    height: int | None = field(default=None, metadata=option(
        "lines format: height of lines known by their baseline only (default: the page's median mask "
        "height, else 64)", flag="--line-height", metavar="N"))
    mask: Literal["none", "white", "transparent"] = field(default="none", metadata=option(
        "lines format: blank what lies outside the line's polygon (default: none)", flag="--line-mask"))
    types: str | tuple[str, ...] | None = field(default=None, metadata=option(
        "lines format: line types to keep, names or ids, and undefined (default: all)", flag="--line-types",
        metavar="TYPE,..."))
    min_confidence: float | None = field(default=None, metadata=option(
        "lines format: keep lines whose confidence is known and at least this", flag="--min-confidence",
        metavar="0-1"))
    min_length: int = field(default=1, metadata=option(
        "lines format: keep texts of at least N characters (default: 1)", flag="--min-length", metavar="N"))
    normalize: Literal["NFC", "NFD"] | None = field(default=None, metadata=option(
        "lines format: Unicode normalisation of the texts (default: none)", flag="--normalize"))
    split: str | tuple[float, float, float] | None = field(default=None, metadata=option(
        "lines format: train,validation,test ratios, e.g. 0.8,0.1,0.1 (default: no split)", flag="--split",
        metavar="TRAIN,VAL,TEST"))
    split_by: Literal["document", "page"] = field(default="page", metadata=option(
        "lines format: what goes whole into one split (default: page)", flag="--split-by"))
    seed: int = field(default=0, metadata=option("lines format: seed of the split (default: 0)",
                                                 flag="--seed", metavar="N"))
    unzipped: bool = field(default=False, metadata=option(
        "lines format: write a folder instead of a zip", flag="--unzipped"))

    def __post_init__(self) -> None:
        if isinstance(self.types, tuple | list):  # a job file's list: the CLI's comma form
            object.__setattr__(self, "types", ",".join(self.types))
        if self.padding < 0:
            raise OptionError(f"line padding cannot be negative, not {self.padding}")
        if self.height is not None and self.height < 1:
            raise OptionError(f"line height must be a positive number of pixels, not {self.height}")
        if self.min_length < 1:
            raise OptionError(f"minimum text length must be at least 1, not {self.min_length}")
        if self.min_confidence is not None and not 0 <= self.min_confidence <= 1:
            raise OptionError(f"minimum confidence must be between 0 and 1, not {self.min_confidence}")
        if self.split is not None:
            object.__setattr__(self, "split", _ratios(self.split))


def _ratios(split: str | tuple[float, ...] | list[float]) -> tuple[float, float, float] | None:
    """Three ratios summing to 1, from ``"0.8,0.1,0.1"`` or a sequence; empty text: no split."""
    if isinstance(split, str):
        if not split.strip():
            return None
        try:
            values = tuple(float(v) for v in split.split(","))
        except ValueError:
            raise OptionError(f"split {split!r} is not three numbers like 0.8,0.1,0.1") from None
    else:
        values = tuple(float(v) for v in split)
    if len(values) != 3 or any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        raise OptionError(f"split {','.join(map(str, values))} is not three numbers like 0.8,0.1,0.1 "
                          "(train, validation, test; not negative, not all zero)")
    total = sum(values)
    return (values[0] / total, values[1] / total, values[2] / total)


@dataclass(frozen=True, slots=True)
class ExportOptions:
    """What to export. ``regions`` is the filter (``None`` = everything), a list in a job file.

    ``image`` only matters with ``images``. ``on_error`` is the bad-image policy: ``fail`` stops
    the export, ``skip`` exports the part without its image and reports it.
    """

    __pydantic_config__ = STRICT

    format: str = field(default="alto", metadata=option(
        "alto, page (or pagexml), text, exchange or another registered format (default: alto)"))
    layer: str | None = field(default=None, metadata=option(
        "transcription layer (default: manual, else the document's only layer)"))
    regions: str | tuple[str, ...] | None = field(default=None, metadata=option(
        "region types to export: TYPE,...,undefined,orphan (default: all)"))
    part_ids: tuple[int, ...] | None = field(default=None, metadata=option(
        "the parts to export (the CLI takes page numbers, --parts)", cli=False))
    images: bool = field(default=False, metadata=option("include the page images"))
    image: ImageOptions = field(default=ImageOptions(), metadata=option("how images are exported"))
    on_error: Literal["fail", "skip"] = field(default="fail", metadata=option(
        "a bad image fails the export (default) or is skipped and reported (exit 1)"))
    unit: Literal["part", "document"] | None = field(default=None, metadata=option(
        "exchange: one text per part (default) or per document; tei: one TEI per document (default) "
        "or per part"))
    offset_unit: Literal["codepoint", "utf16"] = field(default="codepoint", metadata=option(
        "exchange format: annotation offsets in code points (default) or UTF-16 units"))
    section_names: dict[str, str] | None = field(default=None, metadata=option(
        "exchange format: a region type's section name (TYPE=NAME, repeatable; empty NAME: no section)",
        flag="--section-name", metavar="TYPE=NAME"))
    categories: str | None = field(default=None, metadata=option(
        "exchange format: the document metadata key whose values are the categories (default: tags)",
        metavar="KEY"))
    iiif_base: str = field(default="http://localhost:8000/", metadata=option(
        "iiif: the URL the archive's files will be served from, for the manifest's ids (default: "
        "http://localhost:8000/, what `python -m http.server` serves in the unpacked folder)", metavar="URL"))
    iiif_image_base: str | None = field(default=None, metadata=option(
        "iiif: an IIIF Image API server holding the images (identifier: the image file name)",
        metavar="URL"))
    lines: LineOptions = field(default=LineOptions(), metadata=option("lines format: the dataset"))
    models: Literal["none", "used", "all"] = field(default="none", metadata=option(
        "add OCR models to the archive: none (default), those trained on or run on its documents, or all",
        metavar="none|used|all"))

    def __post_init__(self) -> None:
        if isinstance(self.regions, tuple | list):  # a job file's list: the CLI's comma form
            object.__setattr__(self, "regions", ",".join(self.regions))

    def describe(self) -> dict[str, Any]:
        return asdict(self)


#: the highest page number a part selection may name (a typo's range must not fill the memory)
MAX_PAGE = 1_000_000


def parse_pages(spec: str) -> tuple[int, ...]:
    """``"1-10,15"`` → page numbers (1-based, in document order); empty = all."""
    pages: set[int] = set()
    for token in filter(None, (t.strip() for t in spec.split(","))):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", token)
        if not m or int(m[1]) < 1 or (m[2] and int(m[2]) < int(m[1])):
            raise UsageError(f"--parts: {token!r} is not a page number or range like 1-10")
        first, last = int(m[1]), int(m[2] or m[1])
        if last > MAX_PAGE:
            raise UsageError(f"--parts: {token!r}: no document has {last} pages (at most {MAX_PAGE})")
        pages.update(range(first, last + 1))
    return tuple(sorted(pages))


# --- the CLI's flags, generated from the fields ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Flag:
    """One command-line flag of an option field: ``path`` is the field's place in the model."""

    path: tuple[str, ...]
    flag: str
    kind: Any
    default: Any
    help: str
    metavar: str | None


def flags(cls: type = ExportOptions, prefix: tuple[str, ...] = ()) -> Iterator[Flag]:
    """The flags of an option model, nested models' fields prefixed with their field name
    (``image.quality`` is ``--image-quality``), in declaration order."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        kind = hints[f.name]
        path = (*prefix, f.name)
        if dataclasses.is_dataclass(kind):
            yield from flags(kind, path)  # type: ignore[arg-type]
            continue
        name = meta.get("flag") or "--" + "-".join(path).replace("_", "-")
        yield Flag(path, name, kind, f.default, meta.get("help", ""), meta.get("metavar"))


def choices(kind: Any) -> tuple[str, ...] | None:
    """The values of a ``Literal`` type (also inside ``X | None``), else None."""
    if get_origin(kind) is Literal:
        return get_args(kind)
    literal = [a for a in get_args(kind) if get_origin(a) is Literal]
    return get_args(literal[0]) if literal else None


def build(cls: type, values: dict[tuple[str, ...], Any], prefix: tuple[str, ...] = ()) -> Any:
    """An option model from flag values keyed by field path (absent keys keep their default)."""
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        path = (*prefix, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = build(hints[f.name], values, path)
        elif path in values:
            kwargs[f.name] = values[path]
    return cls(**kwargs)
