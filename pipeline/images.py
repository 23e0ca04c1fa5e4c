"""The image stage: page images into zip entries, passed through or transcoded by libvips.

``fit_part`` decides, from the image header size only, what a part's image becomes (format, size)
and returns the part with its coordinates, size and file name made to match, so format writers
never know about it. :class:`ImageStage` then transcodes the images of the next parts ahead of the
writer, on at most one worker thread per core plus one, in part order:

* a transcode streams through libvips (sequential reads, shrinking on load when resizing) into an
  anonymous temporary file through its own descriptor, so no decoded or encoded image is ever
  whole in memory and libvips' threads never wait for the GIL to hand over their output;
* the writer adds the file to the zip once the transcode is complete; the OS removes the file when
  it is closed, even when the process dies.

pyvips is imported by the functions that call libvips: a pass-through export of JPEG and PNG
files whose sizes are stored never loads it (it is a tenth of the start-up of such an export).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream, TaskGroup

from .errors import ImageError, OutputError, SourceError
from .memory import cores
from .model import Line, Part, Polygon, Region
from .options import IMAGE_FORMATS, ORIGINAL, ImageOptions, supported_image_formats
from .vips import image_size

if TYPE_CHECKING:
    import pyvips

#: the libvips error level that fails a load: a truncated file must not export as a grey page
FAIL_ON = "truncated"
#: transcodes at once, beyond one per core: a transcode in a serial phase (opening, the JPEG
#: decoder's own thread) or waiting for the disk leaves spare cycles to the extra one (+4 % on 2 cores)
OVERSUBSCRIBE = 1
FORMATS = IMAGE_FORMATS
supported_formats = supported_image_formats


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


def unknown_size(part: Part) -> ImageError:
    """Why a part has no size (a source without stored sizes reads them from the image header)."""
    if not part.image_path:
        return ImageError(part, "the part has no image, so no size")
    if not Path(part.image_path).exists():
        return ImageError(part, "image file not found")
    return ImageError(part, "cannot read the image header for its size")


def fit_part(part: Part, options: ImageOptions) -> tuple[Part, ImagePlan]:
    """The part as its exported image will be: scaled coordinates, new size and file name; the plan.

    The size comes from the part (stored or header size); the header is read only when it is not
    known. Resizing never upscales, and the output size is forced to exactly what the XML says.
    """
    source = Path(part.image_path) if part.image_path else None
    width, height = part.width, part.height
    if (width <= 0 or height <= 0) and source is not None:
        with contextlib.suppress(SourceError):  # the image job reports an unreadable file
            width, height = image_size(source)
    scale = 1.0
    if options.max_size and max(width, height) > options.max_size:
        scale = options.max_size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resize = (new_w, new_h) != (width, height) and width > 0 and height > 0

    name = PurePosixPath(part.image_filename)
    if options.format == ORIGINAL:
        new_name = name.name
        save_suffix = _original_suffix(name, source) if resize else None
        if save_suffix is None and source is not None and not _same_format(name.suffix, source.suffix):
            new_name = f"{name.stem}{source.suffix}"  # the entry's name says what its bytes are
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


def _same_format(suffix: str, other: str) -> bool:
    """Whether two extensions name one format (``.jpg``/``.JPEG``); an unknown one only itself.
    A stored file without extension says nothing, so it never contradicts a name."""
    a, b = suffix.lower(), other.lower()
    return a == b or not b or any(a in group and b in group for group in FORMATS.values())


def _original_suffix(name: PurePosixPath, source: Path | None) -> str:
    """Resizing an ``original`` image keeps the format its name says, else the stored file's."""
    import pyvips
    saveable = pyvips.get_suffixes()
    if name.suffix.lower() in saveable or source is None:
        return name.suffix.lower()
    return source.suffix.lower()


def _scale(points: Polygon | None, sx: float, sy: float) -> Polygon | None:
    return None if points is None else tuple((x * sx, y * sy) for x, y in points)


