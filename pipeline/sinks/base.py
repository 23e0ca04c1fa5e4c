"""What every sink shares: the running size and sha256, and errors mapped to OutputError once."""

from __future__ import annotations

import hashlib
from typing import Protocol, runtime_checkable

from pipeline.errors import OutputError


@runtime_checkable
class Sink(Protocol):
    """A byte stream with a running size and sha256. Blocking: call it from a worker thread.

    ``location`` says where the bytes will be published (exactly where once committed); nothing
    appears there before ``commit()``, and ``abort()`` leaves nothing behind.
    """

    @property
    def size(self) -> int: ...

    @property
    def sha256(self) -> str: ...

    @property
    def location(self) -> str: ...

    @property
    def etag(self) -> str | None:
        """The destination's own identity of the published bytes (an S3 ETag), if it keeps one."""

    def write(self, data: bytes | memoryview) -> None: ...

    def commit(self) -> str: ...

    def abort(self) -> None: ...


class ByteSink:
    """Base of the sinks: counts and hashes what is written, then hands it to :meth:`_write`.

    A new kind of destination implements ``_write`` (bytes out), ``_publish`` (make them appear,
    return the location) and ``_discard`` (leave nothing); an ``OSError`` from any of them becomes
    one :class:`OutputError` naming the location.
    """

    #: set by destinations that keep a checksum of their own (S3's ETag)
    etag: str | None = None

    def __init__(self, location: str) -> None:
        self.size = 0
        self._sha = hashlib.sha256()
        self._location = location
        self._done = False

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    @property
    def location(self) -> str:
        return self._location

    def write(self, data: bytes | memoryview) -> None:
        try:
            self._write(data)
        except OSError as exc:
            raise self.failed(exc) from None
        self._sha.update(data)
        self.size += len(data)

    def commit(self) -> str:
        """Publish what was written; returns where it is."""
        try:
            self._location = self._publish()
        except OSError as exc:
            raise self.failed(exc) from None
        self._done = True
        return self._location

    def abort(self) -> None:
        """Leave nothing at the location (a committed sink stays published)."""
        if not self._done:
            self._done = True
            self._discard()

    def failed(self, exc: OSError) -> OutputError:
        """An OSError as the user sees it: one line naming the output and the system's reason."""
        return OutputError(f"cannot write {self._location}: {exc.strerror or exc}")

    def _write(self, data: bytes | memoryview) -> None:
        raise NotImplementedError

    def _publish(self) -> str:
        raise NotImplementedError

    def _discard(self) -> None:
        raise NotImplementedError
