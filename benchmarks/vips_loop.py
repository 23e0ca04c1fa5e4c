"""The plain-tool reference for transcoding, as a process of its own: a sequential pyvips loop.

``python -m benchmarks.vips_loop OUT_DIR QUALITY FAIL_ON IMAGE...`` transcodes each image to a
JPEG of the same name in ``OUT_DIR`` with the settings of ``bench_images.sequential_loop``
(sequential access, the export's ``fail_on``, ICC profile kept, no operation cache), then fsyncs
every output file, as the export syncs its archive. It imports pyvips and nothing of ``pipeline``, so its
start-up is what a user's own script would pay.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pyvips


def main(argv: list[str]) -> int:
    out, quality, fail_on, images = Path(argv[0]), int(argv[1]), argv[2], argv[3:]
    pyvips.cache_set_max(0)  # as pipeline.images.configure_vips
    pyvips.cache_set_max_mem(0)
    pyvips.cache_set_max_files(0)
    written = []
    for image in images:
        target = out / Path(image).name
        loaded = pyvips.Image.new_from_file(image, access="sequential", fail_on=fail_on)
        loaded.write_to_file(str(target), Q=quality, keep=pyvips.ForeignKeep.ICC)
        written.append(target)
    for target in written:
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
