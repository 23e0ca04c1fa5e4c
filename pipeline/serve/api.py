"""The JSON API (``/api/...``), the permanent download links and the OpenAPI description.

Option names are the option model's: field names in JSON bodies (as in a job file's
``[[outputs]]``), flag names in query strings (as on the command line: ``image-format``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import anyio
from pydantic import TypeAdapter, ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from pipeline.errors import UsageError
from pipeline.model import Document, Part
from pipeline.options import STRICT, ExportOptions, parse_pages
from pipeline.serve import auth, files
from pipeline.serve.service import NotFound, Stored, field_names, media_type, options_from_fields

#: query fields of an on-the-fly export that are not options
PAGES = "parts"


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """``POST /api/exports``: a document (id or exact name), pages as on the command line
    (``1-10,15``, or ``options.part_ids``), and the export options."""

    __pydantic_config__ = STRICT

    document: int | str
    parts: str | None = None
    options: ExportOptions = field(default_factory=ExportOptions)


@dataclass(frozen=True, slots=True)
class LinkRequest:
    """``POST /api/exports/{id}/link``: how long the link works, in seconds."""

    __pydantic_config__ = STRICT

    expires_in: int = 3600


@cache
def _adapter(cls: type) -> TypeAdapter[Any]:
    return TypeAdapter(cls)


async def _body(request: Request, cls: type) -> Any:
    raw = await request.body()
    try:
        return _adapter(cls).validate_json(raw or b"{}")
    except ValidationError as exc:
        problems = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors(include_url=False)]
        raise UsageError("; ".join(f"{'.'.join(map(str, p['loc'])) or 'body'}: {p['msg']}"
                                  for p in problems)) from None


def document_json(document: Document) -> dict[str, Any]:
    return {
        "id": document.id, "name": document.name, "parts": document.part_count,
        "layers": [layer.name for layer in document.layers if not layer.archived],
        "region_types": [{"id": t.id, "name": t.name} for t in document.block_types],
        "tags": list(document.tags),
    }


def part_json(document: Document, part: Part) -> dict[str, Any]:
    return {"id": part.id, "page": part.order + 1, "title": part.title, "image": part.image_filename,
            "width": part.width, "height": part.height,
            "thumbnail": f"/api/documents/{document.id}/parts/{part.id}/thumbnail"}


# --- documents ---------------------------------------------------------------------------------


async def documents(request: Request) -> Response:
    auth.user(request)
    return JSONResponse([document_json(d) for d in await auth.service(request).documents()])


async def document(request: Request) -> Response:
    auth.user(request)
    svc = auth.service(request)
    doc = await svc.document(request.path_params["document"])
    return JSONResponse(document_json(doc) | {
        "part_list": [part_json(doc, p) for p in await svc.parts(doc)]})


async def thumbnail(request: Request) -> Response:
    auth.user(request)
    part = request.path_params["part"]
    if not part.isdigit() or len(part) > 18:
        raise NotFound(f"no part {part}")
    path = await auth.service(request).thumbnail(request.path_params["document"], int(part))
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


async def export_now(request: Request) -> Response:
    """The document's export, streamed while it is made (nothing stored, no Content-Length: the
    zip's size is known only at its end)."""
    user = auth.user(request)
    fields: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        fields.setdefault(key, []).append(value)
    pages = parse_pages(fields.pop(PAGES)[-1]) if PAGES in fields else ()
    options = options_from_fields(fields)
    name, pipe = await auth.service(request).stream(user, request.path_params["document"], options, pages)
    media = "application/zip" if name.endswith(".zip") else "text/plain; charset=utf-8"
    return StreamingResponse(pipe.chunks(), media_type=media, headers={
        "Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


# --- exports in the background -----------------------------------------------------------------


async def create_export(request: Request) -> Response:
    user = auth.user(request)
    await auth.check_csrf(request)
    body: ExportRequest = await _body(request, ExportRequest)
    pages = parse_pages(body.parts) if body.parts else ()
    svc = auth.service(request)
    export_id = await svc.start(user, body.document, body.options, pages)
    described = svc.describe(svc.find(user, export_id))
    return JSONResponse(described, status_code=202, headers={"Location": described["links"]["self"]})


async def list_exports(request: Request) -> Response:
    user = auth.user(request)
    svc = auth.service(request)
    return JSONResponse([svc.describe(owned) for owned in svc.owned(user)])


async def get_export(request: Request) -> Response:
    user = auth.user(request)
    svc = auth.service(request)
    return JSONResponse(svc.describe(svc.find(user, request.path_params["export"])))


async def delete_export(request: Request) -> Response:
    user = auth.user(request)
    await auth.check_csrf(request)
    svc = auth.service(request)
    await svc.delete(svc.find(user, request.path_params["export"]))
    return Response(status_code=204)


async def export_events(request: Request) -> Response:
    """Server-sent events: ``progress`` while the export runs, then one ``done`` (its description,
    with the download link when complete)."""
    user = auth.user(request)
    svc = auth.service(request)
    owned = svc.find(user, request.path_params["export"])

    async def events() -> Any:
        while True:
            progress = svc.active.get(owned.export_id)
            if progress is None:
                yield {"event": "done", "data": json.dumps(svc.describe(owned))}
                return
            changed = progress.changed
            yield {"event": "progress", "data": json.dumps(svc.describe(owned))}
            with anyio.move_on_after(1):  # bytes move between parts too
                await changed.wait()

    return EventSourceResponse(events(), ping=15)


async def create_link(request: Request) -> Response:
    user = auth.user(request)
    await auth.check_csrf(request)
    body: LinkRequest = await _body(request, LinkRequest)
    if not 1 <= body.expires_in <= auth.MAX_LINK_SECONDS:
        raise UsageError(f"expires_in: 1 to {auth.MAX_LINK_SECONDS} seconds")
    svc = auth.service(request)
    owned = svc.find(user, request.path_params["export"])
    svc.file(owned)  # only a complete export gets a link
    url, expires = auth.signed_link(svc.accounts.secret(), owned.export_id, body.expires_in)
    return JSONResponse({"url": url, "expires": expires})


async def download(request: Request) -> Response:
    """The permanent link: the owner's (token or session), or anyone's with a valid signed link.
    The ETag is the sha256; Range, If-Range and resumed downloads as :func:`_send` says. An S3
    object, once checked against the record: a 307 to a presigned GET (the server's
    ``--s3-downloads redirect``) or streamed through with the same headers (``stream``)."""
    svc = auth.service(request)
    export_id = request.path_params["export"]
    params = request.query_params
    if "signature" in params or "expires" in params:
        auth.check_signature(svc.accounts.secret(), export_id, params.get("expires", ""),
                             params.get("signature", ""))
        owned = svc.accounts.find_any(export_id)
        if owned is None:
            raise NotFound(f"no export {export_id}")
    else:
        owned = svc.find(auth.user(request), export_id)
    stored = svc.file(owned)  # Conflict (409) until complete, Gone (410) once its file is
    record = stored.record
    headers = {"ETag": f'"{record.sha256}"', "Cache-Control": "private, no-cache",
               "Digest": f"sha-256={record.sha256}"}
    if stored.path is None:
        await svc.check_object(stored)  # Gone (410), Changed (409), Unavailable (502): before any link
        if svc.config.s3_downloads == "redirect" and "if-range" not in request.headers:
            # S3 cannot judge an If-Range with our ETag (the sha256, not its own): those are streamed
            return RedirectResponse(svc.presigned(stored), status_code=307,
                                    headers={"Cache-Control": "no-store"})
    return _send(request, stored, headers)


def _send(request: Request, stored: Stored, headers: dict[str, str]) -> Response:
    """The archive with Content-Length and one byte range (206, or 416 with the size) unless
    If-Range names another ETag, several ranges or a date (then all of it); a local file read from
    the page cache where it can be (:mod:`pipeline.serve.files`), an S3 object from a ranged GET
    whose If-Match is its recorded ETag, each read as fast as the client takes it."""
    size = stored.record.size or 0
    start, end, status = 0, size, 200
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if wanted is not None and (if_range is None or if_range == headers["ETag"]):
        found = byte_range(wanted, size)
        if found == "unsatisfiable":
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        if found is not None:
            (start, end), status = found, 206
            headers = headers | {"Content-Range": f"bytes {start}-{end - 1}/{size}"}
    headers = headers | {"Content-Length": str(end - start), "Accept-Ranges": "bytes",
                         "Content-Disposition": f'attachment; filename="{stored.name}"'}
    if request.method == "HEAD" or start == end:
        return Response(status_code=status, headers=headers, media_type=media_type(stored.name))
    if stored.path is not None:
        body = files.read_file(stored.path, start, end)
    else:
        from pipeline.sinks import s3

        body = s3.read_range(stored.location, start, end, etag=stored.record.etag, chunk=files.CHUNK)
    return StreamingResponse(body, status_code=status, headers=headers, media_type=media_type(stored.name))


def byte_range(header: str, size: int) -> tuple[int, int] | str | None:
    """One ``bytes=`` range of ``Range`` as (start, end exclusive); ``"unsatisfiable"`` when it
    starts beyond the end; None for what is ignored (RFC 9110: another unit, bad syntax, several
    ranges: the whole archive is sent)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = (p.strip() for p in spec.partition("-"))
    if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == "") \
            or first == last == "" or max(len(first), len(last)) > 18:
        return None
    if first == "":  # the last N bytes
        count = int(last)
        return "unsatisfiable" if count == 0 or size == 0 else (max(size - count, 0), size)
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(int(last) + 1, size) if last else size


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def openapi(request: Request) -> Response:
    auth.user(request)
    return JSONResponse(openapi_document())


ROUTES = [
    Route("/health", health, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/api/documents", documents, methods=["GET"]),
    Route("/api/documents/{document}", document, methods=["GET"]),
    Route("/api/documents/{document}/parts/{part}/thumbnail", thumbnail, methods=["GET"]),
    Route("/api/documents/{document}/export", export_now, methods=["GET"]),
    Route("/api/exports", list_exports, methods=["GET"]),
    Route("/api/exports", create_export, methods=["POST"]),
    Route("/api/exports/{export}", get_export, methods=["GET"]),
    Route("/api/exports/{export}", delete_export, methods=["DELETE"]),
    Route("/api/exports/{export}/events", export_events, methods=["GET"]),
    Route("/api/exports/{export}/link", create_link, methods=["POST"]),
    Route("/exports/{export}/download", download, methods=["GET"]),
]


# --- OpenAPI -------------------------------------------------------------------------------------


def _query_parameters() -> list[dict[str, Any]]:
    """The on-the-fly export's query: one parameter per CLI flag of the option model."""
    from pipeline.options import choices

    params: list[dict[str, Any]] = [{
        "name": PAGES, "in": "query", "required": False, "description": "pages, 1-based: 1-10,15",
        "schema": {"type": "string"}}]
    for name, flag in field_names().items():
        kind = str(flag.kind)
        schema: dict[str, Any]
        if flag.kind is bool or kind == "bool":
            schema = {"type": "boolean"}
        elif (values := choices(flag.kind)) is not None:
            schema = {"type": "string", "enum": list(values)}
        elif "dict[" in kind:
            schema = {"type": "array", "items": {"type": "string", "pattern": "^[^=]+=.*$"}}
        elif "int" in kind:
            schema = {"type": "integer"}
        else:
            schema = {"type": "string"}
        params.append({"name": name, "in": "query", "required": False, "description": flag.help,
                       "schema": schema, **({"explode": True} if schema["type"] == "array" else {})})
    return params


@cache
def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1: the request bodies' schemas come from the option model itself (pydantic)."""
    ref = "#/components/schemas/{model}"
    schemas: dict[str, Any] = {}
    for cls in (ExportRequest, LinkRequest):
        schema = _adapter(cls).json_schema(ref_template=ref)
        schemas.update(schema.pop("$defs", {}))
        schemas[cls.__name__] = schema
    error = {"description": "an error", "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Error"}}}}
    schemas["Error"] = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
    schemas["Export"] = {"type": "object", "required": ["id", "status", "links"], "properties": {
        "id": {"type": "string"}, "status": {"enum": ["running", "complete", "failed", "interrupted"]},
        "name": {"type": ["string", "null"]}, "format": {"type": "string"},
        "size": {"type": ["integer", "null"]}, "sha256": {"type": ["string", "null"]},
        "links": {"type": "object"}}}
    export_id = {"name": "export", "in": "path", "required": True, "schema": {"type": "string"}}
    doc_id = {"name": "document", "in": "path", "required": True,
              "description": "a document id or exact name", "schema": {"type": "string"}}
    denied = {"401": error, "403": error}

    def op(summary: str, responses: dict[str, Any], **more: Any) -> dict[str, Any]:
        return {"summary": summary, "responses": responses | denied, **more}

    json_export = {"description": "the export", "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Export"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "pipeline serve", "version": "1",
                 "description": "Exports of transcribed documents. Authenticate with "
                 "'Authorization: Bearer <token>' (pipeline users add NAME) or a session."},
        "components": {"schemas": schemas, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": {
            "/health": {"get": {"summary": "liveness, no authentication", "security": [],
                                "responses": {"200": {"description": "up"}}}},
            "/api/documents": {"get": op("the documents", {"200": {"description": "documents"}})},
            "/api/documents/{document}": {"get": op(
                "a document and its parts", {"200": {"description": "document"}, "404": error},
                parameters=[doc_id])},
            "/api/documents/{document}/parts/{part}/thumbnail": {"get": op(
                "a part's thumbnail (JPEG)", {"200": {"description": "image/jpeg"}, "404": error},
                parameters=[doc_id, {"name": "part", "in": "path", "required": True,
                                     "schema": {"type": "string"}}])},
            "/api/documents/{document}/export": {"get": op(
                "export now: the archive streams while it is made (options as CLI flags)",
                {"200": {"description": "the zip or text"}, "400": error, "404": error, "429": error},
                parameters=[doc_id, *_query_parameters()])},
            "/api/exports": {
                "get": op("the user's exports, newest first", {"200": {"description": "exports"}}),
                "post": op("start an export in the background", {
                    "202": json_export, "400": error, "404": error, "429": error},
                    requestBody={"required": True, "content": {"application/json": {"schema": {
                        "$ref": "#/components/schemas/ExportRequest"}}}})},
            "/api/exports/{export}": {
                "get": op("one export", {"200": json_export, "404": error}, parameters=[export_id]),
                "delete": op("stop and delete an export and its file (or S3 object)", {
                    "204": {"description": "deleted"}, "404": error, "502": error},
                    parameters=[export_id])},
            "/api/exports/{export}/events": {"get": op(
                "progress as server-sent events", {"200": {"description": "text/event-stream"},
                                                    "404": error}, parameters=[export_id])},
            "/api/exports/{export}/link": {"post": op(
                "an expiring signed download link", {"200": {"description": "the link"}, "400": error,
                                                      "404": error, "409": error},
                parameters=[export_id], requestBody={"required": False, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/LinkRequest"}}}})},
            "/exports/{export}/download": {"get": op(
                "the permanent link (Range, If-Range, ETag = sha256); an archive kept on S3 is "
                "streamed through or redirected to a presigned GET, as the server is configured", {
                    "200": {"description": "the file"}, "206": {"description": "a range"},
                    "307": {"description": "an archive on S3: GET the Location (a presigned URL "
                            "valid a few minutes) for the bytes", "headers": {"Location": {
                                "schema": {"type": "string"}}}},
                    "404": error, "409": {"description": "not complete yet, or its object on S3 "
                                          "was replaced since the export", "content": error["content"]},
                    "410": {"description": "its file or object is gone", "content": error["content"]},
                    "416": {"description": "bad range"},
                    "502": {"description": "S3 did not answer", "content": error["content"]}},
                parameters=[export_id,
                            {"name": "expires", "in": "query", "required": False,
                             "schema": {"type": "string"}},
                            {"name": "signature", "in": "query", "required": False,
                             "schema": {"type": "string"}}])},
        },
    }
