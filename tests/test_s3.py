"""Archives straight to S3 through the CLI, against moto's server over real HTTP on 127.0.0.1:
exports and jobs to a bucket, nothing visible after a failure or a kill, stale uploads cleaned,
concurrent writers, retention, verify in place, one clear line for refused access."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.demo import build_demo
from pipeline.registry import Registry
from tests.s3server import TEST_PART_SIZE, S3Env


def run(*args: str | Path) -> int:
    return main([str(a) for a in args])


def cli(*args: str | Path) -> subprocess.Popen[str]:
    """``pipeline ...`` in a process of its own (the test's S3 variables are in its environment)."""
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *map(str, args)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture
def corpus(tmp_path: Path, demo_corpus: Path) -> Path:
    """A private copy of the demo corpus (exports are recorded in it)."""
    path = tmp_path / "demo.sqlite"
    shutil.copyfile(demo_corpus, path)
    shutil.copytree(demo_corpus.parent / "demo.media", tmp_path / "demo.media")
    return path


def test_export_to_a_prefix_is_recorded_listed_and_verified_in_place(
    s3_env: S3Env, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("export", "--corpus", corpus, "--document", "1", "--images", "-o", s3_env.url + "exp/") == 0
    location = capsys.readouterr().out.strip()
    key = location.removeprefix(f"s3://{s3_env.bucket}/")
    assert key.startswith("exp/export_doc1_") and key.endswith(".zip")
    assert s3_env.objects() == [key] and s3_env.uploads() == []
    body = s3_env.read(key)
    assert len(body) > 2 * TEST_PART_SIZE  # went through a multipart upload
    [record] = [r for r in Registry(corpus).list() if r.path == location]  # the copy may hold others'
    assert (record.status, record.size) == ("complete", len(body))
    assert record.sha256 == hashlib.sha256(body).hexdigest()
    assert record.etag == s3_env.client.head_object(Bucket=s3_env.bucket, Key=key)["ETag"]
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None and "METS.xml" in zf.namelist()

    assert run("exports", "list", "--corpus", corpus) == 0
    assert location in capsys.readouterr().out
    assert run("exports", "show", record.id, "--corpus", corpus) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["path"] == location and shown["etag"] == record.etag

    assert run("verify", location) == 0
    assert capsys.readouterr().out == f"{location}: OK\n"


def test_export_to_a_key_replaces_it_and_verify_finds_damage(
    s3_env: S3Env, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = s3_env.url + "fixed/doc1.zip"
    for fmt in ("alto", "page"):
        assert run("export", "--corpus", corpus, "--document", "1", "--format", fmt, "-o", target) == 0
    assert s3_env.objects() == ["fixed/doc1.zip"]
    body = s3_env.read("fixed/doc1.zip")
    newest = [r for r in Registry(corpus).list() if r.path == target]
    assert [r.format for r in newest] == ["page", "alto"]
    assert newest[0].sha256 == hashlib.sha256(body).hexdigest()
    capsys.readouterr()
    damaged = bytearray(body)
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        first = zf.infolist()[0]
    name_len, extra_len = struct.unpack_from("<HH", body, first.header_offset + 26)
    damaged[first.header_offset + 30 + name_len + extra_len + 5] ^= 0xFF  # inside its data: bad CRC
    s3_env.client.put_object(Bucket=s3_env.bucket, Key="fixed/damaged.zip", Body=bytes(damaged))
    assert run("verify", s3_env.url + "fixed/damaged.zip", s3_env.url + "fixed/missing.zip") == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"{s3_env.url}fixed/missing.zip: no such object"
    assert any(line.startswith(f"{s3_env.url}fixed/damaged.zip: ") for line in out[:-1])


def test_a_bad_image_midway_leaves_no_object_and_no_upload(
    s3_env: S3Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "c.sqlite"
    summary = build_demo(corpus, documents=1, parts=6, lines=8, image_size=(600, 800))
    images = sorted((summary.media_root / "documents" / "1").iterdir())
    assert sum(p.stat().st_size for p in images[:4]) > 2 * TEST_PART_SIZE  # parts uploaded before it
    victim = images[4]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # truncated
    code = run("export", "--corpus", corpus, "--document", "1", "--images", "--on-error", "fail",
               "-o", s3_env.url + "out/")
    err = capsys.readouterr().err
    assert code == 1 and victim.name in err and "Traceback" not in err
    assert s3_env.objects() == [] and s3_env.uploads() == []
    assert [r.status for r in Registry(corpus).list()] == ["failed"]


def test_killed_upload_leaves_no_object_and_gc_aborts_it(
    s3_env: S3Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "big.sqlite"
    build_demo(corpus, documents=1, parts=400, lines=10, image_size=(400, 600), link_images=True)
    proc = cli("export", "--corpus", corpus, "--document", "1", "--images", "-o", s3_env.url + "night/")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not s3_env.uploads():
        time.sleep(0.02)
    assert proc.poll() is None, "export finished before it could be killed; make the corpus bigger"
    time.sleep(0.3)  # a few parts more
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert s3_env.objects() == []
    [pending] = s3_env.uploads()
    assert pending.startswith("night/export_doc1_")
    assert [r.state for r in Registry(corpus).list()] == ["interrupted"]

    assert run("exports", "gc", "--corpus", corpus, "--older-than", "1h") == 0
    out = capsys.readouterr().out  # moto dates every upload 2010-11-10: older than an hour
    assert f"removed s3://{s3_env.bucket}/{pending} (upload " in out
    assert out.rstrip().endswith("1 left-overs of interrupted exports removed from 1 location(s)")
    assert s3_env.uploads() == [] and s3_env.objects() == []


def test_two_concurrent_exports_to_one_prefix_never_collide(s3_env: S3Env, corpus: Path) -> None:
    procs = [cli("export", "--corpus", corpus, "--document", "1", "--images", "--registry",
                 corpus.parent / f"r{n}.sqlite", "-o", s3_env.url + "shared/") for n in range(2)]
    results = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    locations = sorted(out.strip() for out, _ in results)
    assert len(set(locations)) == 2
    assert s3_env.objects() == sorted(loc.removeprefix(f"s3://{s3_env.bucket}/") for loc in locations)
    for n in range(2):
        [record] = Registry(corpus.parent / f"r{n}.sqlite").list()
        body = s3_env.read(record.path.removeprefix(f"s3://{s3_env.bucket}/"))
        assert hashlib.sha256(body).hexdigest() == record.sha256


def _job(tmp_path: Path, corpus: Path, directory: str, keep: int | None = None) -> Path:
    config = tmp_path / "job.toml"
    config.write_text(f"""
name = "night"
corpus = "{corpus}"
[select]
changed_only = true
[archive]
directory = "{directory}"
{f"keep = {keep}" if keep else ""}
[[outputs]]
format = "alto"
images = true
[[outputs]]
format = "text"
""")
    return config


def test_job_to_a_bucket_skips_only_objects_still_there(
    s3_env: S3Env, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _job(tmp_path, corpus, s3_env.url + "jobs")
    assert run("run", config) == 0
    keys = s3_env.objects("jobs/")
    archives = [k for k in keys if not k.endswith("-report.json")]
    assert len(archives) == 4 and "jobs/night-report.json" in keys  # 2 documents x 2 outputs
    report = json.loads(s3_env.read("jobs/night-report.json"))
    assert sorted(e["path"] for e in report["exported"]) == [f"s3://{s3_env.bucket}/{k}" for k in archives]
    assert all(e["etag"] for e in report["exported"])
    capsys.readouterr()

    assert run("run", config) == 0  # unchanged, and every object is still there
    assert "0 archives written, 4 unchanged" in capsys.readouterr().out
    gone, shrunk = archives[0], archives[1]
    s3_env.client.delete_object(Bucket=s3_env.bucket, Key=gone)
    s3_env.client.put_object(Bucket=s3_env.bucket, Key=shrunk, Body=b"not the archive")
    assert run("run", config) == 0  # the missing and the wrong-sized objects are written again
    assert "2 archives written, 2 unchanged" in capsys.readouterr().out
    written = [e["path"] for e in json.loads(s3_env.read("jobs/night-report.json"))["exported"]]
    assert len(written) == 2  # (under the same names when the runs fall in the same second)
    assert run("verify", *written) == 0


def test_job_retention_deletes_old_objects(
    s3_env: S3Env, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _job(tmp_path, corpus, s3_env.url + "kept/", keep=1)
    assert run("run", config, "--set", "archive.name=first_{document_id}_{format}") == 0
    first = set(s3_env.objects("kept/"))
    assert run("run", config, "--set", "archive.name=second_{document_id}_{format}",
               "--set", "select.changed_only=false") == 0
    now = set(s3_env.objects("kept/"))
    assert {k for k in first if "/first_" in k} and not {k for k in now if "/first_" in k}
    assert len([k for k in now if "/second_" in k]) == 4
    report = json.loads(s3_env.read("kept/night-report.json"))
    assert sorted(report["pruned"]) == sorted(f"s3://{s3_env.bucket}/{k}" for k in first if "/first_" in k)


def test_a_job_into_a_bucket_needs_a_registry_when_its_source_keeps_none(
    s3_env: S3Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alto = Path(__file__).parent / "fixtures" / "escriptorium-tapuscorpus" / "alto"
    config = tmp_path / "job.toml"
    config.write_text(f'name = "x"\nsource = "{alto}"\n[archive]\ndirectory = "{s3_env.url}"\n'
                      '[[outputs]]\nformat = "alto"\n')
    assert run("run", config) == 2
    assert "give registry = a local file" in capsys.readouterr().err


def test_missing_bucket_and_wrong_credentials_are_one_line(
    s3_env: S3Env, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = cli("export", "--corpus", corpus, "--document", "1", "-o", "s3://no-such-bucket-x/a/")
    _, err = proc.communicate()
    assert (proc.returncode, err) == (1, "pipeline: error: s3://no-such-bucket-x/: no such bucket\n")

    def auth(count: str) -> None:
        request = urllib.request.Request(f"{s3_env.server.endpoint}/moto-api/reset-auth", data=count.encode(),
                                         method="POST", headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(request).close()

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-wrong-secret")
    auth("0")  # moto checks credentials from now on
    try:
        proc = cli("export", "--corpus", corpus, "--document", "1", "-o", s3_env.url)
        _, err = proc.communicate()
    finally:
        auth("inf")
    assert proc.returncode == 1
    assert err == (f"pipeline: error: s3://{s3_env.bucket}/: access refused: check the credentials and "
                   "the bucket's policy\n")
    assert s3_env.objects() == []


def test_endpoint_option_and_no_secret_in_the_registry(
    s3_env: S3Env, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = os.environ.pop("AWS_ENDPOINT_URL")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    proc = cli("export", "--corpus", corpus, "--document", "2", "--format", "text", "--s3-endpoint", endpoint,
               "-o", s3_env.url + "t/")
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert s3_env.objects("t/") == [out.strip().removeprefix(f"s3://{s3_env.bucket}/")]
    secret = os.environ["AWS_SECRET_ACCESS_KEY"].encode()
    assert secret not in corpus.read_bytes() and secret not in (out + err).encode()


def test_verify_reads_ranges_end_first_never_the_whole_object(
    s3_env: S3Env, corpus: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every GET of ``verify s3://`` is a range of at most one block (plus what zipfile asks at once);
    the first ranges are the end of the object (end record, central directory)."""
    import obstore

    from pipeline.sinks import s3

    assert run("export", "--corpus", corpus, "--document", "1", "--images", "-o", s3_env.url) == 0
    location = capsys.readouterr().out.strip()
    size = s3_env.client.head_object(Bucket=s3_env.bucket, Key=location.rsplit("/", 1)[1])["ContentLength"]
    monkeypatch.setattr(s3, "READ_BLOCK", 64 << 10)
    ranges: list[tuple[int, int]] = []
    real = obstore.get_range

    def spy(store: object, path: str, *, start: int, length: int) -> object:
        ranges.append((start, length))
        return real(store, path, start=start, length=length)

    monkeypatch.setattr(obstore, "get_range", spy)
    assert run("verify", location) == 0
    assert len(ranges) > 4 and max(length for _, length in ranges) < size // 3
    assert ranges[0] == (size - (64 << 10), 64 << 10)  # the end record and central directory first
    assert ranges[1][0] == 0  # then the entries, from the first
