"""Line crops: each page image decoded once, cut into all its lines, each crop encoded alone.

The page is read top to bottom through libvips (sequential access: no decoded page is ever
whole in memory) into a window of full-width rows. Crops are taken in the order of their top
edge; rows above the current crop's top are dropped, rows are read in blocks of at most
:data:`WINDOW_BYTES` (or what the tallest line needs). So memory is bounded by the window,
whatever the page size, and no line costs a decode of its own.

:class:`CropStage` runs pages on worker threads, a bounded number ahead of the writer, and hands
each page's crops over through a small bounded stream: a page of 2,000 lines is never held
encoded in memory either.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import anyio
import anyio.from_thread
import pyvips
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from .errors import ImageError, UsageError
from .formats.lines import Box, LineCrop
from .images import FAIL_ON, _reason, vips_cache_off
from .memory import cores
from .model import Part, Polygon
from .options import IMAGE_FORMATS, ORIGINAL, ImageOptions

#: bytes of decoded rows a page keeps at most (more only when one line is taller); a window
#: briefly exists twice (the pieces fetched, then joined), and larger ones made no crop faster
WINDOW_BYTES = 1 << 20
#: bytes of rows libvips computes per fetch: it holds several times a fetch's size meanwhile
#: (+29 MB for 4 MB at once, +7 MB for 190 KB, on a 12-megapixel JPEG)
FETCH_BYTES = 256 << 10
#: encoded crops of one page waiting for the writer
CROP_QUEUE = 16
#: zlib level of PNG crops: on line crops of the real scans in tests/fixtures, level 3 costs 0.8x
#: the CPU of libvips' default 6 (0.25x of Pillow's default) for files 1 % larger (6 % larger than
#: Pillow's); level 1 saves little more CPU for files 15 % larger. Crops are stored in the zip as
#: they are.
PNG_COMPRESSION = 3

MaskMode = Literal["none", "white", "transparent"]


@dataclass(frozen=True, slots=True)
class CropFormat:
    """How crops are encoded: the libvips saver suffix and its options."""

    suffix: str
    options: tuple[tuple[str, Any], ...]

    @classmethod
    def from_options(cls, image: ImageOptions, mask: MaskMode) -> CropFormat:
        """PNG unless ``image.format`` names another (``original`` means PNG here: a crop has no
        original file); ``image.quality`` for lossy formats. Transparency needs an alpha channel."""
        name = "png" if image.format == ORIGINAL else image.format
        suffix = IMAGE_FORMATS[name][0]
        if mask == "transparent" and name in ("jpeg", "jp2"):
            raise UsageError(f"--line-mask transparent needs an image format with transparency "
                             f"(png, webp, tiff), not {name}")
        options: dict[str, Any] = {}
        if name == "png":
            options["compression"] = PNG_COMPRESSION
        if image.quality is not None and name in ("jpeg", "webp", "jp2", "tiff"):
            options["Q"] = image.quality
        if not image.keep_metadata:
            options["keep"] = pyvips.ForeignKeep.ICC
        return cls(suffix, tuple(options.items()))


Crop = tuple[LineCrop, bytes | None]
#: what a page job hands the writer: a crop and its encoded bytes, or None when its box turned
#: out to lie outside the decoded image (its header size disagreed with the stored one)
Emit = Callable[[LineCrop, bytes | None], None]


def cut_page(
    part: Part, crops: Sequence[LineCrop], fmt: CropFormat, mask: MaskMode, emit: Emit,
    *, window_bytes: int = WINDOW_BYTES,
) -> None:
    """Decode ``part``'s image once and ``emit`` every crop, in the order of their top edge
    (blocking: run it in a worker thread). Raises :class:`ImageError` for a bad image."""
    if not crops:
        return
    image, handle = _open(part)
    with handle:
        _cut(part, image, crops, fmt, mask, emit, window_bytes)


def _cut(
    part: Part, image: pyvips.Image, crops: Sequence[LineCrop], fmt: CropFormat, mask: MaskMode, emit: Emit,
    window_bytes: int,
) -> None:
    width, height = image.width, image.height
    bands, vformat = image.bands, image.format
    stride = width * bands * _SAMPLE_BYTES[vformat]
    icc = image.get("icc-profile-data") if image.get_typeof("icc-profile-data") else None
    region = pyvips.Region.new(image)
    window: Any = b""  # decoded rows [top, bottom)
    top = bottom = 0
    for crop in sorted(crops, key=lambda c: (c.box[1], c.box[3], c.number)):
        box = _clip(crop.box, width, height)
        if box is None:
            emit(crop, None)
            continue
        x0, y0, x1, y1 = box
        if y1 > bottom:
            keep = max(y0, top)  # rows above this crop's top are never needed again
            start = max(keep, bottom)  # rows between the window and this crop are decoded, not kept
            want = min(height, max(y1, start + max(1, window_bytes // stride)))
            step = max(1, FETCH_BYTES // stride)
            pieces = [memoryview(window)[(keep - top) * stride:]] if keep < bottom else []
            try:
                for y in range(start, want, step):
                    pieces.append(region.fetch(0, y, width, min(step, want - y)))
            except pyvips.Error as exc:
                raise ImageError(part, _reason(exc)) from None
            window = b"".join(pieces) if len(pieces) > 1 else pieces[0]
            del pieces
            top, bottom = keep, want
        page = pyvips.Image.new_from_memory(window, width, bottom - top, bands, vformat)
        cut = page.crop(x0, y0 - top, x1 - x0, y1 - y0)
        if mask != "none":
            shift = (crop.box[0] - x0, crop.box[1] - y0)
            cut = _masked(cut, _shifted(crop.polygon, shift), mask)
        if icc is not None:
            cut = cut.copy()
            cut.set_type(pyvips.GValue.blob_type, "icc-profile-data", icc)
        emit(crop, cut.write_to_buffer(fmt.suffix, **dict(fmt.options)))


_SAMPLE_BYTES = {"uchar": 1, "char": 1, "ushort": 2, "short": 2, "uint": 4, "int": 4, "float": 4,
                 "double": 8, "complex": 8, "dpcomplex": 16}


def _open(part: Part) -> tuple[pyvips.Image, BinaryIO]:
    source = Path(part.image_path) if part.image_path else None
    if source is None:
        raise ImageError(part, "the part has no image file")
    if not source.is_file():
        raise ImageError(part, "image file not found")
    try:
        handle = open(source, "rb", buffering=0)  # noqa: SIM115 - closed by cut_page
    except OSError as exc:
        raise ImageError(part, f"cannot read the image file ({exc.strerror})") from None
    try:
        return pyvips.Image.new_from_source(_reader(handle), "", access="sequential", fail_on=FAIL_ON), handle
    except pyvips.Error as exc:
        reason = _reason(exc)
    handle.close()
    raise ImageError(part, reason)


def _reader(handle: BinaryIO) -> pyvips.SourceCustom:
    """A libvips source reading ``handle`` with read(2): given a path, libvips maps the whole
    file, whose pages then count in the process's memory (+54 MB for a 600-megapixel JPEG); this
    costs one call into Python per 4 KB read, a few ms per megabyte."""
    source = pyvips.SourceCustom()
    source.on_read(handle.read)
    source.on_seek(handle.seek)
    return source


def _clip(box: Box, width: int, height: int) -> Box | None:
    x0, y0, x1, y1 = max(0, box[0]), max(0, box[1]), min(width, box[2]), min(height, box[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _shifted(polygon: Polygon, shift: tuple[int, int]) -> Polygon:
    dx, dy = shift
    return tuple((x + dx, y + dy) for x, y in polygon) if shift != (0, 0) else polygon


def polygon_mask(polygon: Polygon, width: int, height: int) -> bytes:
    """A ``width`` x ``height`` mask, 255 where a pixel's centre lies inside ``polygon`` (even-odd
    rule), else 0."""
    buf = bytearray(width * height)
    points = list(polygon)
    edges = [(a, b) for a, b in zip(points, points[1:] + points[:1], strict=True) if a[1] != b[1]]
    full = b"\xff" * width
    for row in range(height):
        yc = row + 0.5
        xs = sorted(a[0] + (yc - a[1]) * (b[0] - a[0]) / (b[1] - a[1])
                    for a, b in edges if min(a[1], b[1]) <= yc < max(a[1], b[1]))
        for left, right in zip(xs[::2], xs[1::2], strict=False):
            start = max(0, math.ceil(left - 0.5))
            end = min(width, math.ceil(right - 0.5))
            if end > start:
                buf[row * width + start: row * width + end] = full[: end - start]
    return bytes(buf)


def _masked(cut: pyvips.Image, polygon: Polygon, mode: MaskMode) -> pyvips.Image:
    """``cut`` with what lies outside ``polygon`` white, or transparent (an alpha channel)."""
    mask = pyvips.Image.new_from_memory(polygon_mask(polygon, cut.width, cut.height), cut.width,
                                        cut.height, 1, "uchar")
    peak = 65535 if cut.format == "ushort" else 255
    if cut.format != "uchar":
        mask = (mask * (peak / 255)).cast(cut.format)
    if mode == "white":
        return mask.ifthenelse(cut, [peak] * cut.bands)
    if cut.hasalpha():
        colour, alpha = cut.extract_band(0, n=cut.bands - 1), cut.extract_band(cut.bands - 1)
        return colour.bandjoin(mask.ifthenelse(alpha, 0))
    return cut.bandjoin(mask)


# --- the stage: pages on worker threads, a bounded number ahead ---------------------------------


@dataclass(slots=True)
class PageCrops:
    """One page's crops as they come; ``error`` is set once the stream ends if the image failed."""

    part: Part
    crops: ObjectReceiveStream[tuple[LineCrop, bytes | None]]
    error: ImageError | None = None


