"""The image stage: page images into zip entries, passed through or transcoded by libvips.

``fit_part`` decides, from the image header size only, what a part's image becomes (format, size)
and returns the part with its coordinates, size and file name made to match, so format writers
never know about it. :class:`ImageStage` then transcodes the images of the next parts ahead of the
writer, on at most one worker thread per core plus one, in part order:

* a transcode streams: libvips reads sequentially (shrinking on load when resizing) and writes
  through a custom target in chunks, so no decoded or encoded image is ever whole in memory;
* the part being written drains its :class:`Spool` straight into its zip entry (the encoder waits
  for the zip when it runs ahead by more than a small window);
* parts ahead keep their output in memory within a shared budget and spill to anonymous temporary
  files beyond it, which the OS removes on close, even when the process dies.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import BinaryIO

import anyio
import pyvips
from anyio.abc import ObjectReceiveStream, ObjectSendStream, TaskGroup

from .errors import PipelineError, UsageError
from .model import Line, Part, Polygon, Region

#: output format name -> suffix written, and the suffixes that already mean that format
FORMATS: dict[str, tuple[str, ...]] = {
    "jpeg": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "png": (".png",),
    "webp": (".webp",),
    "tiff": (".tif", ".tiff"),
    "jp2": (".jp2", ".j2k", ".jpx"),
}
ORIGINAL = "original"
#: the libvips error level that fails a load: a truncated file must not export as a grey page
FAIL_ON = "truncated"
CHUNK = 1 << 18
#: how far the encoder of the part being written may run ahead of the zip
STREAM_WINDOW = 4 * CHUNK
#: how often a blocked thread looks for cancellation
POLL = 0.1
MEMORY_BUDGET = 64 << 20
LOOKAHEAD = 3
#: transcodes at once, beyond one per core: a libvips thread waiting for the GIL (to hand over its
#: output) or for the disk leaves its core to the extra one (+4 % throughput on 2 cores)
OVERSUBSCRIBE = 1


class ImageError(PipelineError):
    """One part's image cannot be exported: missing, unreadable, truncated or not encodable."""

    def __init__(self, part: Part, reason: str) -> None:
        self.part_id, self.page, self.file, self.reason = part.id, part.order + 1, part.image_filename, reason
        self.path = part.image_path or part.image
        super().__init__(f"part {self.page} ({self.file}, {self.path}): {reason}")

    def report(self) -> dict[str, object]:
        """The ``export-report.json`` entry for this image."""
        return {"part_id": self.part_id, "page": self.page, "file": self.file, "error": self.reason}


def supported_formats() -> tuple[str, ...]:
    """Output formats this libvips can write, ``original`` first."""
    saveable = set(pyvips.get_suffixes())
    return (ORIGINAL, *(name for name, suffixes in FORMATS.items() if suffixes[0] in saveable))


@dataclass(frozen=True, slots=True)
class ImageOptions:
    """How images are exported. ``original`` without resizing passes the file through unchanged.

    ``quality`` (1-100, lossy formats) None = the encoder's default. ``max_size`` bounds the longest
    side (downscale only). Transcoded images lose their metadata unless ``keep_metadata``; the
    colour profile is always kept, since dropping it changes the colours. ``memory_budget`` (bytes)
    and ``lookahead`` (parts) bound the work done ahead of the part being written.
    """

    format: str = ORIGINAL
    quality: int | None = None
    max_size: int | None = None
    keep_metadata: bool = False
    memory_budget: int = MEMORY_BUDGET
    lookahead: int = LOOKAHEAD

    def __post_init__(self) -> None:
        supported = supported_formats()
        if self.format not in supported:
            raise UsageError(
                f"image format {self.format!r} is not supported by this libvips "
                f"(supported: {', '.join(supported)})"
            )
        if self.quality is not None and not 1 <= self.quality <= 100:
            raise UsageError(f"image quality must be 1-100, not {self.quality}")
        if self.max_size is not None and self.max_size < 1:
            raise UsageError(f"image max size must be a positive number of pixels, not {self.max_size}")
        if self.memory_budget < 0 or self.lookahead < 0:
            raise UsageError("image memory budget and lookahead cannot be negative")

    @property
    def passthrough(self) -> bool:
        """Every image goes into the archive unchanged: nothing to transcode ahead of the writer."""
        return self.format == ORIGINAL and self.max_size is None


@dataclass(frozen=True, slots=True)
class ImagePlan:
    """What one part's image becomes. ``save_suffix`` None = pass the file through unchanged."""

    source: Path | None
    width: int
    height: int
    resize: bool
    save_suffix: str | None

    @property
    def passthrough(self) -> bool:
        return self.save_suffix is None


