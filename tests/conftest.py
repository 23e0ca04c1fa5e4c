"""Shared fixtures. ``demo_corpus`` is built once per session; treat it as read-only.

PostgreSQL fixtures (a throwaway cluster, the demo in an eScriptorium database, ``demo_store`` for
tests run against both stores) come from ``tests/pgcluster.py``; the S3 server (``s3_server``,
``s3_env``) from ``tests/s3server.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.demo import build_demo
from tests.pgcluster import DEMO_OPTIONS, demo_store, pg_big, pg_cluster, pg_demo, pg_faulty  # noqa: F401
from tests.s3server import s3_env, s3_server  # noqa: F401


@pytest.fixture(scope="session", autouse=True)
def _private_data_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Default registries (``$XDG_DATA_HOME/pipeline``) go to a temporary folder, never the home."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("data-home")))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo corpus (2 documents x 4 parts x 12 lines, 600x800 JPEG pages); returns its path."""
    path = tmp_path_factory.mktemp("demo") / "demo.sqlite"
    build_demo(path, **DEMO_OPTIONS)
    return path