class CropStage:
    """Cuts the pages coming through on at most one thread per core plus one, in page order.

    ``async with CropStage(...) as stage`` around the use of :meth:`pages`; leaving the block
    stops the jobs still running (their streams close, their threads return).
    """

    def __init__(self, fmt: CropFormat, mask: MaskMode, *, lookahead: int = 3) -> None:
        self.fmt, self.mask, self.lookahead = fmt, mask, max(0, lookahead)
        self._slots = anyio.Semaphore(cores() + 1)
        self._stack = AsyncExitStack()
        self._open: set[ObjectReceiveStream[Any]] = set()

    async def __aenter__(self) -> CropStage:
        self._stack.enter_context(vips_cache_off())
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        return self

    async def __aexit__(self, *exc: object) -> bool | None:
        for stream in list(self._open):
            stream.close()  # a job blocked on a full stream then fails its send and returns
        return await self._stack.__aexit__(*exc)  # type: ignore[arg-type]

    def pages(
        self, planned: AsyncIterator[tuple[Part, Sequence[LineCrop]]]
    ) -> ObjectReceiveStream[PageCrops]:
        """Each planned page with its crops streaming in; pages come in the order given."""
        send, receive = anyio.create_memory_object_stream[PageCrops](self.lookahead)
        self._open.add(receive)
        self._tg.start_soon(self._feed, planned, send)
        return receive

    async def _feed(
        self, planned: AsyncIterator[tuple[Part, Sequence[LineCrop]]], out: ObjectSendStream[PageCrops]
    ) -> None:
        async with out:
            async for part, crops in planned:
                await self._slots.acquire()  # in page order: an earlier page never waits for a later one
                send, receive = anyio.create_memory_object_stream[tuple[LineCrop, bytes | None]](CROP_QUEUE)
                page = PageCrops(part, receive)
                self._open.add(receive)
                self._tg.start_soon(self._run, page, crops, send)
                await out.send(page)

    async def _run(
        self, page: PageCrops, crops: Sequence[LineCrop], send: ObjectSendStream[Crop]
    ) -> None:
        try:
            with send:
                await anyio.to_thread.run_sync(self._cut, page, crops, send)
        finally:
            self._slots.release()

    def _cut(
        self, page: PageCrops, crops: Sequence[LineCrop], send: ObjectSendStream[Crop]
    ) -> None:
        def emit(crop: LineCrop, data: bytes | None) -> None:
            anyio.from_thread.run(send.send, (crop, data))

        try:
            cut_page(page.part, crops, self.fmt, self.mask, emit)
        except ImageError as exc:
            page.error = exc  # set before the stream closes: the writer sees it at its end
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return  # the writer went away

    def done(self, page: PageCrops) -> None:
        """The writer is through with ``page``."""
        page.crops.close()
        self._open.discard(page.crops)
