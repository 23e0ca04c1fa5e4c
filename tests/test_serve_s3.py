"""``pipeline serve`` keeping its archives on S3 (moto's server over real HTTP on 127.0.0.1):
the permanent link streams the object through (Content-Length, ETag = sha256, Range, If-Range,
416) or redirects to a short-lived presigned GET, only after the owner's checks; an object
deleted or replaced behind the server's back is a clear 410/409, never a 500 nor other bytes;
deleting an export from the Files page deletes its object; a client that hangs up on a
streamed download stops the server's read from S3 (a real uvicorn server)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest

from pipeline.demo import build_demo
from pipeline.registry import Registry
from pipeline.serve import ServeConfig, files
from tests.s3server import S3Env
from tests.serve_helpers import app_client, csrf_of, free_port, make_users, uvicorn_server, wait_done

PREFIX = "served/"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def served(tmp_path: Path, demo_corpus: Path, s3_env: S3Env) -> tuple[ServeConfig, dict[str, str]]:
    registry = tmp_path / "registry.sqlite"
    tokens = make_users(registry, "alice", "bob")
    config = ServeConfig(corpus=str(demo_corpus), registry=registry, data=tmp_path / "data",
                         output=s3_env.url + PREFIX, s3_downloads="stream")
    return config, tokens


async def _export(client: httpx.AsyncClient, **options: Any) -> dict[str, Any]:
    response = await client.post("/api/exports", json={"document": 1, "parts": "1-3", "options": options})
    assert response.status_code == 202, response.text
    done = await wait_done(client, response.json()["id"])
    assert done["status"] == "complete", done
    return done


def _key(done: dict[str, Any]) -> str:
    return PREFIX + done["name"]


@pytest.mark.anyio
async def test_stream_through_keeps_the_permanent_link_contract(
        served: tuple[ServeConfig, dict[str, str]], s3_env: S3Env) -> None:
    config, tokens = served
    async with app_client(config, tokens["alice"]) as client:
        done = await _export(client, format="alto", images=True)
        assert s3_env.objects() == [_key(done)] and s3_env.uploads() == []
        assert list(config.exports.iterdir()) == []  # nothing kept on the server's disk
        stored = s3_env.read(_key(done))
        record = Registry(config.registry).get(done["id"])
        assert record.path == f"{s3_env.url}{_key(done)}" and record.etag
        url = done["links"]["download"]
        full = await client.get(url)
        assert full.status_code == 200, full.text
        assert full.content == stored and hashlib.sha256(full.content).hexdigest() == done["sha256"]
        assert int(full.headers["content-length"]) == len(stored) == done["size"]
        assert full.headers["etag"] == f'"{done["sha256"]}"'
        assert full.headers["accept-ranges"] == "bytes"
        assert full.headers["content-type"] == "application/zip"
        assert f'filename="{done["name"]}"' in full.headers["content-disposition"]
        # resume: half, then the rest while the archive is the same (If-Range with the ETag)
        half = len(stored) // 2
        head = await client.get(url, headers={"Range": f"bytes=0-{half - 1}"})
        assert head.status_code == 206 and head.content == stored[:half]
        assert head.headers["content-range"] == f"bytes 0-{half - 1}/{len(stored)}"
        assert int(head.headers["content-length"]) == half
        tail = await client.get(url, headers={"Range": f"bytes={half}-", "If-Range": full.headers["etag"]})
        assert tail.status_code == 206 and head.content + tail.content == stored
        stale = await client.get(url, headers={"Range": f"bytes={half}-", "If-Range": '"something-else"'})
        assert stale.status_code == 200 and stale.content == stored
        last = await client.get(url, headers={"Range": "bytes=-100"})
        assert last.status_code == 206 and last.content == stored[-100:]
        middle = await client.get(url, headers={"Range": "bytes=1000-1999"})
        assert middle.status_code == 206 and middle.content == stored[1000:2000]
        for bad in (f"bytes={len(stored)}-", f"bytes={len(stored) + 10}-{len(stored) + 20}", "bytes=-0"):
            refused = await client.get(url, headers={"Range": bad})
            assert refused.status_code == 416, bad
            assert refused.headers["content-range"] == f"bytes */{len(stored)}"
        for ignored in ("bytes=0-10,20-30", "items=0-10", "bytes=9-1", "bytes=x-"):  # RFC 9110: the whole
            whole = await client.get(url, headers={"Range": ignored})
            assert whole.status_code == 200 and whole.content == stored, ignored
        headed = await client.head(url)
        assert headed.status_code == 200 and headed.content == b""
        assert int(headed.headers["content-length"]) == len(stored)
        # an expiring signed link works without credentials, streamed the same way
        link = (await client.post(f"/api/exports/{done['id']}/link", json={"expires_in": 60})).json()
        anonymous = await client.get(link["url"], headers={"Authorization": ""})
        assert anonymous.status_code == 200 and anonymous.content == stored


@pytest.mark.anyio
async def test_redirect_is_a_short_presigned_get_after_the_owners_checks(
        served: tuple[ServeConfig, dict[str, str]], s3_env: S3Env) -> None:
    config, tokens = served
    config = dataclasses.replace(config, s3_downloads="redirect")
    async with app_client(config, tokens["alice"]) as client:
        done = await _export(client, format="page")
        stored = s3_env.read(_key(done))
        url = done["links"]["download"]
        before = datetime.now(UTC).replace(microsecond=0)
        moved = await client.get(url)
        assert moved.status_code == 307, moved.text
        assert moved.headers["cache-control"] == "no-store"
        location = moved.headers["location"]
        parts = urlsplit(location)
        assert f"{parts.scheme}://{parts.netloc}" == s3_env.server.endpoint  # moto on 127.0.0.1
        assert parts.netloc.startswith("127.0.0.1:")
        assert parts.path == f"/{s3_env.bucket}/{_key(done)}"
        query = parse_qs(parts.query)
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Signature"]
        assert query["X-Amz-Expires"] == ["300"]  # five minutes: a redirect is followed at once
        signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        assert abs((signed_at - before).total_seconds()) < 60
        assert tokens["alice"] not in location and "testing-secret" not in location
        async with httpx.AsyncClient() as outside:  # no credentials of ours: the URL is enough
            got = await outside.get(location)
            assert got.status_code == 200 and got.content == stored
            assert hashlib.sha256(got.content).hexdigest() == done["sha256"]
            assert f'filename="{done["name"]}"' in got.headers["content-disposition"]
            assert got.headers["content-type"] == "application/zip"
            ranged = await outside.get(location, headers={"Range": "bytes=10-19"})
            assert ranged.status_code == 206 and ranged.content == stored[10:20]
        # a resume that names our ETag is streamed here: S3 cannot judge an If-Range with the sha256
        half = len(stored) // 2
        tail = await client.get(url, headers={"Range": f"bytes={half}-", "If-Range": f'"{done["sha256"]}"'})
        assert tail.status_code == 206 and tail.content == stored[half:]
        # nobody else gets a URL: another user's id, a forged id, no credentials
        bob = {"Authorization": f"Bearer {tokens['bob']}"}
        for path, headers, status in (
                (url, bob, 404), ("/exports/20261201000000aaaaaaaaaaaa/download", {}, 404),
                (f"/exports/{done['id'][:-1]}f/download", {}, 404),
                (f"/exports/{done['id']}%2F..%2F/download", {}, 404),
                (url, {"Authorization": ""}, 401),
                (f"{url}?expires=9999999999&signature=00", {"Authorization": ""}, 403)):
            refused = await client.get(path, headers=headers)
            assert refused.status_code == status, (path, refused.text)
            assert "location" not in refused.headers and "X-Amz" not in refused.text


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["stream", "redirect"])
async def test_an_object_deleted_or_replaced_behind_the_server(
        served: tuple[ServeConfig, dict[str, str]], s3_env: S3Env, mode: str) -> None:
    config, tokens = served
    config = dataclasses.replace(config, s3_downloads=mode)
    async with app_client(config, tokens["alice"]) as client:
        done = await _export(client, format="alto")
        url = done["links"]["download"]
        stored = s3_env.read(_key(done))
        # the same size, other bytes: the ETag tells
        s3_env.client.put_object(Bucket=s3_env.bucket, Key=_key(done), Body=bytes(reversed(stored)))
        resume = {"Range": "bytes=100-", "If-Range": f'"{done["sha256"]}"'}
        for headers in ({}, {"Range": "bytes=0-99"}, resume):
            changed = await client.get(url, headers=headers)
            assert changed.status_code == 409, changed.text
            assert "location" not in changed.headers and changed.content[:2] != b"PK"
            assert "replaced" in changed.json()["error"] and "\n" not in changed.json()["error"]
        s3_env.client.delete_object(Bucket=s3_env.bucket, Key=_key(done))
        gone = await client.get(url)
        assert gone.status_code == 410, gone.text
        assert "no longer in the bucket" in gone.json()["error"]
        assert (await client.get(f"/api/exports/{done['id']}")).json()["status"] == "complete"
        assert (await client.delete(f"/api/exports/{done['id']}")).status_code == 204  # gone is fine


@pytest.mark.anyio
async def test_an_unreachable_store_is_a_502(served: tuple[ServeConfig, dict[str, str]],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    config, tokens = served
    async with app_client(config, tokens["alice"]) as client:
        done = await _export(client, format="text")
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens
        with anyio.fail_after(120):
            response = await client.get(done["links"]["download"])
        assert response.status_code == 502, response.text
        assert "did not answer" in response.json()["error"]


@pytest.mark.anyio
async def test_deleting_from_the_files_page_deletes_the_object(
        served: tuple[ServeConfig, dict[str, str]], s3_env: S3Env) -> None:
    config, tokens = served
    async with app_client(config) as client:
        csrf = csrf_of((await client.get("/login")).text)
        await client.post("/login", data={"token": tokens["alice"], "csrf": csrf})
        csrf = csrf_of((await client.get("/")).text)
        kept, deleted = [await _export_by_form(client, csrf) for _ in range(2)]
        assert sorted(s3_env.objects()) == sorted([_key(kept), _key(deleted)])
        files = await client.get("/files")
        assert kept["name"] in files.text and deleted["name"] in files.text
        posted = await client.post(f"/exports/{deleted['id']}/delete", data={"csrf": csrf})
        assert posted.status_code == 303
        assert s3_env.objects() == [_key(kept)]
        files = await client.get("/files")
        assert deleted["name"] not in files.text and kept["name"] in files.text
        assert (await client.get(deleted["links"]["download"])).status_code == 404


async def _export_by_form(client: httpx.AsyncClient, csrf: str) -> dict[str, Any]:
    form = {"csrf": csrf, "format": "alto", "layer": "manual", "part": ["1"],
            "region": ["1", "2", "3", "4", "5", "undefined", "orphan"]}
    posted = await client.post("/documents/1/export", data=form)
    assert posted.status_code == 303, posted.text
    done = await wait_done(client, posted.headers["location"].rsplit("/", 1)[1])
    assert done["status"] == "complete", done
    return done


# --- a real server: a client that hangs up stops the read ---------------------------------------


#: the client's socket keeps at most this much unread (no autotuning up to tens of MB): a paused
#: client holds the server back rather than taking the whole archive into its kernel buffer
SMALL_RECEIVE_BUFFER = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)]


class Relay:
    """A loopback TCP relay in front of the S3 server that counts the bytes it passed from the
    server to its clients: what the pipeline server has read from S3. It forwards only as fast as
    its client takes the bytes (blocking sends of 64 KiB), so it holds back nothing itself."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream, self.received = upstream, 0
        #: cleared: requests to S3 are held (forwarded once it is set again), as a slow S3 would
        self.open = threading.Event()
        self.open.set()
        self.held = threading.Event()  #: set once a request was held
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads: list[threading.Thread] = []
        self._stop = False

    def __enter__(self) -> Relay:
        self._start(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._listener.close()

    def _start(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._start(self._pipe, client, server, False)
            self._start(self._pipe, server, client, True)

    def _pipe(self, source: socket.socket, sink: socket.socket, counted: bool) -> None:
        try:
            while data := source.recv(64 << 10):
                if not counted and not self.open.is_set():  # a request to S3, while S3 is "slow"
                    self.held.set()
                    self.open.wait()
                sink.sendall(data)
                if counted:
                    with self._lock:
                        self.received += len(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def settled(self) -> int:
        """The count once it has not moved for half a second."""
        previous = -1
        while self.received != previous:
            previous = self.received
            time.sleep(0.5)
        return previous


def test_a_client_hanging_up_stops_the_read_from_s3(
        tmp_path: Path, s3_env: S3Env, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tmp_path / "big.sqlite"
    build_demo(corpus, documents=1, parts=100, lines=4)  # 1240x1754 JPEG pages: ~27 MB of images
    registry = tmp_path / "r.sqlite"
    token = make_users(registry, "alice")["alice"]
    monkeypatch.setenv("PIPELINE_S3_PART_SIZE", str(8 << 20))
    host, port = urlsplit(s3_env.server.endpoint).hostname, urlsplit(s3_env.server.endpoint).port
    with Relay((host or "", port or 0)) as relay:
        monkeypatch.setenv("AWS_ENDPOINT_URL", relay.url)  # the server's S3 is behind the relay
        with uvicorn_server(corpus, registry, tmp_path / "data", "--exports", s3_env.url + PREFIX,
                            "--s3-downloads", "stream") as (url, _), \
                httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120,
                             transport=httpx.HTTPTransport(socket_options=SMALL_RECEIVE_BUFFER)) as client:
            started = client.post("/api/exports", json={"document": 1, "options": {"images": True}})
            assert started.status_code == 202, started.text
            deadline = time.monotonic() + 300
            while (done := client.get(f"/api/exports/{started.json()['id']}").json())["status"] == "running":
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert done["status"] == "complete", done
            size = done["size"]
            assert size > 25_000_000
            download = done["links"]["download"]

            before = relay.settled()
            with client.stream("GET", download) as response:
                assert response.status_code == 200 and int(response.headers["content-length"]) == size
                chunks = response.iter_raw()  # kept: a dropped iterator closes the response
                assert next(chunks)
                # a client that does not read: the server reads S3 no further than the buffers
                paused = relay.settled() - before
                assert 0 < paused < size - (4 << 20), (paused, size)
            # the client hangs up: the server drops its GET and reads nothing more of it
            after = relay.settled() - before
            assert after - paused <= files.CHUNK, (paused, after, size)  # at most the chunk being read

            # and goes on serving: a whole download is the archive, all of it read from S3
            before = relay.settled()
            digest = hashlib.sha256()
            with client.stream("GET", download) as response:
                for chunk in response.iter_raw():
                    digest.update(chunk)
            assert digest.hexdigest() == done["sha256"]
            assert relay.settled() - before >= size


def test_a_slow_s3_never_stalls_the_server(
        tmp_path: Path, s3_env: S3Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening an export's object asks S3 (the bucket, a free name): while S3 does not answer,
    the server goes on answering everyone else, and the export completes once S3 does."""
    corpus = tmp_path / "c.sqlite"
    build_demo(corpus, documents=1, parts=2, lines=4)
    registry = tmp_path / "r.sqlite"
    token = make_users(registry, "alice")["alice"]
    host, port = urlsplit(s3_env.server.endpoint).hostname, urlsplit(s3_env.server.endpoint).port
    with Relay((host or "", port or 0)) as relay:
        monkeypatch.setenv("AWS_ENDPOINT_URL", relay.url)
        server = uvicorn_server(corpus, registry, tmp_path / "data", "--exports", s3_env.url + PREFIX)
        with server as (url, _), httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                              timeout=60) as client:
            relay.open.clear()  # S3 stops answering
            try:
                started = client.post("/api/exports", json={"document": 1, "options": {"format": "text"}})
                assert started.status_code == 202, started.text
                assert relay.held.wait(30), "the export never asked S3"
                # S3 holds the export's request: the server still answers, at once
                assert client.get("/health", timeout=10).json() == {"status": "ok"}
                listed = client.get("/api/exports", timeout=10).json()
                assert [e["status"] for e in listed] == ["running"], listed
            finally:
                relay.open.set()
            deadline = time.monotonic() + 60
            while (done := client.get(f"/api/exports/{started.json()['id']}").json())["status"] == "running":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert done["status"] == "complete", done
