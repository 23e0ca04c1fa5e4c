"""The ASGI application: routes, sessions, the mapping of errors to statuses, and the lifespan
that owns the background exports' task group (cancelled, and so recorded as interrupted, when
the server stops)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html import escape

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from pipeline.errors import PipelineError, UsageError
from pipeline.serve import api, pages
from pipeline.serve.auth import SESSION_AGE, Forbidden, Unauthorized
from pipeline.serve.service import Conflict, Gone, NotFound, ServeConfig, Service, TooMany, Unavailable

SESSION_COOKIE = "pipeline_session"


def create_app(config: ServeConfig) -> Starlette:
    service = Service(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as group:
            service.attach(group)
            yield
            group.cancel_scope.cancel()

    app = Starlette(
        routes=[*api.ROUTES, *pages.ROUTES],
        middleware=[Middleware(SessionMiddleware, secret_key=service.accounts.secret(),
                               session_cookie=SESSION_COOKIE, max_age=int(SESSION_AGE.total_seconds()),
                               same_site="strict", https_only=config.secure_cookies)],
        exception_handlers={Unauthorized: _unauthorized, Forbidden: _forbidden,
                            PipelineError: _pipeline_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.service = service
    return app


def _wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith("/api/") or path.endswith("/download") or path == "/openapi.json" \
        or "application/json" in request.headers.get("accept", "")


def _error(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    return HTMLResponse(f"<!doctype html><title>{status}</title><h1>{status}</h1><p>{escape(message)}</p>"
                        '<p><a href="/">Documents</a></p>', status_code=status, headers=headers)


async def _unauthorized(request: Request, exc: Exception) -> Response:
    if not _wants_json(request) and request.method == "GET":
        return RedirectResponse("/login", status_code=303)
    return _error(request, 401, str(exc), {"WWW-Authenticate": 'Bearer realm="pipeline"'})


async def _forbidden(request: Request, exc: Exception) -> Response:
    return _error(request, 403, str(exc))


async def _pipeline_error(request: Request, exc: Exception) -> Response:
    status = (404 if isinstance(exc, NotFound) else 429 if isinstance(exc, TooMany)
              else 409 if isinstance(exc, Conflict) else 410 if isinstance(exc, Gone)
              else 502 if isinstance(exc, Unavailable) else 400 if isinstance(exc, UsageError) else 500)
    return _error(request, status, " ".join(str(exc).split()))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(request, exc.status_code, exc.detail, dict(exc.headers or {}))
