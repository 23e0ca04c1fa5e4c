"""``pipeline serve`` through its HTTP interface (httpx against the ASGI app, lifespan running):
every endpoint, authentication and CSRF failures, another user's exports, Range and resume,
signed links, the webhook, and errors that must be statuses, never 500."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import zipfile
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from pipeline.cli import main
from pipeline.demo import build_demo
from pipeline.registry import Registry
from pipeline.serve import ServeConfig, files
from pipeline.serve.auth import signed_link
from tests.serve_helpers import Webhook, app_client, csrf_of, make_users, wait_done

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def served(tmp_path: Path, demo_corpus: Path) -> tuple[ServeConfig, dict[str, str]]:
    registry = tmp_path / "registry.sqlite"
    tokens = make_users(registry, "alice", "bob")
    config = ServeConfig(corpus=str(demo_corpus), registry=registry, data=tmp_path / "data")
    return config, tokens


async def _export(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/exports", json={"document": 1} | body)
    assert response.status_code == 202, response.text
    return await wait_done(client, response.json()["id"])


ENDPOINTS = [
    ("GET", "/api/documents"), ("GET", "/api/documents/1"), ("GET", "/api/documents/1/parts/1/thumbnail"),
    ("GET", "/api/documents/1/export?format=text"), ("GET", "/api/exports"), ("POST", "/api/exports"),
    ("GET", "/api/exports/20261201000000aaaaaaaaaaaa"), ("DELETE", "/api/exports/20261201000000aaaaaaaaaaaa"),
    ("GET", "/api/exports/20261201000000aaaaaaaaaaaa/events"),
    ("POST", "/api/exports/20261201000000aaaaaaaaaaaa/link"),
    ("GET", "/exports/20261201000000aaaaaaaaaaaa/download"), ("GET", "/openapi.json"),
]


async def test_every_route_but_health_needs_credentials(served: tuple[ServeConfig, dict[str, str]]) -> None:
    config, tokens = served
    async with app_client(config) as client:
        assert (await client.get("/health")).json() == {"status": "ok"}
        for method, path in ENDPOINTS:
            for headers in ({}, {"Authorization": "Bearer pipe_not-a-token"}, {"Authorization": "Basic eDp5"},
                            {"Authorization": "Bearer "}, {"Authorization": tokens["alice"]}):
                response = await client.request(method, path, headers=headers, json={"document": 1})
                assert response.status_code == 401, (method, path, headers, response.text)
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert "error" in response.json()
        # pages send a browser to the login page instead
        for path in ("/", "/files", "/documents/1", "/exports/20261201000000aaaaaaaaaaaa"):
            response = await client.get(path)
            assert response.status_code == 303 and response.headers["location"] == "/login"
        # a form posted without a session (and so without its CSRF token) is refused
        assert (await client.post("/documents/1/export", data={"format": "alto"})).status_code in (401, 403)


async def test_tokens_are_stored_hashed(served: tuple[ServeConfig, dict[str, str]]) -> None:
    config, tokens = served
    raw = config.registry.read_bytes()
    assert tokens["alice"].encode() not in raw
    assert hashlib.sha256(tokens["alice"].encode()).hexdigest().encode() in raw


async def test_documents_parts_and_cached_thumbnails(served: tuple[ServeConfig, dict[str, str]]) -> None:
    config, tokens = served
    async with app_client(config, tokens["alice"]) as client:
        documents = (await client.get("/api/documents")).json()
        assert [d["id"] for d in documents] == [1, 2]
        assert {"Main", "Title"} <= {t["name"] for t in documents[0]["region_types"]}
        detail = (await client.get("/api/documents/1")).json()
        assert [p["page"] for p in detail["part_list"]] == list(range(1, detail["parts"] + 1))
        by_name = (await client.get("/api/documents/" + documents[0]["name"])).json()
        assert by_name["id"] == 1
        thumb_url = detail["part_list"][0]["thumbnail"]
        first = await client.get(thumb_url)
        assert first.status_code == 200 and first.content[:3] == b"\xff\xd8\xff"
        cached = list((config.thumbnails / "1").iterdir())
        assert len(cached) == 1
        stamp = cached[0].stat().st_mtime_ns
        again = await client.get(thumb_url)
        assert again.content == first.content and cached[0].stat().st_mtime_ns == stamp
        for missing in ("/api/documents/99", "/api/documents/nope", "/api/documents/1/parts/99999/thumbnail",
                        "/api/documents/1/parts/../thumbnail", "/api/documents/2/parts/1/thumbnail"):
            assert (await client.get(missing)).status_code == 404, missing


async def test_background_export_download_range_and_resume(
        served: tuple[ServeConfig, dict[str, str]], tmp_path: Path) -> None:
    config, tokens = served
    async with app_client(config, tokens["alice"]) as client:
        done = await _export(client, parts="1-3", options={"format": "alto", "images": True,
                                                           "regions": ["Main", "undefined", "orphan"]})
        assert done["status"] == "complete" and done["parts"] == 3, done
        url = done["links"]["download"]
        full = await client.get(url)
        assert full.status_code == 200
        assert int(full.headers["content-length"]) == len(full.content) == done["size"]
        assert hashlib.sha256(full.content).hexdigest() == done["sha256"]
        assert full.headers["etag"] == f'"{done["sha256"]}"'
        assert full.headers["accept-ranges"] == "bytes"
        assert done["name"] in full.headers["content-disposition"]
        # resume: half, then the rest if the file is still the same (If-Range with the ETag)
        half = done["size"] // 2
        head = await client.get(url, headers={"Range": f"bytes=0-{half - 1}"})
        assert head.status_code == 206
        assert head.headers["content-range"] == f"bytes 0-{half - 1}/{done['size']}"
        tail = await client.get(url, headers={"Range": f"bytes={half}-", "If-Range": full.headers["etag"]})
        assert tail.status_code == 206 and head.content + tail.content == full.content
        stale = await client.get(url, headers={"Range": f"bytes={half}-", "If-Range": '"something-else"'})
        assert stale.status_code == 200 and stale.content == full.content
        bad = await client.get(url, headers={"Range": f"bytes={done['size'] + 10}-"})
        assert bad.status_code == 416
        saved = tmp_path / done["name"]
        saved.write_bytes(full.content)
        assert main(["verify", str(saved)]) == 0
        with zipfile.ZipFile(io.BytesIO(full.content)) as archive:
            assert sum(n.endswith(".xml") and n != "METS.xml" for n in archive.namelist()) == 3
        listed = (await client.get("/api/exports")).json()
        assert [e["id"] for e in listed] == [done["id"]]
        # the registry of the CLI knows it too (pipeline exports list)
        assert Registry(config.registry).get(done["id"]).status == "complete"


async def test_exports_are_their_owners_only(served: tuple[ServeConfig, dict[str, str]]) -> None:
    config, tokens = served
    async with app_client(config, tokens["alice"]) as alice:
        done = await _export(alice, options={"format": "text"})
        eid = done["id"]
        bob = {"Authorization": f"Bearer {tokens['bob']}"}
        for method, path in (("GET", f"/api/exports/{eid}"), ("GET", f"/api/exports/{eid}/events"),
                             ("GET", f"/exports/{eid}/download"), ("DELETE", f"/api/exports/{eid}"),
                             ("POST", f"/api/exports/{eid}/link"), ("GET", f"/api/exports/{eid[:20]}"),
                             ("GET", "/exports/..%2F..%2Fetc%2Fpasswd/download"),
                             ("GET", "/exports/%2Fetc%2Fpasswd/download")):
            response = await alice.request(method, path, headers=bob)
            assert response.status_code == 404, (method, path, response.text)
        assert (await alice.get("/api/exports", headers=bob)).json() == []
        assert (await alice.get(f"/exports/{eid}/download")).status_code == 200  # still there


async def test_signed_links_expire_and_cannot_be_forged(served: tuple[ServeConfig, dict[str, str]]) -> None:
    config, tokens = served
    async with app_client(config, tokens["alice"]) as client:
        done = await _export(client, options={"format": "page"})
        link = (await client.post(f"/api/exports/{done['id']}/link", json={"expires_in": 600})).json()
        anonymous = {"Authorization": ""}
        client.headers.pop("Authorization")
        ok = await client.get(link["url"], headers=anonymous)
        assert ok.status_code == 200 and hashlib.sha256(ok.content).hexdigest() == done["sha256"]
        forged = link["url"][:-4] + ("0000" if not link["url"].endswith("0000") else "1111")
        assert (await client.get(forged)).status_code == 403
        later = link["url"].replace(f"expires={link['expires']}", f"expires={link['expires'] + 3600}")
        assert (await client.get(later)).status_code == 403
        old, _ = signed_link(client.app.state.service.accounts.secret(), done["id"], 60, now=1_000_000)
        assert (await client.get(old)).status_code == 403
        assert (await client.get(f"/exports/{done['id']}/download")).status_code == 401
        client.headers["Authorization"] = f"Bearer {tokens['alice']}"
        for bad in ({"expires_in": 0}, {"expires_in": 10**9}, {"expires_in": "10"}, {"other": 1}):
            assert (await client.post(f"/api/exports/{done['id']}/link", json=bad)).status_code == 400, bad


async def test_delete_removes_file_and_records(served: tuple[ServeConfig, dict[str, str]]) -> None:
    config, tokens = served
    async with app_client(config, tokens["alice"]) as client:
        done = await _export(client, options={"format": "alto"})
        files = list(config.exports.iterdir())
        assert [f.name for f in files] == [done["name"]]
        assert (await client.delete(f"/api/exports/{done['id']}")).status_code == 204
        assert list(config.exports.iterdir()) == []
        assert (await client.get(f"/api/exports/{done['id']}")).status_code == 404
        assert (await client.get(f"/exports/{done['id']}/download")).status_code == 404
        assert Registry(config.registry).find(id=done["id"]) == []


async def test_bad_requests_are_4xx_with_one_line(served: tuple[ServeConfig, dict[str, str]]) -> None:
    config, tokens = served
    async with app_client(config, tokens["alice"]) as client:
        cases: list[tuple[str, str, Any, int]] = [
            ("POST", "/api/exports", {"document": 99}, 404),
            ("POST", "/api/exports", {"document": 1, "options": {"format": "docx"}}, 400),
            ("POST", "/api/exports", {"document": 1, "options": {"images": "yes"}}, 400),
            ("POST", "/api/exports", {"document": 1, "options": {"image": {"format": "bmp"}}}, 400),
            ("POST", "/api/exports", {"document": 1, "options": {"image": {"quality": 0}}}, 400),
            ("POST", "/api/exports", {"document": 1, "options": {"unknown": 1}}, 400),
            ("POST", "/api/exports", {"document": 1, "parts": "3-1"}, 400),
            ("POST", "/api/exports", {"document": 1, "parts": "1-99999999999"}, 400),
            ("POST", "/api/exports", {"document": 1, "parts": "99"}, 400),
            ("POST", "/api/exports", {}, 400),
            ("POST", "/api/exports", [1, 2], 400),
            ("GET", "/api/documents/1/export?format=nope", None, 400),
            ("GET", "/api/documents/1/export?image-quality=high", None, 400),
            ("GET", "/api/documents/1/export?image_format=jpeg", None, 400),
            ("GET", "/api/documents/1/export?images=maybe", None, 400),
            ("GET", "/api/documents/1/export?layer=nope", None, 400),
            ("GET", "/api/documents/1/export?regions=Nowhere", None, 400),
            ("GET", "/api/documents/99/export", None, 404),
        ]
        for method, path, body, status in cases:
            response = await client.request(method, path, json=body)
            assert response.status_code == status, (method, path, body, response.text)
            assert "\n" not in response.json()["error"]
        broken = await client.post("/api/exports", content=b"{not json",
                                   headers={"content-type": "application/json"})
        assert broken.status_code == 400
        for body in ({"document": 1, "options": {"layer": "gone"}},
                     {"document": 1, "options": {"regions": "Nowhere"}}):
            assert (await client.post("/api/exports", json=body)).status_code == 400


async def test_a_failed_export_says_why(tmp_path: Path) -> None:
    """An export that fails once started (an image gone from the disk) is listed as failed, with
    the reason, and leaves no file."""
    corpus = tmp_path / "c.sqlite"
    build_demo(corpus, documents=1, parts=3, lines=3, image_size=(300, 400))
    part_images = sorted((tmp_path / "c.media").rglob("*.jpg"))
    part_images[-1].unlink()
    registry = tmp_path / "r.sqlite"
    tokens = make_users(registry, "alice")
    config = ServeConfig(corpus=str(corpus), registry=registry, data=tmp_path / "data")
    async with app_client(config, tokens["alice"]) as client:
        response = await client.post("/api/exports", json={"document": 1, "options": {"images": True}})
        failed = await wait_done(client, response.json()["id"])
        assert failed["status"] == "failed" and failed["links"]["download"] is None
        assert part_images[-1].name in failed["error"]
        assert (await client.get(f"/exports/{failed['id']}/download")).status_code == 409
        assert (await client.post(f"/api/exports/{failed['id']}/link", json={})).status_code == 409
        assert list(config.exports.iterdir()) == []


async def test_on_the_fly_export_is_the_cli_archive(
        served: tuple[ServeConfig, dict[str, str]], tmp_path: Path) -> None:
    """Same options, same bytes: the query names the CLI's flags and the archive is the one
    ``pipeline export`` writes (entry times come from the data), minus its name."""
    config, tokens = served
    async with app_client(config, tokens["alice"]) as client:
        response = await client.get("/api/documents/1/export", params={
            "format": "page", "images": "true", "image-format": "png", "image-max-size": "300",
            "parts": "2-3", "regions": "Main,undefined"})
        assert response.status_code == 200, response.text
        assert "content-length" not in response.headers
        assert response.headers["content-type"] == "application/zip"
    assert list(config.exports.iterdir()) == []  # nothing kept
    out = tmp_path / "cli.zip"
    argv = ["export", "--corpus", str(config.corpus), "--document", "1", "--format", "page", "--images",
            "--image-format", "png", "--image-max-size", "300", "--parts", "2-3",
            "--regions", "Main,undefined",
            "-o", str(out), "--registry", str(tmp_path / "cli-registry.sqlite")]
    assert await anyio.to_thread.run_sync(main, argv) == 0
    assert hashlib.sha256(response.content).hexdigest() == hashlib.sha256(out.read_bytes()).hexdigest()


async def test_session_login_and_csrf(served: tuple[ServeConfig, dict[str, str]]) -> None:
    config, tokens = served
    async with app_client(config) as client:
        page = await client.get("/login")
        csrf = csrf_of(page.text)
        assert (await client.post("/login", data={"token": tokens["alice"]})).status_code == 403
        wrong = await client.post("/login", data={"token": "pipe_wrong", "csrf": csrf})
        assert wrong.status_code == 303 and "error" in wrong.headers["location"]
        ok = await client.post("/login", data={"token": tokens["alice"], "csrf": csrf})
        assert ok.status_code == 303 and ok.headers["location"] == "/"
        cookie = ok.headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        home = await client.get("/")
        assert home.status_code == 200 and "alice" in home.text
        csrf = csrf_of(home.text)  # a new token after logging in
        # the session works for the API, but what changes something needs the CSRF token
        assert (await client.get("/api/exports")).status_code == 200
        assert (await client.post("/api/exports", json={"document": 1})).status_code == 403
        assert (await client.post("/api/exports", json={"document": 1},
                                  headers={"X-CSRF-Token": "x" + csrf})).status_code == 403
        made = await client.post("/api/exports", json={"document": 1}, headers={"X-CSRF-Token": csrf})
        assert made.status_code == 202
        await wait_done(client, made.json()["id"])
        # the export form: all region types ticked means no filter
        doc = await client.get("/documents/1")
        assert "(Undefined region type)" in doc.text and "(Orphan lines)" in doc.text
        assert "&lt;draft&gt;" in doc.text and "<draft>" not in doc.text  # names are escaped
        form = {"csrf": csrf, "format": "alto", "layer": "manual", "region": ["1", "2", "3", "4", "5",
                "undefined", "orphan"], "part": ["1", "2"], "image-format": "original", "image-quality": "",
                "on-error": "fail", "unit": "part", "offset-unit": "codepoint"}
        assert (await client.post("/documents/1/export", data=form | {"csrf": "no"})).status_code == 403
        posted = await client.post("/documents/1/export", data=form)
        assert posted.status_code == 303
        export_id = posted.headers["location"].rsplit("/", 1)[1]
        done = await wait_done(client, export_id)
        assert done["status"] == "complete" and done["options"]["regions"] is None
        assert done["options"]["part_ids"] == [1, 2]
        files = await client.get("/files")
        assert done["name"] in files.text and done["sha256"] in files.text
        assert (await client.post(f"/exports/{export_id}/delete", data={"csrf": csrf})).status_code == 303
        assert done["name"] not in (await client.get("/files")).text
        assert (await client.post("/logout", data={"csrf": csrf})).status_code == 303
        assert (await client.get("/api/exports")).status_code == 401


async def test_the_export_form_leaves_the_unit_to_the_format(
        served: tuple[ServeConfig, dict[str, str]]) -> None:
    """TEI from the web is one file per document unless the form asks for pages (the form used
    to send unit=part always); the choice is the option model's ``unit``."""
    config, tokens = served
    async with app_client(config) as client:
        csrf = csrf_of((await client.get("/login")).text)
        await client.post("/login", data={"token": tokens["alice"], "csrf": csrf})
        page = await client.get("/documents/1")
        csrf = csrf_of(page.text)
        assert '<option value="" selected>' in page.text and 'value="document"' in page.text
        form = {"csrf": csrf, "format": "tei", "layer": "manual", "unit": "",
                "region": ["1", "2", "3", "4", "5", "undefined", "orphan"]}
        entries = {}
        for unit in ("", "part", "document"):
            posted = await client.post("/documents/1/export", data=form | {"unit": unit})
            assert posted.status_code == 303, posted.text
            done = await wait_done(client, posted.headers["location"].rsplit("/", 1)[1])
            assert done["status"] == "complete" and done["options"]["unit"] == (unit or None), done
            archive = await client.get(done["links"]["download"])
            with zipfile.ZipFile(io.BytesIO(archive.content)) as zf:
                entries[unit] = [n for n in zf.namelist() if n.endswith(".xml") and n != "METS.xml"]
        assert len(entries[""]) == len(entries["document"]) == 1
        assert len(entries["part"]) == 4