def _scale_region(region: Region, sx: float, sy: float) -> Region:
    return dataclasses.replace(region, box=_scale(region.box, sx, sy) or ())


def _scale_line(line: Line, sx: float, sy: float) -> Line:
    return dataclasses.replace(line, baseline=_scale(line.baseline, sx, sy), mask=_scale(line.mask, sx, sy))


# --- bytes between the encoder and the zip -------------------------------------------------


#: bytes written past a spool's end to learn whether a failed write was the disk's fault
PROBE = 1 << 16


class SpoolClosed(Exception):
    """The reader went away: the encoder stops."""


class Spool:
    """One image's encoded bytes, in an anonymous temporary file that libvips writes through its
    own descriptor (no Python between the encoder and the file: a custom target called back into
    Python for every 8 KB, each call waiting for the GIL) and the zip reads once it is complete.

    The file is closed by :meth:`close` or, if libvips is still writing, when it stops: a
    descriptor is never closed under a writer (its number could be reused by another file).
    """

    def __init__(self, spill_dir: Path | None) -> None:
        self._spill_dir = spill_dir
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._writing = False
        self._closed = False
        self.error: BaseException | None = None

    def open(self) -> int:
        """Writer side: the descriptor of a new file to write to (a failed attempt's file is
        dropped); :class:`SpoolClosed` if the reader went away."""
        with self._lock:
            if self._closed:
                raise SpoolClosed
            if self._file is not None:
                self._file.close()
                self._file = None
            try:
                self._file = tempfile.TemporaryFile(  # noqa: SIM115 - closed by close() or finish()
                    dir=self._spill_dir, prefix=".pipeline-spool-", buffering=0
                )
            except OSError as exc:
                raise OutputError(f"cannot write {self.where}: {exc.strerror or exc}") from None
            self._writing = True
            return self._file.fileno()

    def finish(self, error: BaseException | None = None) -> None:
        """Writer side: done with the descriptor, all bytes written or failed with ``error``."""
        with self._lock:
            self.error = error
            self._writing = False
            if self._closed and self._file is not None:
                self._file.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def write_failure(self) -> str | None:
        """Writer side, after a failed write: why the file cannot grow (a full disk, a quota, a
        file-size limit, an I/O error), found by writing :data:`PROBE` more bytes past its end
        (the file is dropped anyway); None when it can."""
        with self._lock:
            if self._file is None or self._file.closed:
                return None
            fd = self._file.fileno()
            try:
                end, written = os.fstat(fd).st_size, 0
                while written < PROBE and (n := os.pwrite(fd, bytes(PROBE - written), end + written)):
                    written += n
            except OSError as exc:
                return exc.strerror or str(exc)
        return None

    @property
    def where(self) -> str:
        """The spool file, as messages name it."""
        return f"a temporary image file in {self._spill_dir or tempfile.gettempdir()}"

    def file(self) -> BinaryIO:
        """Reader side, after a successful finish: the encoded image, from its start."""
        assert self._file is not None and not self._writing
        self._file.seek(0)
        return self._file

    def close(self) -> None:
        """Drop the file now, or when the writer finishes."""
        with self._lock:
            self._closed = True
            if self._file is not None and not self._writing:
                self._file.close()


# --- the stage -----------------------------------------------------------------------------


def configure_vips() -> None:
    """Turn libvips' operation cache off for this whole program (benchmark baselines do, to
    compare like with like); the image stage itself only turns it off while it runs."""
    import pyvips
    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.cache_set_max_files(0)


_cache_lock = threading.Lock()
_cache_users = 0
_cache_saved: tuple[int, int, int] | None = None


