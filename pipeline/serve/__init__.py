"""``pipeline serve``: the export page, the Files page and permanent links over HTTP.

A Starlette application on anyio, served by uvicorn: server-rendered pages for people, a JSON API
(``/openapi.json``) for scripts, both thin over the same functions the CLI calls.
"""

from pipeline.serve.app import create_app
from pipeline.serve.service import ServeConfig

__all__ = ["ServeConfig", "create_app"]
