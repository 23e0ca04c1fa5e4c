"""The exceptions a user can cause. The CLI prints them as one line, without a traceback."""

from __future__ import annotations


class PipelineError(Exception):
    """A user-facing failure: bad input, a missing file, a corrupt image. Exit code 1."""

    exit_code = 1


class UsageError(PipelineError):
    """Bad arguments or configuration, found before any work starts. Exit code 2."""

    exit_code = 2


class OutputError(PipelineError):
    """The export's own files cannot be written (a full disk, a quota, an I/O error): never the
    fault of a page, so it fails the export whatever the bad-image policy."""


class CorpusError(PipelineError):
    """A corpus file that cannot be opened or read (not SQLite, wrong schema version, ...)."""