@contextmanager
def vips_cache_off() -> Iterator[None]:
    """No libvips operation cache while an image stage runs (every image is read once; cached
    operations keep files open); the program's own settings come back when the last stage ends,
    so a program that uses the package keeps its cache."""
    import pyvips
    global _cache_users, _cache_saved
    with _cache_lock:
        if _cache_users == 0:
            _cache_saved = (pyvips.cache_get_max(), pyvips.cache_get_max_mem(), pyvips.cache_get_max_files())
            configure_vips()
        _cache_users += 1
    try:
        yield
    finally:
        with _cache_lock:
            _cache_users -= 1
            if _cache_users == 0 and _cache_saved is not None:
                size, memory, files = _cache_saved
                pyvips.cache_set_max(size)
                pyvips.cache_set_max_mem(memory)
                pyvips.cache_set_max_files(files)


class ImageJob:
    """One part's image: checked (pass-through) or transcoded (into a spool) on a worker thread."""

    def __init__(self, part: Part, plan: ImagePlan, options: ImageOptions, spool: Spool) -> None:
        self.part, self.plan, self._options, self._spool = part, plan, options, spool
        self._done = anyio.Event()
        self._image: pyvips.Image | None = None  #: being written, so that close() can stop it

    async def run(self, limiter: anyio.CapacityLimiter) -> None:
        try:
            await anyio.to_thread.run_sync(self._work, limiter=limiter)
        finally:
            self._done.set()

    async def data(self) -> Path | BinaryIO:
        """The entry data once the job is done: the checked file (pass-through) or the encoded
        image, so a failure is known before anything of the image reaches the zip.
        Raises :class:`ImageError`."""
        await self._done.wait()
        if self._spool.error is not None:
            raise self._spool.error
        if self.plan.passthrough:
            assert self.plan.source is not None
            return self.plan.source
        return self._spool.file()

    def close(self) -> None:
        """Drop the encoded image; a transcode still running is killed (libvips stops soon). The
        spool is marked closed first, so the kill's failure is never taken for the page's."""
        self._spool.close()
        if (image := self._image) is not None:
            image.set_kill(True)

    def _work(self) -> None:
        error: BaseException | None = None
        try:
            if self.plan.passthrough:
                check_passthrough(self.part, self.plan)
            else:
                self._transcode()
        except (ImageError, SpoolClosed, OutputError) as exc:
            error = exc
        except BaseException as exc:  # a bug, or no temporary file: release the spool, then fail
            self._spool.finish(exc)
            raise
        self._spool.finish(error)

    def _transcode(self) -> None:
        error: ImageError | OutputError | SpoolClosed | None = None
        for last in (False, True):
            failure = self._encode(open_image(self.part, self.plan))
            if failure is None:
                return
            error = self._classify(failure, last=last)
            if error is not None:
                break
        if error is not None:  # raised here, where no frame holds the image (see _encode)
            try:
                raise error
            finally:
                del error  # no cycle (error -> traceback -> this frame -> error) for gc to find

    def _encode(self, image: pyvips.Image) -> tuple[str | None, str] | None:
        """Write the image into a new spool file; when that fails, libvips' words for it: the
        system's reason for a failed write (if it gave one) and its own last telling line.
        Returns rather than raises, so that no traceback keeps the image alive: libvips gives its
        warnings about a read when the image is freed, and after exit they would go straight to
        stderr. Nor the target: it holds a duplicate of the spool's descriptor, so the file would
        stay open (and its disk space taken) until the garbage collector ran."""
        import pyvips
        assert self.plan.save_suffix is not None
        options = self._options
        keep = pyvips.ForeignKeep.ALL if options.keep_metadata else pyvips.ForeignKeep.ICC
        kwargs: dict[str, object] = {"keep": keep}
        if options.quality is not None:
            kwargs["Q"] = options.quality
        self._image = image
        try:
            target = pyvips.Target.new_to_descriptor(self._spool.open())
            image.write_to_target(target, self.plan.save_suffix, **kwargs)
            return None
        except pyvips.Error as exc:
            return _write_failure(exc), _reason(exc)
        finally:
            self._image = None

    def _classify(
        self, failure: tuple[str | None, str], *, last: bool
    ) -> ImageError | OutputError | SpoolClosed | None:
        """Whose fault a failed transcode is, decided from the files, never from libvips' error
        text: that is one buffer for all threads, so a concurrent failure may take it or swap it
        (a full disk then reads ``vips2png: unable to write to target`` or ``Unknown error -1``,
        or another page's reason). The text only words the message.

        Killed by :meth:`close` -> SpoolClosed. The spool takes no more bytes (a full disk, a
        quota, a file-size limit) -> OutputError. The page does not read to its last pixel on its
        own -> ImageError. Both fine: the space may have been freed since (our own spools are
        dropped as pages are written) -> None, try once more; failing again with both still fine,
        the encoder cannot write this page (an ImageError), unless libvips named a system error."""
        if self._spool.closed:
            return SpoolClosed()
        system, reason = failure
        if (full := self._spool.write_failure()) is not None:
            return OutputError(f"cannot write {self._spool.where}: {full}")
        if (unreadable := read_failure(self.part, self.plan)) is not None:
            return unreadable
        if not last:
            return None
        if system is not None:
            return OutputError(f"cannot write {self._spool.where}: {system}")
        return ImageError(self.part, reason)


