"""The one exception tree. Each boundary (a source, a sink, the image stage) maps what its
libraries raise into it once, so the CLI prints any of them as one line without a traceback,
and anything outside the tree is a bug (shown with its traceback, never taken for bad input).

    PipelineError (exit 1)
      UsageError (exit 2)  bad arguments or configuration, found before work
      SourceError          a source cannot be read (CorpusError: the SQLite corpus)
      OutputError          writing an output failed (disk full, ...): never "a bad image"
      ImageError           one part's image is unusable (``--on-error`` decides)
      DocumentError        one document of a bulk archive failed (wraps a PipelineError only)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.model import Document, Part


class PipelineError(Exception):
    """A user-facing failure: bad input, a missing file, a corrupt image. Exit code 1."""

    exit_code = 1


class UsageError(PipelineError):
    """Bad arguments or configuration, found before any work starts. Exit code 2."""

    exit_code = 2


class OptionError(UsageError, ValueError):
    """An option value an option model refuses. A ValueError as well, so pydantic reports it
    under the key that holds the value (``outputs[0].image.quality: ...``)."""


class SourceError(PipelineError):
    """A source that cannot be read: missing, not what it claims to be, or holding bad values."""


class CorpusError(SourceError):
    """A corpus file that cannot be opened or read (not SQLite, wrong schema version, ...)."""


class OutputError(PipelineError):
    """The export's own files cannot be written (a full disk, a quota, an I/O error, a remote
    error): never the fault of a page, so it fails the export whatever the bad-image policy."""


class ImageError(PipelineError):
    """One part's image cannot be exported: missing, unreadable, truncated or not encodable."""

    def __init__(self, part: Part, reason: str) -> None:
        self.part_id, self.page, self.file, self.reason = part.id, part.order + 1, part.image_filename, reason
        self.path = part.image_path or part.image
        super().__init__(f"part {self.page} ({self.file}, {self.path}): {reason}")

    def report(self) -> dict[str, object]:
        """The ``export-report.json`` entry for this image."""
        return {"part_id": self.part_id, "page": self.page, "file": self.file, "error": self.reason}


class DocumentError(PipelineError):
    """One document of a bulk archive failed on bad data; a job rebuilds the archive without it.

    Only a :class:`PipelineError` is wrapped: a bug propagates as itself, so it fails the archive
    once instead of dropping every document in turn.
    """

    def __init__(self, document: Document, cause: PipelineError) -> None:
        self.document, self.cause = document, cause
        super().__init__(f"document {document.id} {document.name!r}: {cause}")


def leaves(error: BaseException) -> Iterator[BaseException]:
    """The errors inside (possibly nested) exception groups, in order; ``error`` itself otherwise."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaves(inner)
    else:
        yield error