async def test_logging_out_ends_the_session_for_every_copy_of_its_cookie(
        served: tuple[ServeConfig, dict[str, str]]) -> None:
    """The cookie names a session kept server-side: after logging out, a copy of the still
    validly signed cookie (another tab, a stolen one) is refused; revoking a user's tokens ends
    their sessions too."""
    config, tokens = served
    async with app_client(config) as client, app_client(config) as other:
        for name in ("alice", "bob"):
            csrf = csrf_of((await client.get("/login")).text)
            logged_in = await client.post("/login", data={"token": tokens[name], "csrf": csrf})
            assert logged_in.status_code == 303
            if name == "alice":
                alice_cookie = client.cookies["pipeline_session"]
                csrf = csrf_of((await client.get("/")).text)
                other.cookies.set("pipeline_session", alice_cookie)
                assert (await other.get("/api/exports")).status_code == 200  # a copy works...
                assert (await client.post("/logout", data={"csrf": csrf})).status_code == 303
                assert (await other.get("/api/exports")).status_code == 401  # ...until logout
                refused = await other.get("/files")
                assert refused.status_code == 303 and refused.headers["location"] == "/login"
                assert (await client.get("/api/exports")).status_code == 401
        assert "bob" in (await client.get("/")).text
        bob_cookie = client.cookies["pipeline_session"]
        assert bob_cookie != alice_cookie
        assert await anyio.to_thread.run_sync(main, ["users", "revoke", "bob", "--registry",
                                                     str(config.registry)]) == 0
        assert (await client.get("/api/exports")).status_code == 401