def read_failure(part: Part, plan: ImagePlan) -> ImageError | None:
    """Why the part's image cannot be read through to its last pixel, or None if it can (decoded
    to an average, nothing written): after a failed transcode, tells a bad page from a bad output."""
    import pyvips
    try:
        image = open_image(part, plan)
    except ImageError as exc:
        return exc
    try:
        image.avg()
        return None
    except pyvips.Error as exc:
        reason = _reason(exc)
    finally:
        del image
    return ImageError(part, reason)


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
    import pyvips
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
        reason = _reason(exc)
    raise ImageError(part, reason)  # outside the handler: no context holding libvips' objects


#: how libvips reports a failed write(2) to a target: its message, then the system's reason
_WRITE_FAILURE = re.compile(r"target: write error\s*\n\s*system error: ([^\n]+)")


def _write_failure(exc: pyvips.Error) -> str | None:
    """The system's reason (``No space left on device``...) when libvips failed writing its output."""
    found = _WRITE_FAILURE.search(f"{exc.message}\n{exc.detail or ''}")
    return found.group(1).strip() if found else None


def _reason(exc: pyvips.Error) -> str:
    """libvips' own last line that says what is wrong, e.g. ``VipsJpeg: premature end of JPEG
    image``, rather than the saver's ``unable to write to target`` it ends with."""
    lines = [s.strip() for s in f"{exc.message}\n{exc.detail or ''}".splitlines() if s.strip()]
    telling = [line for line in lines if not _GENERIC.search(line)]
    return (telling or lines or ["libvips cannot read the image"])[-1]


#: libvips messages that only say which operation failed, not why
_GENERIC = re.compile(r"unable to (call|write to)\b")


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
        self.options = options
        self._spill_dir = spill_dir
        self._limiter = anyio.CapacityLimiter(cores() + OVERSUBSCRIBE)
        self._jobs: set[ImageJob] = set()
        self._tg: TaskGroup | None = None

    async def __aenter__(self) -> ImageStage:
        self._cache = vips_cache_off()
        self._cache.__enter__()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._tg is not None
        for job in self._jobs:
            job.close()  # kills the transcodes still running
        try:
            return await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            for job in self._jobs:
                job.close()
            self._cache.__exit__(None, None, None)

    async def feed(
        self, parts: ObjectReceiveStream[Part], out: ObjectSendStream[tuple[Part, ImageJob]]
    ) -> None:
        """Fit each part, start its job, and pass both on; ``out``'s buffer sets the lookahead."""
        assert self._tg is not None
        async with parts, out:
            async for part in parts:
                fitted, plan = await anyio.to_thread.run_sync(fit_part, part, self.options)
                job = ImageJob(fitted, plan, self.options, Spool(self._spill_dir))
                self._jobs.add(job)
                self._tg.start_soon(job.run, self._limiter)
                await out.send((fitted, job))

    def release(self, job: ImageJob) -> None:
        """The job's entry is in the zip: drop its bytes."""
        job.close()
        self._jobs.discard(job)
