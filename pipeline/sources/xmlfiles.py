"""Folders and zips of ALTO/PAGE (with or without METS) as a source of one document."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from pipeline.sources.folder import XmlSource


def is_xml_bundle(path: Path) -> bool:
    """A folder, or a zip (what is inside is checked when it is opened)."""
    return path.is_dir() or (path.is_file() and zipfile.is_zipfile(path))


def open_bundle(path: str | Path, *, layer: str | None = None, images: bool = False, **_: Any) -> XmlSource:
    return XmlSource(Path(path), layer=layer or "manual", images=images)
