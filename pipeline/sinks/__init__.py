"""Where an export's bytes go: a :class:`Sink` is a byte stream that publishes on ``commit()``.

``open_sink(target)`` picks the implementation: ``-`` is standard output, ``scheme://...`` a
registered kind (one line per kind, see :func:`register_sink`), anything else a local file or, for
an existing folder or a path ending in ``/``, a new file named ``name`` in that folder that never
replaces another. Everything above this package sees only the protocol; the archive writes bytes
into a sink and knows nothing of where they go.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import UsageError
from pipeline.sinks.base import ByteSink, Sink
from pipeline.sinks.folder import FolderSink, is_ours, open_folder
from pipeline.sinks.local import TEMP_PREFIX, LocalFileSink, locked_folder
from pipeline.sinks.stdout import StdoutSink

__all__ = ["TEMP_PREFIX", "ByteSink", "FolderSink", "LocalFileSink", "Sink", "StdoutSink", "exists",
           "local_folder", "locked_folder", "open_folder", "open_sink", "register_sink", "remove"]


#: ``open_sink(target, name=...)`` for a URL scheme
SinkFactory = Callable[[str, "str | None"], Sink]
_SCHEMES: dict[str, SinkFactory] = {}
_EXISTS: dict[str, Callable[[str], bool]] = {}
_REMOVE: dict[str, Callable[[str], None]] = {}


def register_sink(
    scheme: str, factory: SinkFactory, *, exists: Callable[[str], bool] | None = None,
    remove: Callable[[str], None] | None = None,
) -> None:
    """Make ``open_sink("<scheme>://...")`` call ``factory(target, name)``; ``exists`` and ``remove``
    let jobs skip unchanged outputs and apply retention there."""
    _SCHEMES[scheme.lower()] = factory
    if exists is not None:
        _EXISTS[scheme.lower()] = exists
    if remove is not None:
        _REMOVE[scheme.lower()] = remove


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


def exists(location: str) -> bool:
    """Whether an output published at ``location`` is still there."""
    if "://" in location:
        return _hook(location, _EXISTS)(location)
    return location != "-" and (Path(location).is_file() or is_ours(Path(location)))


def remove(location: str) -> None:
    """Delete a published output (retention); gone already is fine."""
    if "://" in location:
        _hook(location, _REMOVE)(location)
    elif location != "-":
        if is_ours(Path(location)):  # a dataset folder (sinks.folder); never another folder
            shutil.rmtree(location)
        else:
            Path(location).unlink(missing_ok=True)


def _hook(location: str, table: dict[str, Callable[[str], Any]]) -> Callable[[str], Any]:
    scheme = location.partition("://")[0].lower()
    if scheme not in table:
        raise UsageError(f"{location}: outputs of kind {scheme}:// cannot be checked or removed")
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