def fit_part(part: Part, options: ImageOptions) -> tuple[Part, ImagePlan]:
    """The part as its exported image will be: scaled coordinates, new size and file name; the plan.

    The size comes from the part (stored or header size); the header is read only when it is not
    known. Resizing never upscales, and the output size is forced to exactly what the XML says.
    """
    source = Path(part.image_path) if part.image_path else None
    width, height = part.width, part.height
    if (width <= 0 or height <= 0) and source is not None:
        width, height = _header_size(source) or (width, height)
    scale = 1.0
    if options.max_size and max(width, height) > options.max_size:
        scale = options.max_size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resize = (new_w, new_h) != (width, height) and width > 0 and height > 0

    name = PurePosixPath(part.image_filename)
    if options.format == ORIGINAL:
        new_name = name.name
        save_suffix = _original_suffix(name, source) if resize else None
    else:
        suffixes = FORMATS[options.format]
        new_name = name.name if name.suffix.lower() in suffixes else f"{name.stem}{suffixes[0]}"
        save_suffix = suffixes[0]
    plan = ImagePlan(source, new_w, new_h, resize, save_suffix)
    if not resize and new_name == part.image_filename:
        return part, plan
    sx, sy = (new_w / width, new_h / height) if resize else (1.0, 1.0)
    fitted = dataclasses.replace(
        part,
        width=new_w if resize else part.width,
        height=new_h if resize else part.height,
        original_filename=new_name,
        regions=tuple(_scale_region(r, sx, sy) for r in part.regions) if resize else part.regions,
        lines=tuple(_scale_line(li, sx, sy) for li in part.lines) if resize else part.lines,
    )
    return fitted, plan


def _original_suffix(name: PurePosixPath, source: Path | None) -> str:
    """Resizing an ``original`` image keeps the format its name says, else the stored file's."""
    saveable = pyvips.get_suffixes()
    if name.suffix.lower() in saveable or source is None:
        return name.suffix.lower()
    return source.suffix.lower()


def _header_size(path: Path) -> tuple[int, int] | None:
    """Width and height from the header (libvips decodes no pixels to open a file)."""
    try:
        image = pyvips.Image.new_from_file(str(path))
    except pyvips.Error:
        return None  # the image job reports the error
    return image.width, image.height


def _scale(points: Polygon | None, sx: float, sy: float) -> Polygon | None:
    return None if points is None else tuple((x * sx, y * sy) for x, y in points)


def _scale_region(region: Region, sx: float, sy: float) -> Region:
    return dataclasses.replace(region, box=_scale(region.box, sx, sy) or ())


def _scale_line(line: Line, sx: float, sy: float) -> Line:
    return dataclasses.replace(line, baseline=_scale(line.baseline, sx, sy), mask=_scale(line.mask, sx, sy))


# --- bytes between the encoder and the zip -------------------------------------------------


