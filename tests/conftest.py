"""Shared fixtures. ``demo_corpus`` is built once per session; treat it as read-only."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.demo import build_demo


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo corpus (2 documents x 4 parts x 12 lines, 600x800 JPEG pages); returns its path."""
    path = tmp_path_factory.mktemp("demo") / "demo.sqlite"
    build_demo(path, documents=2, parts=4, lines=12, image_size=(600, 800), image_format="jpeg", seed=0)
    return path