async def test_webhook_is_told_when_an_export_finishes(served: tuple[ServeConfig, dict[str, str]]) -> None:
    config, tokens = served
    with Webhook() as hook:
        config = dataclasses.replace(config, webhook=hook.url)
        async with app_client(config, tokens["alice"]) as client:
            done = await _export(client, options={"format": "alto"})
            with anyio.fail_after(10):
                while not hook.received:
                    await anyio.sleep(0.05)
        assert hook.received and hook.received[0]["event"] == "export.finished"
        sent = hook.received[0]["export"]
        assert sent["id"] == done["id"] and sent["status"] == "complete" and sent["sha256"] == done["sha256"]


async def test_users_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = tmp_path / "r.sqlite"
    assert main(["users", "add", "carol", "--registry", str(registry)]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("pipe_") and len(token) > 40
    assert main(["users", "add", "carol", "--registry", str(registry)]) == 2
    assert "exists already" in capsys.readouterr().err
    assert main(["users", "token", "carol", "--registry", str(registry)]) == 0
    second = capsys.readouterr().out.strip()
    assert second != token
    assert main(["users", "list", "--registry", str(registry)]) == 0
    assert "carol\t2 token(s)" in capsys.readouterr().out
    assert main(["users", "revoke", "carol", "--registry", str(registry)]) == 0
    from pipeline.serve.accounts import Accounts

    assert Accounts(registry).authenticate(token) is None


async def test_an_export_the_server_did_not_finish_is_interrupted(
        served: tuple[ServeConfig, dict[str, str]]) -> None:
    """A server stopped (or killed) during an export: the registry still says running, no server
    runs it, so it is listed as interrupted, without a download link."""
    config, tokens = served
    async with app_client(config, tokens["alice"]) as client:
        service = client.app.state.service
        user = service.accounts.user("alice")
        export_id = "20261201000000abcdefabcdef"
        service.accounts.own(export_id, user, document_id=1, document_name="Demo 1", format="alto",
                             options="{}")
        Registry(config.registry).start(export_id, document_id=1, document_name="Demo 1", format="alto",
                                        layer="manual", options={}, path=str(config.exports / "x.zip"))
        listed = (await client.get(f"/api/exports/{export_id}")).json()
        assert listed["status"] == "interrupted" and listed["links"]["download"] is None
        assert (await client.get(f"/exports/{export_id}/download")).status_code == 409
        page = await client.get("/files")
        assert "interrupted" in page.text
        assert (await client.delete(f"/api/exports/{export_id}")).status_code == 204


async def test_serves_each_store(demo_store: Any, tmp_path: Path) -> None:
    """The same pages and exports from the SQLite corpus and from eScriptorium's PostgreSQL (read
    through ``open_source`` by URL, images under its MEDIA_ROOT); the registry is ours, apart."""
    registry = tmp_path / "r.sqlite"
    tokens = make_users(registry, "alice")
    config = ServeConfig(corpus=demo_store.corpus, registry=registry, data=tmp_path / "data",
                         media_root=str(demo_store.media_root) if demo_store.media_root else None)
    async with app_client(config, tokens["alice"]) as client:
        documents = (await client.get("/api/documents")).json()
        assert len(documents) == 2 and documents[0]["parts"] == 4
        detail = (await client.get(f"/api/documents/{documents[0]['id']}")).json()
        thumb = await client.get(detail["part_list"][1]["thumbnail"])
        assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"
        done = await _export(client, document=documents[0]["id"], parts="2-3",
                             options={"format": "page", "images": True})
        assert done["status"] == "complete" and done["parts"] == 2, done
        archive = await client.get(done["links"]["download"])
        saved = tmp_path / done["name"]
        saved.write_bytes(archive.content)
    assert main(["verify", str(saved)]) == 0


def _evict(path: Path) -> None:
    """Drop the file's pages from the page cache (written back first), so reads go to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="needs posix_fadvise to empty the page cache")
async def test_downloads_read_from_the_page_cache_or_the_disk_alike(
        served: tuple[ServeConfig, dict[str, str]]) -> None:
    """A permanent link reads its file from the page cache in the event loop, and from the disk
    in a thread when the cache does not hold it: the same bytes either way, whole or in ranges
    that cross the chunks' boundaries."""
    config, tokens = served
    async with app_client(config, tokens["alice"]) as client:
        done = await _export(client, options={"format": "alto", "images": True})
        path = Path(Registry(config.registry).get(done["id"]).path or "")
        size, url = done["size"], done["links"]["download"]
        cold_pages = 0
        for state in ("evicted", "cached"):
            if state == "evicted":
                _evict(path)
                fd = os.open(path, os.O_RDONLY)
                try:  # evicted indeed (the disk path is taken), unless RWF_NOWAIT does not exist
                    cold_pages = sum(not files.cached(fd, offset, 4096)
                                     for offset in range(0, size, 1 << 16))
                finally:
                    os.close(fd)
            full = await client.get(url)
            assert full.status_code == 200, state
            assert hashlib.sha256(full.content).hexdigest() == done["sha256"], state
            start, end = size // 3, size - 7
            part = await client.get(url, headers={"Range": f"bytes={start}-{end - 1}"})
            assert part.status_code == 206 and part.content == full.content[start:end], state
            # an odd chunk size: no read aligned on a page
            chunks = [bytes(c) async for c in files.read_file(path, 1, size, chunk=65_521)]
            assert b"".join(chunks) == full.content[1:] and max(map(len, chunks)) == 65_521, state
        assert cold_pages > 0 or not hasattr(os, "RWF_NOWAIT") or _in_memory(path)


def _in_memory(path: Path) -> bool:
    """Whether ``path`` is on a file system kept in memory (tmpfs), whose pages cannot be evicted."""
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    best = max((m for m in mounts if path.resolve().is_relative_to(m[1])), key=lambda m: len(m[1]))
    return best[2] in ("tmpfs", "ramfs")


async def test_a_local_archive_replaced_or_cut_short_is_never_sent(
        served: tuple[ServeConfig, dict[str, str]]) -> None:
    """The archive's size is checked against the registry before any byte is sent: another file
    at its path is a 409 naming both sizes; a file that ends before the bytes it was asked for
    raises (the response is then cut short, fewer bytes than its Content-Length), never pads."""
    config, tokens = served
    async with app_client(config, tokens["alice"]) as client:
        done = await _export(client, options={"format": "text"})
        path = Path(Registry(config.registry).get(done["id"]).path or "")
        url = done["links"]["download"]
        original = path.read_bytes()
        path.write_bytes(original + b"appended")
        replaced = await client.get(url)
        assert replaced.status_code == 409 and "replaced" in replaced.json()["error"], replaced.text
        assert f"{len(original) + 8:,} bytes" in replaced.json()["error"]
        path.write_bytes(original)
        assert (await client.get(url)).content == original
    with pytest.raises(OSError, match="ends at"):
        async for _ in files.read_file(path, 0, len(original) + 1):
            pass