class MemoryBudget:
    """Bytes that the spools of all parts ahead may hold in memory together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, n: int, *, force: bool = False) -> bool:
        with self._lock:
            if not force and self.used + n > self.limit:
                return False
            self.used += n
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self.used -= n


class SpoolClosed(Exception):
    """The reader went away: the encoder stops."""


class Spool:
    """One image's encoded bytes between one writer thread (libvips) and one reader (the zip).

    Chunks stay in memory while the budget allows, then everything that follows goes to an
    anonymous temporary file (read back with ``pread``). Once a reader streams, the writer no
    longer spills but waits when it is more than :data:`STREAM_WINDOW` ahead.
    """

    def __init__(self, budget: MemoryBudget, spill_dir: Path | None) -> None:
        self._budget = budget
        self._spill_dir = spill_dir
        self._cond = threading.Condition()
        self._chunks: deque[bytes] = deque()
        self._held = 0
        self._file: BinaryIO | None = None
        self._written = 0
        self._pending = bytearray()
        self._streaming = False
        self._done = False
        self._closed = False
        self.error: BaseException | None = None

    def write(self, data: bytes) -> None:
        """Writer side: queue bytes (coalesced into :data:`CHUNK`-sized chunks)."""
        self._pending += data
        if len(self._pending) >= CHUNK:
            self._push(bytes(self._pending))
            self._pending.clear()

    def finish(self, error: BaseException | None = None) -> None:
        """Writer side: all bytes are written, or the write failed with ``error``."""
        if error is None and self._pending:
            try:
                self._push(bytes(self._pending))
            except SpoolClosed:
                return
        with self._cond:
            self.error = error
            self._done = True
            self._cond.notify_all()

    def _push(self, chunk: bytes) -> None:
        with self._cond:
            while self._streaming and self._file is None and self._held >= STREAM_WINDOW and not self._closed:
                self._cond.wait()
            if self._closed:
                raise SpoolClosed
            if self._file is None and self._budget.take(len(chunk), force=self._streaming):
                self._chunks.append(chunk)
                self._held += len(chunk)
                self._cond.notify_all()
                return
            if self._file is None:
                self._file = tempfile.TemporaryFile(  # noqa: SIM115 - closed by close()
                    dir=self._spill_dir, prefix=".pipeline-spool-", buffering=0
                )
            self._file.write(chunk)  # under the lock: close() may not pull the file from under it
            self._written += len(chunk)
            self._cond.notify_all()

    def stream(self) -> Iterator[bytes]:
        """Reader side: the bytes in order, as they come; raises the writer's error.

        Runs in an anyio worker thread (the zip flush), so waiting for the writer stays cancellable.
        """
        with self._cond:
            self._streaming = True
            self._cond.notify_all()
        offset = 0
        while True:
            with self._cond:
                while not (self._chunks or offset < self._written or self._done or self._closed):
                    self._cond.wait(POLL)
                    anyio.from_thread.check_cancelled()
                if self.error is not None:
                    raise self.error
                if self._closed:
                    raise SpoolClosed
                if self._chunks:
                    chunk = self._chunks.popleft()
                    self._held -= len(chunk)
                    self._budget.release(len(chunk))
                    self._cond.notify_all()
                elif offset < self._written:
                    assert self._file is not None
                    chunk = os.pread(self._file.fileno(), min(CHUNK, self._written - offset), offset)
                    offset += len(chunk)
                else:
                    return
            yield chunk

    def close(self) -> None:
        """Free memory and the temporary file; a writer still running stops at its next chunk."""
        with self._cond:
            self._closed = True
            self._budget.release(self._held)
            self._chunks.clear()
            self._held = 0
            if self._file is not None:
                self._file.close()
            self._cond.notify_all()


# --- the stage -----------------------------------------------------------------------------


@cache
def configure_vips() -> None:
    """No operation cache (every image is read once; cached operations keep files open), and no
    libvips progress chatter in the export's log."""
    logging.getLogger("pyvips").setLevel(logging.WARNING)
    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.cache_set_max_files(0)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ImageJob:
    """One part's image: checked (pass-through) or transcoded (into a spool) on a worker thread."""

    def __init__(self, part: Part, plan: ImagePlan, options: ImageOptions, spool: Spool) -> None:
        self.part, self.plan, self._options, self._spool = part, plan, options, spool
        self._done = anyio.Event()

    async def run(self, limiter: anyio.CapacityLimiter) -> None:
        try:
            await anyio.to_thread.run_sync(self._work, limiter=limiter)
        finally:
            self._done.set()

    async def data(self, *, complete: bool) -> Path | Iterator[bytes]:
        """The entry data: the file (pass-through) or the encoded bytes, streamed as they come.

        With ``complete`` the transcode must have succeeded first, so a failure is known before
        anything of the image reaches the zip. Raises :class:`ImageError`.
        """
        if self.plan.passthrough or complete:
            await self._done.wait()
        if self._spool.error is not None:
            raise self._spool.error
        if self.plan.passthrough:
            assert self.plan.source is not None
            return self.plan.source
        return self._spool.stream()

    def close(self) -> None:
        self._spool.close()

    def _work(self) -> None:
        error: BaseException | None = None
        try:
            if self.plan.passthrough:
                check_passthrough(self.part, self.plan)
            else:
                self._transcode()
        except (ImageError, SpoolClosed) as exc:
            error = exc
        except BaseException as exc:  # a bug or a full disk: wake the reader, then fail the export
            self._spool.finish(exc)
            raise
        self._spool.finish(error)

    def _transcode(self) -> None:
        image = open_image(self.part, self.plan)
        assert self.plan.save_suffix is not None
        options = self._options
        keep = pyvips.ForeignKeep.ALL if options.keep_metadata else pyvips.ForeignKeep.ICC
        kwargs: dict[str, object] = {"keep": keep}
        if options.quality is not None:
            kwargs["Q"] = options.quality
        stopped: list[BaseException] = []

        def on_write(data: bytes) -> int:  # called on a libvips thread
            try:
                self._spool.write(data)
            except BaseException as exc:  # noqa: BLE001 - must not unwind through C
                stopped.append(exc)
                return -1
            return len(data)

        target = pyvips.TargetCustom()
        target.on_write(on_write)
        try:
            image.write_to_target(target, self.plan.save_suffix, **kwargs)
        except pyvips.Error as exc:
            if stopped:
                raise stopped[0] from None
            raise ImageError(self.part, _reason(exc)) from None


