"""The plain-tool reference for line datasets, as a process of its own: a straightforward Pillow loop.

``python -m benchmarks.pillow_lines PLAN.json OUT_DIR [COMPRESS_LEVEL]`` opens each page with
Pillow, crops each of its lines and saves the crop as PNG (Pillow's default ``compress_level`` 6,
or the one given) with its text as ``<name>.gt.txt``: what people write today. The plan (page
image paths and line boxes, the same boxes the export cuts) is prepared beforehand, untimed. It
imports Pillow and nothing of ``pipeline``, so its start-up is what a user's own script would pay.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image


def main(argv: list[str]) -> int:
    plan, out = json.loads(Path(argv[0]).read_text()), Path(argv[1])
    level = int(argv[2]) if len(argv) > 2 else 6
    out.mkdir(parents=True, exist_ok=True)
    for page in plan:
        with Image.open(page["image"]) as image:
            image.load()
            for x0, y0, x1, y1, name, text in page["lines"]:
                image.crop((x0, y0, x1, y1)).save(out / f"{name}.png", compress_level=level)
                (out / f"{name}.gt.txt").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
