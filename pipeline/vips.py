"""What libvips is asked outside the image stage: an image's size, the formats it can write.

The one place that reads an image's size, from its header, decoding no pixels: sources (a corpus
without a stored size, a folder or zip of XML), the importer and the image stage all call
:func:`image_size`. libvips is loaded on the first call only, so commands that never read an
image never pay for it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import IO

from pipeline.errors import SourceError


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` from the header (libvips opens lazily); SourceError naming the file."""
    import pyvips

    try:
        image = pyvips.Image.new_from_file(str(path))
        return image.width, image.height
    except pyvips.Error as exc:
        reason = (str(exc).strip().splitlines() or ["unreadable"])[0]
    # raised outside the handler, so no traceback keeps libvips' objects (and their warnings) alive
    raise SourceError(f"{path}: not a readable image ({reason})")


def stream_image_size(stream: IO[bytes], what: str) -> tuple[int, int]:
    """``(width, height)`` from the start of a stream (a zip member): libvips reads as far as the
    header; SourceError naming ``what``."""
    import pyvips

    source = pyvips.SourceCustom()
    source.on_read(stream.read)
    try:
        image = pyvips.Image.new_from_source(source, "", access="sequential")
        return image.width, image.height
    except pyvips.Error as exc:
        reason = (str(exc).strip().splitlines() or ["unreadable"])[0]
    raise SourceError(f"{what}: not a readable image ({reason})")


@cache
def writable_formats(suffixes: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """The names of ``(name, suffix)`` pairs whose suffix this libvips can write, in order."""
    import pyvips

    saveable = set(pyvips.get_suffixes())
    return tuple(name for name, suffix in suffixes if suffix in saveable)


def thumbnail(path: str | Path, width: int) -> bytes:
    """A JPEG at most ``width`` pixels wide (libvips shrinks on load: a big page costs little
    memory); SourceError naming the file."""
    import pyvips

    try:
        image = pyvips.Image.thumbnail(str(path), width, height=width * 4, size="down")
        return bytes(image.jpegsave_buffer(Q=80, keep="none"))
    except pyvips.Error as exc:
        reason = (str(exc).strip().splitlines() or ["unreadable"])[0]
    raise SourceError(f"{path}: not a readable image ({reason})")