def passthrough_image(part: Part, options: ImageOptions) -> tuple[Part, Path | ImageError]:
    """For a pass-through export (:attr:`ImageOptions.passthrough`): the part as exported and its
    checked image file, or why the image cannot be exported (blocking: run in a worker thread)."""
    fitted, plan = fit_part(part, options)
    try:
        check_passthrough(fitted, plan)
    except ImageError as exc:
        return fitted, exc
    assert plan.source is not None
    return fitted, plan.source


def check_passthrough(part: Part, plan: ImagePlan) -> None:
    """The file exists and is an image that is not cut short, or :class:`ImageError`. JPEG and PNG
    files are judged by their first and last bytes (a libvips header read costs ten times as much,
    most of it Python); other formats by libvips reading their header."""
    source = plan.source
    if source is None or (signature := _SIGNATURES.get(source.suffix.lower())) is None:
        open_image(part, plan)
        return
    head, trailer, kind = signature
    try:
        with open(source, "rb") as fh:
            start = fh.read(len(head))
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - TAIL))
            end = fh.read()
    except FileNotFoundError:
        raise ImageError(part, "image file not found") from None
    except OSError as exc:
        raise ImageError(part, f"cannot read the image file ({exc.strerror})") from None
    if start != head:
        raise ImageError(part, f"not a {kind} file (it does not start like one)")
    if trailer not in end:
        raise ImageError(part, "file is truncated (no end-of-image marker)")


def open_image(part: Part, plan: ImagePlan) -> pyvips.Image:
    """The part's image opened for a sequential read (shrinking on load when resizing)."""
    source = plan.source
    if source is None:
        raise ImageError(part, "the part has no image file")
    if not source.is_file():
        raise ImageError(part, "image file not found")
    try:
        if plan.resize:
            return pyvips.Image.thumbnail(
                str(source), plan.width, height=plan.height, size="force", no_rotate=True, fail_on=FAIL_ON,
            )
        return pyvips.Image.new_from_file(str(source), access="sequential", fail_on=FAIL_ON)
    except pyvips.Error as exc:
        raise ImageError(part, _reason(exc)) from None


def _reason(exc: pyvips.Error) -> str:
    """libvips' own last line, e.g. ``VipsJpeg: premature end of JPEG image``."""
    lines = [s.strip() for s in f"{exc.message}\n{exc.detail or ''}".splitlines() if s.strip()]
    return lines[-1] if lines else "libvips cannot read the image"


#: what pass-through files of common formats start and end with: a renamed file or a truncated
#: upload lacks one of them (suffix -> start, end-of-image marker, format name)
_SIGNATURES: dict[str, tuple[bytes, bytes, str]] = {
    **dict.fromkeys(FORMATS["jpeg"], (b"\xff\xd8\xff", b"\xff\xd9", "JPEG")),
    ".png": (b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82", "PNG"),
}
#: bytes at the end of a file searched for its end-of-image marker (JPEGs may carry trailing data)
TAIL = 1024


class ImageStage:
    """Runs :class:`ImageJob`s for the parts coming through, a bounded number ahead of the writer.

    Use as ``async with ImageStage(...) as stage`` around the task group that calls :meth:`feed`:
    leaving the block stops the encoders still running and removes every spool.
    """

    def __init__(self, options: ImageOptions, *, spill_dir: Path | None = None) -> None:
        configure_vips()
        self.options = options
        self._budget = MemoryBudget(options.memory_budget)
        self._spill_dir = spill_dir
        self._limiter = anyio.CapacityLimiter(cores() + OVERSUBSCRIBE)
        self._jobs: set[ImageJob] = set()
        self._tg: TaskGroup | None = None

    @property
    def budget(self) -> MemoryBudget:
        return self._budget

    async def __aenter__(self) -> ImageStage:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._tg is not None
        for job in self._jobs:
            job.close()  # wakes encoders waiting on a reader that is gone
        try:
            return await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            for job in self._jobs:
                job.close()

    async def feed(
        self, parts: ObjectReceiveStream[Part], out: ObjectSendStream[tuple[Part, ImageJob]]
    ) -> None:
        """Fit each part, start its job, and pass both on; ``out``'s buffer sets the lookahead."""
        assert self._tg is not None
        async with parts, out:
            async for part in parts:
                fitted, plan = await anyio.to_thread.run_sync(fit_part, part, self.options)
                job = ImageJob(fitted, plan, self.options, Spool(self._budget, self._spill_dir))
                self._jobs.add(job)
                self._tg.start_soon(job.run, self._limiter)
                await out.send((fitted, job))

    def release(self, job: ImageJob) -> None:
        """The job's entry is in the zip: drop its bytes."""
        job.close()
        self._jobs.discard(job)
