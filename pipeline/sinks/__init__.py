"""Where an export's bytes go: a :class:`Sink` is a byte stream that publishes on ``commit()``.

``open_sink(target)`` picks the implementation: ``-`` is standard output, ``scheme://...`` a
registered kind (one line per kind, see :func:`register_sink`), anything else a local file or, for
an existing folder or a path ending in ``/``, a new file named ``name`` in that folder that never
replaces another. Everything above this package sees only the protocol; the archive writes bytes
into a sink and knows nothing of where they go.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from pipeline.errors import UsageError
from pipeline.sinks.base import ByteSink, Sink
from pipeline.sinks.local import TEMP_PREFIX, LocalFileSink, locked_folder
from pipeline.sinks.stdout import StdoutSink

__all__ = ["TEMP_PREFIX", "ByteSink", "LocalFileSink", "Sink", "StdoutSink", "cleanup", "exists",
           "local_folder", "locked_folder", "open_reader", "open_sink", "register_sink", "remove"]


#: ``open_sink(target, name=...)`` for a URL scheme
SinkFactory = Callable[[str, "str | None"], Sink]
_SCHEMES: dict[str, SinkFactory] = {}
_EXISTS: dict[str, Callable[..., bool]] = {}
_REMOVE: dict[str, Callable[[str], None]] = {}
_READER: dict[str, Callable[[str], IO[bytes]]] = {}
_CLEANUP: dict[str, Callable[[str, timedelta], list[str]]] = {}


def register_sink(
    scheme: str, factory: SinkFactory, *, exists: Callable[..., bool] | None = None,
    remove: Callable[[str], None] | None = None, reader: Callable[[str], IO[bytes]] | None = None,
    cleanup: Callable[[str, timedelta], list[str]] | None = None,
) -> None:
    """Make ``open_sink("<scheme>://...")`` call ``factory(target, name)``. ``exists(location,
    size)`` and ``remove`` let jobs skip unchanged outputs and apply retention there, ``reader``
    opens a published output as a seekable file (``verify``), ``cleanup(folder, older_than)``
    removes what killed writers left there (``exports gc``)."""
    key = scheme.lower()
    _SCHEMES[key] = factory
    for table, hook in ((_EXISTS, exists), (_REMOVE, remove), (_READER, reader), (_CLEANUP, cleanup)):
        if hook is not None:
            table[key] = hook  # type: ignore[index]


def open_sink(target: str | Path | None, *, name: str | None = None) -> Sink:
    """The sink for ``-o`` values: ``-``, a URL of a registered scheme, a folder (``name`` in it,
    never overwriting; None means the current folder) or a file (replaced atomically)."""
    if target is None:
        target = "."
    text = str(target)
    if text == "-":
        return StdoutSink()
    scheme, sep, _ = text.partition("://")
    if sep and scheme.isidentifier():
        factory = _SCHEMES.get(scheme.lower())
        if factory is None:
            known = ", ".join(f"{s}://" for s in sorted(_SCHEMES)) or "none"
            raise UsageError(f"{text}: no output of kind {scheme}:// (known: -, a path, {known})")
        return factory(text, name)
    folder = local_folder(target)
    if folder is not None:
        if name is None:
            raise UsageError(f"{text}: a folder; give a file name")
        return LocalFileSink(folder / name, overwrite=False)
    return LocalFileSink(Path(text), overwrite=True)


def exists(location: str, size: int | None = None) -> bool:
    """Whether an output published at ``location`` is still there (with ``size`` bytes, if given)."""
    if "://" in location:
        hook = _hook(location, _EXISTS)
        return hook(location) if size is None else hook(location, size)
    path = Path(location)
    return location != "-" and path.is_file() and (size is None or path.stat().st_size == size)


def remove(location: str) -> None:
    """Delete a published output (retention); gone already is fine."""
    if "://" in location:
        _hook(location, _REMOVE)(location)
    elif location != "-":
        Path(location).unlink(missing_ok=True)


def open_reader(location: str) -> IO[bytes]:
    """A published output as a seekable binary file, read where it is (ranged reads for URLs)."""
    if "://" in location:
        return _hook(location, _READER)(location)
    return open(location, "rb")  # noqa: SIM115 - the caller closes it


def cleanup(folder: str, older_than: timedelta) -> list[str]:
    """Remove what killed writers left in ``folder`` (partial files whose writer is gone; pending
    uploads started more than ``older_than`` ago); returns what was removed."""
    if "://" in folder:
        return _hook(folder, _CLEANUP)(folder, older_than)
    from pipeline.sinks.local import remove_stale_partials

    return [str(path) for path in remove_stale_partials(Path(folder))]


def _hook(location: str, table: dict[str, Callable[[str], Any]]) -> Callable[[str], Any]:
    scheme = location.partition("://")[0].lower()
    if scheme not in table:
        raise UsageError(f"{location}: outputs of kind {scheme}:// cannot be read, checked or removed here")
    return table[scheme]


def local_folder(target: str | Path | None) -> Path | None:
    """The local folder a target writes into in directory mode (an existing folder, or a path
    ending in a separator), else None (a file, stdout or a URL)."""
    if target is None:
        return Path(".")
    text = str(target)
    if text == "-" or "://" in text:
        return None
    path = Path(text)
    return path if path.is_dir() or text.endswith(("/", "\\")) else None


from pipeline.sinks import s3  # noqa: E402 - registered below; imports its clients only when used

register_sink("s3", s3.open_s3_sink, exists=s3.exists, remove=s3.remove, reader=s3.RangeReader,
              cleanup=s3.cleanup)
