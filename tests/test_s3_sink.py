"""The S3 sink against moto's server over real HTTP: multipart uploads completed only by commit,
aborted otherwise; directory mode never overwrites; ranged reads for zipfile; stale uploads."""

from __future__ import annotations

import hashlib
import os
import zipfile
from datetime import timedelta

import pytest

from pipeline.errors import OutputError
from pipeline.sinks import s3
from tests.s3server import TEST_PART_SIZE, S3Env


def _blocks(total: int, seed: int = 1) -> list[bytes]:
    data = hashlib.shake_256(str(seed).encode()).digest(total)
    return [data[i:i + 40_000] for i in range(0, total, 40_000)]


def test_multipart_upload_appears_only_on_commit(s3_env: S3Env) -> None:
    sink = s3.open_s3_sink(s3_env.url + "exports/a.zip", None)
    blocks = _blocks(5 * TEST_PART_SIZE + 123)
    for block in blocks:
        sink.write(block)
    assert s3_env.uploads() == ["exports/a.zip"]  # parts are on the server, as an upload only
    assert s3_env.objects() == []
    location = sink.commit()
    assert location == f"s3://{s3_env.bucket}/exports/a.zip"
    body = s3_env.read("exports/a.zip")
    assert body == b"".join(blocks)
    assert sink.size == len(body) and sink.sha256 == hashlib.sha256(body).hexdigest()
    assert sink.etag and sink.etag.strip('"').endswith("-6")  # six parts
    assert s3_env.uploads() == []


def test_a_buffer_reused_after_write_is_uploaded_as_it_was(s3_env: S3Env) -> None:
    """The archive hands the sink views of read buffers it refills once ``write`` returns; the
    object must hold what each write said, not what the buffer held later."""
    sink = s3.open_s3_sink(s3_env.url + "reused.zip", None)
    buffer = bytearray(3 * TEST_PART_SIZE)
    expected = bytearray()
    for i, block in enumerate(_blocks(12 * TEST_PART_SIZE, seed=7)):
        size = len(block) if i % 3 else min(len(buffer), len(block) * 2)
        data = (block * 2)[:size]
        buffer[:size] = data
        sink.write(memoryview(buffer)[:size])
        expected += data
        buffer[:size] = bytes(size)  # the caller's next read overwrites it
    sink.commit()
    body = s3_env.read("reused.zip")
    assert len(body) == len(expected) and body == expected
    assert sink.sha256 == hashlib.sha256(body).hexdigest()


def test_abort_leaves_no_object_and_no_upload(s3_env: S3Env) -> None:
    sink = s3.open_s3_sink(s3_env.url + "x.zip", None)
    for block in _blocks(3 * TEST_PART_SIZE):
        sink.write(block)
    assert s3_env.uploads() == ["x.zip"]
    sink.abort()
    assert s3_env.objects() == [] and s3_env.uploads() == []


def test_file_mode_replaces_directory_mode_never_does(s3_env: S3Env) -> None:
    for payload in (b"first", b"second" * 50_000):
        sink = s3.open_s3_sink(s3_env.url + "f.zip", None)
        sink.write(payload)
        sink.commit()
    assert s3_env.read("f.zip") == b"second" * 50_000
    locations = []
    for payload in (b"one", b"two" * 100_000, b"three"):
        sink = s3.open_s3_sink(s3_env.url + "dir/", "e.zip")
        sink.write(payload)
        locations.append(sink.commit())
    assert [loc.rsplit("/", 1)[1] for loc in locations] == ["e.zip", "e_2.zip", "e_3.zip"]
    assert s3_env.read("dir/e.zip") == b"one" and s3_env.read("dir/e_3.zip") == b"three"


def test_directory_mode_conditional_create_moves_on(s3_env: S3Env) -> None:
    """Two writers that picked the same free name: the second's conditional PUT fails and it
    takes the next name; the first's object is intact."""
    first = s3.open_s3_sink(s3_env.url + "d/", "same.zip")
    second = s3.open_s3_sink(s3_env.url + "d/", "same.zip")
    first.write(b"A" * 1000)
    second.write(b"B" * 1000)
    assert first.commit().endswith("/d/same.zip")
    assert second.commit().endswith("/d/same_2.zip")
    assert s3_env.read("d/same.zip") == b"A" * 1000 and s3_env.read("d/same_2.zip") == b"B" * 1000


def test_range_reader_serves_zipfile(s3_env: S3Env, tmp_path) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for n in range(30):
            zf.writestr(f"f{n}.txt", os.urandom(50_000) if n % 3 else b"x" * n)
    s3_env.client.upload_file(str(path), s3_env.bucket, "a.zip")
    with s3.RangeReader(f"s3://{s3_env.bucket}/a.zip") as fh, zipfile.ZipFile(fh) as zf:
        assert zf.testzip() is None
        assert zf.read("f3.txt") == b"xxx"
    with zipfile.ZipFile(path) as zf:
        assert len(zf.namelist()) == 30


def test_stale_uploads_are_aborted_younger_ones_kept(s3_env: S3Env) -> None:
    """Age is the server's ``Initiated`` time (moto reports 2010-11-10 for every upload)."""
    sink = s3.open_s3_sink(s3_env.url + "p/live.zip", None)
    for block in _blocks(2 * TEST_PART_SIZE):
        sink.write(block)
    other = s3.open_s3_sink(s3_env.url + "q/other.zip", None)
    for block in _blocks(2 * TEST_PART_SIZE):
        other.write(block)
    assert s3.abort_stale_uploads(s3_env.url + "p/", timedelta(days=365 * 100)) == []
    gone = s3.abort_stale_uploads(s3_env.url + "p/", timedelta(hours=1))
    assert [u.location for u in gone] == [f"s3://{s3_env.bucket}/p/live.zip"]
    assert s3_env.uploads() == ["q/other.zip"]  # outside the prefix


def test_missing_bucket_and_wrong_url_are_one_line(s3_env: S3Env) -> None:
    with pytest.raises(OutputError, match=r"^s3://no-such-bucket-here/: no such bucket$"):
        s3.open_s3_sink("s3://no-such-bucket-here/a.zip", None)
    with pytest.raises(Exception, match="not an S3 bucket name"):
        s3.open_s3_sink("s3://A_B/x", None)


def test_wrong_credentials_are_one_line(s3_env: S3Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """With moto's authentication on, an access key it does not know is refused before any work."""
    import urllib.request

    def auth(count: str) -> None:
        request = urllib.request.Request(f"{s3_env.server.endpoint}/moto-api/reset-auth", data=count.encode(),
                                         method="POST", headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(request).close()

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    auth("0")
    try:
        with pytest.raises(OutputError) as caught:
            s3.open_s3_sink(s3_env.url + "a.zip", None)
    finally:
        auth("inf")
    message = str(caught.value)
    assert message == f"s3://{s3_env.bucket}/: access refused: check the credentials and the bucket's policy"
    assert "not-the-secret" not in message
