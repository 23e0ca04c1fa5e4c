"""Requests generated from ``pipeline serve``'s OpenAPI description (schemathesis, a bounded
number of examples per operation) against a real server: none may get a 5xx, whatever the body,
path or query; with and without credentials."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from pipeline.serve.api import openapi_document
from tests.serve_helpers import make_users, uvicorn_server

schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, demo_corpus: Path) -> Iterator[tuple[str, str]]:
    folder = tmp_path_factory.mktemp("fuzz")
    registry = folder / "r.sqlite"
    token = make_users(registry, "fuzz")["fuzz"]
    with uvicorn_server(demo_corpus, registry, folder / "data", "--max-exports", "2") as (url, _):
        yield url, token


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_error(case: schemathesis.Case, live: tuple[str, str]) -> None:
    url, token = live
    for headers in ({"Authorization": f"Bearer {token}"}, {}):
        response = case.call(base_url=url, headers=headers, timeout=60)
        assert response.status_code < 500, (case.method, case.formatted_path, case.query, case.body,
                                             response.status_code, response.text[:500])
        if not headers and case.path != "/health":  # nothing but a refusal (405: no such method)
            assert response.status_code in (401, 403, 404, 405), (case.path, response.status_code)
