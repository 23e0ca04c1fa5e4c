"""A throwaway S3 endpoint for tests and benchmarks: moto's server (``ThreadedMotoServer``, real
HTTP on 127.0.0.1, a free port), started once per session and stopped at the end.

moto is the only S3-compatible server our package registries carry. It keeps objects in memory
up to ``MOTO_S3_DEFAULT_KEY_BUFFER_SIZE`` and spills larger ones to temporary files. Parts may be
small here (``S3_UPLOAD_PART_MIN_SIZE``, read when moto is imported) so that small archives go
through real multipart uploads (``PIPELINE_S3_PART_SIZE``).

Fixtures (imported by ``conftest.py``): ``s3_server`` (the session's endpoint, the variables a
client needs) and ``s3_env`` (those variables set for one test, a fresh bucket, and a boto3
client to look at the server with).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

#: parts of this size go through multipart uploads in the tests (moto accepts parts this small)
TEST_PART_SIZE = 64 << 10
os.environ.setdefault("S3_UPLOAD_PART_MIN_SIZE", str(TEST_PART_SIZE))


@dataclass
class S3Server:
    endpoint: str
    env: dict[str, str] = field(default_factory=dict)

    def client(self, **credentials: str) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=credentials.get("key", self.env["AWS_ACCESS_KEY_ID"]),
            aws_secret_access_key=credentials.get("secret", self.env["AWS_SECRET_ACCESS_KEY"]),
        )


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        env = {
            "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing-key",
            "AWS_SECRET_ACCESS_KEY": "testing-secret", "AWS_REGION": "us-east-1",
            "PIPELINE_S3_PART_SIZE": str(TEST_PART_SIZE),
            # no profile or config file of the user running the tests
            "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
        yield S3Server(endpoint, env)
    finally:
        server.stop()


@dataclass
class S3Env:
    server: S3Server
    bucket: str
    client: Any

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/"

    def objects(self, prefix: str = "") -> list[str]:
        found = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix).get("Contents", [])
        return sorted(o["Key"] for o in found)

    def uploads(self) -> list[str]:
        return [u["Key"] for u in self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])]

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Env]:
    """The session's server in this test's environment, with a bucket of its own (emptied after)."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3",
                 "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    client = s3_server.client()
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    env = S3Env(s3_server, bucket, client)
    yield env
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for key in env.objects():
        client.delete_object(Bucket=bucket, Key=key)
    client.delete_bucket(Bucket=bucket)
