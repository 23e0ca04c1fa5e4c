"""The server-rendered pages: Documents, a document with its parts and the export form, an
export's progress, the Files page, login. Plain HTML and a few lines of inline script (range
selection with shift-click, progress by server-sent events): no front-end build."""

from __future__ import annotations

from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from pipeline.errors import UsageError
from pipeline.options import ORIGINAL, supported_image_formats
from pipeline.serve import auth
from pipeline.serve.service import ORPHAN, UNDEFINED, field_names, options_from_fields

FORMAT_LABELS = {"text": "Text", "page": "PAGE", "alto": "ALTO", "exchange": "Exchange (brat)"}

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#222}
header{background:#2c3e50;color:#fff;padding:.6em 1em;display:flex;gap:1.2em;align-items:center}
header a{color:#fff} header form{margin-left:auto} main{padding:1em}
.parts{display:flex;flex-wrap:wrap;gap:.6em;list-style:none;padding:0}
.parts li{border:1px solid #ccc;padding:.3em;width:210px;text-align:center}
.parts img{max-width:200px;max-height:260px;display:block;margin:auto}
fieldset{margin:.5em 0} table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:.3em .5em}
.error{color:#a00} progress{width:20em} code{font-size:.85em}
"""

CSP = "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self'"

SHIFT_SELECT = """
const boxes = Array.from(document.querySelectorAll('input.part'));
let last = null;
boxes.forEach((box, i) => box.addEventListener('click', (event) => {
  if (event.shiftKey && last !== null) {
    const [a, b] = [Math.min(last, i), Math.max(last, i)];
    for (let k = a; k <= b; k++) boxes[k].checked = box.checked;
  }
  last = i;
}));
document.getElementById('select-all').addEventListener('click', () => boxes.forEach(b => b.checked = true));
document.getElementById('select-none').addEventListener('click', () => boxes.forEach(b => b.checked = false));
"""

PROGRESS = """
const box = document.getElementById('export');
const events = new EventSource(box.dataset.events);
function show(data) {
  const e = JSON.parse(data);
  document.getElementById('status').textContent = e.status;
  if (e.progress) {
    const bar = document.getElementById('bar');
    bar.max = Math.max(e.progress.parts_total, 1); bar.value = e.progress.parts_done;
    document.getElementById('count').textContent =
      e.progress.parts_done + ' / ' + e.progress.parts_total + ' parts, ' + e.progress.bytes + ' bytes';
  }
  return e;
}
events.addEventListener('progress', (m) => show(m.data));
events.addEventListener('done', (m) => {
  const e = show(m.data); events.close();
  const out = document.getElementById('result');
  if (e.links.download) {
    out.innerHTML = '';
    const a = document.createElement('a');
    a.id = 'download'; a.href = e.links.download; a.textContent = 'Download ' + e.name;
    out.appendChild(a);
    out.appendChild(document.createTextNode(' (' + e.size + ' bytes, sha256 ' + e.sha256 + ')'));
  } else {
    out.textContent = e.error || e.status; out.className = 'error';
  }
});
"""


def _page(request: Request, title: str, body: str, *, script: str = "") -> HTMLResponse:
    user = getattr(request.state, "user", None)
    nav = ""
    if user is not None:
        nav = (f'<a href="/">Documents</a><a href="/files">Files</a><span>{escape(user.name)}</span>'
               f'<form method="post" action="/logout">{_csrf(request)}<button>Log out</button></form>')
    html = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><header><strong>pipeline</strong>{nav}</header>"
            f"<main><h1>{escape(title)}</h1>{body}</main>"
            + (f"<script>{script}</script>" if script else "") + "</body></html>")
    return HTMLResponse(html, headers={"Content-Security-Policy": CSP, "X-Frame-Options": "DENY"})


def _csrf(request: Request) -> str:
    return f'<input type="hidden" name="csrf" value="{escape(auth.csrf_token(request))}">'


def _login_user(request: Request) -> Any:
    request.state.user = auth.user(request)
    return request.state.user


async def login_form(request: Request) -> Response:
    error = request.query_params.get("error")
    body = (('<p class="error">Unknown token.</p>' if error else "")
            + f'<form method="post" action="/login">{_csrf(request)}'
            '<label>API token <input type="password" name="token" autocomplete="off" required></label> '
            '<button>Log in</button></form><p>An administrator makes your token with '
            '<code>pipeline users add NAME</code>.</p>')
    return _page(request, "Log in", body)


async def login(request: Request) -> Response:
    await auth.check_csrf(request)
    form = await request.form()
    token = form.get("token")
    user = auth.service(request).accounts.authenticate(token) if isinstance(token, str) and token else None
    if user is None:
        return RedirectResponse("/login?error=1", status_code=303)
    auth.log_in(request, user)  # a new session and CSRF token for the logged-in user
    return RedirectResponse("/", status_code=303)


async def logout(request: Request) -> Response:
    await auth.check_csrf(request)
    auth.log_out(request)
    return RedirectResponse("/login", status_code=303)


async def documents_page(request: Request) -> Response:
    _login_user(request)
    rows = "".join(
        f'<tr><td><a href="/documents/{d.id}">{escape(d.name)}</a></td><td>{d.part_count}</td>'
        f'<td>{escape(", ".join(layer.name for layer in d.layers if not layer.archived))}</td></tr>'
        for d in await auth.service(request).documents())
    return _page(request, "Documents", f"<table><tr><th>Document</th><th>Parts</th><th>Layers</th></tr>"
                 f"{rows}</table>")


def _choice(name: str, values: list[tuple[str, str]], checked: str) -> str:
    return " ".join(
        f'<label><input type="radio" name="{name}" value="{escape(v)}"{" checked" if v == checked else ""}> '
        f"{escape(label)}</label>" for v, label in values)


def _select(name: str, values: list[str], chosen: str) -> str:
    options = "".join(f'<option{" selected" if v == chosen else ""}>{escape(v)}</option>' for v in values)
    return f'<select name="{name}">{options}</select>'


def _units() -> str:
    """The ``unit`` option: left unset by default, so each format keeps its own default."""
    labels = [("", "(the format's default)"), ("part", "page"), ("document", "document")]
    options = "".join(f'<option value="{v}"{" selected" if not v else ""}>{escape(label)}</option>'
                      for v, label in labels)
    return f'<select name="unit">{options}</select>'


async def document_page(request: Request) -> Response:
    _login_user(request)
    svc = auth.service(request)
    document = await svc.document(request.path_params["document"])
    parts = await svc.parts(document)
    from pipeline import writers

    formats = list(dict.fromkeys(spec.name for spec in writers.FORMATS.values()))
    layers = [layer.name for layer in document.layers if not layer.archived]
    try:
        default_layer = document.choose_layer(None).name
    except UsageError:
        default_layer = layers[0] if layers else ""
    items = "".join(
        f'<li><label><input type="checkbox" class="part" name="part" value="{p.id}"> '
        f'<img loading="lazy" alt="" src="/api/documents/{document.id}/parts/{p.id}/thumbnail">'
        f"{p.order + 1}. {escape(p.title)}</label></li>" for p in parts)
    regions = [(str(t.id), t.name) for t in document.block_types]
    regions += [(UNDEFINED, "(Undefined region type)"), (ORPHAN, "(Orphan lines)")]
    region_boxes = " ".join(
        f'<label><input type="checkbox" name="region" value="{escape(v)}" checked> {escape(label)}</label>'
        for v, label in regions)
    body = f"""
<form method="post" action="/documents/{document.id}/export" id="export-form">{_csrf(request)}
<fieldset><legend>Parts (none ticked: all; shift-click ticks a range)</legend>
<button type="button" id="select-all">All</button> <button type="button" id="select-none">None</button>
<ul class="parts">{items}</ul></fieldset>
<fieldset><legend>Export</legend>
<p>Transcription: {_select("layer", layers, default_layer)}</p>
<p>Format: {_choice("format", [(f, FORMAT_LABELS.get(f, f)) for f in formats], "alto")}</p>
<p><label><input type="checkbox" name="images" value="true"> Include images</label></p>
<p>Region types: {region_boxes}</p>
<p>One file per {_units()} <small>(TEI: a document by default; exchange: a page)</small></p>
</fieldset>
<fieldset><legend>Images</legend>
Format {_select("image-format", list(supported_image_formats()), ORIGINAL)}
<label>Quality <input type="number" name="image-quality" min="1" max="100"></label>
<label>Longest side at most <input type="number" name="image-max-size" min="1"> px</label>
<label>A bad image {_select("on-error", ["fail", "skip"], "fail")}</label>
</fieldset>
<fieldset><legend>Exchange archives</legend>
Offsets {_select("offset-unit", ["codepoint", "utf16"], "codepoint")}
</fieldset>
<button id="export-button">Export</button>
</form>"""
    return _page(request, document.name, body, script=SHIFT_SELECT)


async def export_form(request: Request) -> Response:
    user = _login_user(request)
    await auth.check_csrf(request)
    svc = auth.service(request)
    document = await svc.document(request.path_params["document"])
    form = await request.form()
    fields: dict[str, list[str]] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            fields.setdefault(key, []).append(value)
    part_ids = tuple(int(v) for v in fields.pop("part", []) if v.isdigit() and len(v) < 19)
    regions = fields.pop("region", [])
    all_regions = {str(t.id) for t in document.block_types} | {UNDEFINED, ORPHAN}
    if not regions:
        raise UsageError("tick at least one region type")
    fields.pop("csrf", None)
    fields = {k: v for k, v in fields.items() if k in field_names() and v != [""]}
    if set(regions) != all_regions:
        fields["regions"] = [",".join(regions)]
    import dataclasses

    options = options_from_fields(fields)
    if part_ids:
        options = dataclasses.replace(options, part_ids=part_ids)
    export_id = await svc.start(user, document.id, options)
    return RedirectResponse(f"/exports/{export_id}", status_code=303)


async def export_page(request: Request) -> Response:
    user = _login_user(request)
    svc = auth.service(request)
    owned = svc.find(user, request.path_params["export"])
    e = svc.describe(owned)
    if e["links"]["download"]:
        result = (f'<a id="download" href="{e["links"]["download"]}">Download {escape(e["name"])}</a> '
                  f"({e['size']} bytes, sha256 {e['sha256']})")
    elif e["status"] in ("failed", "interrupted"):
        result = f'<span class="error">{escape(e["error"] or e["status"])}</span>'
    else:
        result = ""
    body = (f'<div id="export" data-events="{e["links"]["events"]}"><p>Document '
            f'{escape(owned.document_name)}, {escape(owned.format)}: '
            f'<span id="status">{e["status"]}</span></p>'
            f'<p><progress id="bar" value="0" max="1"></progress> <span id="count"></span></p>'
            f'<p id="result">{result}</p></div><p><a href="/files">All my exports</a></p>')
    return _page(request, "Export", body, script=PROGRESS if e["status"] == "running" else "")


async def files_page(request: Request) -> Response:
    user = _login_user(request)
    svc = auth.service(request)
    rows = []
    for owned in svc.owned(user):
        e = svc.describe(owned)
        opts = ", ".join(f"{k}={v}" for k, v in sorted(e["options"].items())
                         if v not in (None, False, {}) and k not in ("format", "image"))
        link = (f'<a href="{e["links"]["download"]}">download</a>' if e["links"]["download"]
                else f'<a href="/exports/{owned.export_id}">{e["status"]}</a>')
        rows.append(
            f'<tr><td>{escape(e["name"] or owned.export_id)}</td><td>{escape(owned.created_at)}</td>'
            f'<td>{escape(owned.document_name)}</td><td>{escape(owned.format)}</td><td>{escape(opts)}</td>'
            f'<td>{e["size"] if e["size"] is not None else ""}</td><td><code>{e["sha256"] or ""}</code></td>'
            f'<td>{e["status"]}</td><td>{link}</td><td><form method="post" '
            f'action="/exports/{owned.export_id}/delete">{_csrf(request)}<button>Delete</button></form></td></tr>')
    table = ("<table><tr><th>Name</th><th>Date</th><th>Document</th><th>Format</th><th>Options</th>"
             "<th>Size</th><th>sha256</th><th>Status</th><th></th><th></th></tr>"
             + "".join(rows) + "</table>")
    return _page(request, "Files", table if rows else "<p>No exports yet.</p>")


async def delete_form(request: Request) -> Response:
    user = _login_user(request)
    await auth.check_csrf(request)
    svc = auth.service(request)
    await svc.delete(svc.find(user, request.path_params["export"]))
    return RedirectResponse("/files", status_code=303)


ROUTES = [
    Route("/", documents_page, methods=["GET"]),
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/documents/{document}", document_page, methods=["GET"]),
    Route("/documents/{document}/export", export_form, methods=["POST"]),
    Route("/exports/{export}", export_page, methods=["GET"]),
    Route("/exports/{export}/delete", delete_form, methods=["POST"]),
    Route("/files", files_page, methods=["GET"]),
]
