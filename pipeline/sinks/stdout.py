"""Standard output: written as it comes; ``commit`` flushes, ``abort`` cannot take bytes back."""

from __future__ import annotations

import sys

from pipeline.errors import OutputError
from pipeline.sinks.base import ByteSink


class StdoutSink(ByteSink):
    def __init__(self) -> None:
        super().__init__("-")
        self._fh = sys.stdout.buffer

    def failed(self, exc: OSError) -> OutputError:
        return OutputError(f"cannot write standard output: {exc.strerror or exc}")

    def _write(self, data: bytes | memoryview) -> None:
        self._fh.write(data)

    def _publish(self) -> str:
        self._fh.flush()
        return "-"

    def _discard(self) -> None:
        """What was written is gone already; a reader sees the stream end early."""
