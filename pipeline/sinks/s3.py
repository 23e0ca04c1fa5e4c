"""S3-compatible object storage: ``s3://bucket/prefix/`` (a new object per export, never
overwriting) and ``s3://bucket/key.zip`` (one object, replaced).

Why obstore for the bytes: its writer (``open_writer``) streams a multipart upload with a bounded
buffer (``PART_SIZE``) and a bounded number of parts in flight (``CONCURRENCY``), uploads them
from Rust threads without the GIL, signs every part's SHA-256 (the server rejects a part altered
on the way), and aborts the upload when its context exits on an error. The upload is completed
only by :meth:`S3Sink.commit`; :meth:`S3Sink.abort` (any error or cancellation of the export)
aborts it, and a killed process leaves at most an incomplete multipart upload, which is not an
object: nobody sees it, and ``pipeline exports gc`` aborts it. s3fs was not chosen because its
file's ``__exit__`` completes the upload even when an exception is pending, publishing a
truncated object.

Why botocore beside it: obstore has no call to list or abort someone's pending multipart uploads
(``exports gc``) and does not read AWS profiles. botocore resolves credentials, region and
endpoint exactly as the AWS CLI does (``AWS_*`` variables, ``AWS_PROFILE``, ``~/.aws/config`` and
``~/.aws/credentials``, SSO, roles, ``credential_process``); the store is configured from what it
resolved, so both clients always talk to the same server as the same user. ``--s3-endpoint URL``
(or ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, or a profile's ``endpoint_url``) points both at
a non-AWS server (MinIO, Ceph, Garage...), addressed path-style. Both libraries are imported only
when an ``s3://`` location is used. Nothing secret is kept: locations are ``s3://bucket/key``,
error lines carry the server's error code and message only.

Never overwriting in directory mode: an archive smaller than one part is published with a
conditional create (``If-None-Match: *``), and a taken name moves on to ``name_2``, ``name_3``...
atomically. S3 cannot make a multipart completion conditional through obstore, so a larger
archive relies on its name being unique per export (the export's random id is in it) and on a
look-up of free names before the upload starts.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pipeline.errors import OutputError, UsageError
from pipeline.sinks.base import ByteSink

if TYPE_CHECKING:
    from obstore.store import S3Store

SCHEME = "s3"
#: bytes per part: the writer holds one part, plus up to CONCURRENCY parts in flight; with S3's
#: limit of 10,000 parts an archive can reach 160 GiB. ``PIPELINE_S3_PART_SIZE`` changes it (S3
#: servers refuse parts under 5 MiB but the last; the tests use small parts with a test server)
PART_SIZE = 16 << 20
CONCURRENCY = 3
#: ranged reads (verify) fetch at least this much at a time and keep one such block
READ_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class S3Url:
    """``s3://bucket/key``; a key that is empty or ends with ``/`` names a folder."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, url: str) -> S3Url:
        scheme, sep, rest = url.partition("://")
        if scheme.lower() != SCHEME or not sep:
            raise UsageError(f"{url}: not an s3://bucket/key URL")
        bucket, _, key = rest.partition("/")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
            raise UsageError(f"{url}: {bucket!r} is not an S3 bucket name")
        if "@" in url.split("/", 3)[2]:
            raise UsageError(f"{url}: put credentials in the environment or ~/.aws, not in the URL")
        return cls(bucket, key)

    @property
    def is_folder(self) -> bool:
        return self.key == "" or self.key.endswith("/")

    def child(self, name: str) -> S3Url:
        return S3Url(self.bucket, self.key + name)

    def __str__(self) -> str:
        return f"{SCHEME}://{self.bucket}/{self.key}"


# --- connection ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Connection:
    """What botocore resolved: a client for listing and aborting uploads, and how to build a store."""

    client: Any
    endpoint: str | None
    region: str
    credentials: Any

    def store(self, bucket: str) -> S3Store:
        return _store(self, bucket)

    def _credential(self) -> dict[str, Any]:
        frozen = self.credentials.get_frozen_credentials()
        return {"access_key_id": frozen.access_key, "secret_access_key": frozen.secret_key,
                "token": frozen.token, "expires_at": datetime.now(UTC) + timedelta(minutes=5)}


@lru_cache(maxsize=16)
def _store(connection: Connection, bucket: str) -> S3Store:
    """One store per bucket and connection: they hold the HTTP connections worth reusing."""
    from obstore.store import S3Store

    options: dict[str, Any] = {"timeout": "300s", "connect_timeout": "10s"}
    config: dict[str, Any] = {"region": connection.region}
    if connection.endpoint:
        config["endpoint"] = connection.endpoint
        config["virtual_hosted_style_request"] = False
        options["allow_http"] = connection.endpoint.startswith("http://")
    return S3Store(bucket, config=config, client_options=options,
                   retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=60)},
                   credential_provider=connection._credential)


_lock = threading.Lock()


def connect() -> Connection:
    """The connection for the current environment (cached while it does not change)."""
    import os

    keys = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")
    with _lock:
        return _connect(tuple(os.environ.get(k) for k in keys))


@lru_cache(maxsize=4)
def _connect(_environment: tuple[str | None, ...]) -> Connection:
    import os

    import botocore.config
    import botocore.exceptions
    import botocore.session

    try:
        session = botocore.session.Session()
        scoped = session.get_scoped_config()
        credentials = session.get_credentials()
    except botocore.exceptions.BotoCoreError as exc:  # an unknown profile, a broken config file
        raise UsageError(f"S3 configuration: {exc}") from None
    if credentials is None:
        raise UsageError("S3: no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                         "or AWS_PROFILE with a profile in ~/.aws/credentials)")
    region = os.environ.get("AWS_REGION") or session.get_config_variable("region") or "us-east-1"
    endpoint = (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
                or scoped.get("endpoint_url") or None)
    if endpoint and "@" in endpoint:
        raise UsageError("S3 endpoint: put credentials in the environment or ~/.aws, not in the URL")
    config = botocore.config.Config(
        region_name=region, signature_version="s3v4", retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=10, read_timeout=60, s3={"addressing_style": "path"} if endpoint else None,
    )
    client = session.create_client("s3", endpoint_url=endpoint, config=config)
    return Connection(client, endpoint, region, credentials)


# --- errors ----------------------------------------------------------------------------------

_CODE = re.compile(r"<Code>([^<]*)</Code>")
_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")
_HINTS = {
    "NoSuchBucket": "no such bucket",
    "InvalidAccessKeyId": "the access key is not known to the server (check the credentials)",
    "SignatureDoesNotMatch": "the secret key does not match the access key (check the credentials)",
    "AccessDenied": "access denied (check the credentials and the bucket's policy)",
    "ExpiredToken": "the session token has expired",
}


def reason(exc: BaseException) -> str:
    """One line for what an S3 client raised: the server's error code and message, or the
    transport's first line; never headers or credentials."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
    text = str(exc)
    if code is None and (found := _CODE.search(text)):
        code = found.group(1)
    if code:
        if code in _HINTS:
            return _HINTS[code]
        message = _MESSAGE.search(text)
        return f"{code}: {message.group(1)}" if message else code
    if "Connection refused" in text or "tcp connect error" in text:
        return "cannot connect to the S3 server (connection refused)"
    if "dns error" in text or "Could not connect" in text:
        return "cannot connect to the S3 server"
    if isinstance(exc, FileNotFoundError):
        return "no such object"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:200]


def _errors(url: S3Url | str) -> _Mapped:
    return _Mapped(str(url))


class _Mapped:
    """``with _errors(url):`` turns a client's exception into one OutputError naming ``url``."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, _: object) -> bool:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, OutputError | UsageError):
            return False
        raise OutputError(f"{self.where}: {reason(exc)}") from exc


# --- objects ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ObjectInfo:
    size: int
    etag: str | None
    modified: datetime | None


def head(location: str) -> ObjectInfo | None:
    """The object at ``location``, or None when there is none."""
    import obstore

    url = S3Url.parse(location)
    with _errors(url):
        try:
            meta = obstore.head(connect().store(url.bucket), url.key)
        except FileNotFoundError:
            return None
    return ObjectInfo(meta["size"], meta.get("e_tag"), meta.get("last_modified"))


def exists(location: str, size: int | None = None) -> bool:
    """Whether the object is there (with ``size`` bytes, when given)."""
    info = head(location)
    return info is not None and (size is None or info.size == size)


def remove(location: str) -> None:
    """Delete the object (retention); gone already is fine."""
    import obstore

    url = S3Url.parse(location)
    with _errors(url), contextlib.suppress(FileNotFoundError):
        obstore.delete(connect().store(url.bucket), url.key)


def check_bucket(url: S3Url) -> None:
    """Fail early, with one line, when the bucket is missing or the credentials are refused."""
    import botocore.exceptions

    where = f"{SCHEME}://{url.bucket}/"
    with _errors(where):
        try:
            connect().client.head_bucket(Bucket=url.bucket)
        except botocore.exceptions.ClientError as exc:  # HEAD: a status, no error document
            status = str(exc.response.get("Error", {}).get("Code"))
            known = {"404": "no such bucket", "403": "access refused: check the credentials and the "
                     "bucket's policy", "400": "refused by the server (check the region and the endpoint)"}
            if status in known:
                raise OutputError(f"{where}: {known[status]}") from None
            raise


@dataclass(frozen=True, slots=True)
class PendingUpload:
    location: str
    upload_id: str
    initiated: datetime


def pending_uploads(location: str) -> Iterator[PendingUpload]:
    """Multipart uploads started under ``location`` (a folder or a key prefix) and neither
    completed nor aborted: left by killed exports, or being written right now."""
    url = S3Url.parse(location)
    with _errors(url):
        pages = connect().client.get_paginator("list_multipart_uploads")
        for page in pages.paginate(Bucket=url.bucket, Prefix=url.key):
            for upload in page.get("Uploads", ()):
                yield PendingUpload(str(S3Url(url.bucket, upload["Key"])), upload["UploadId"],
                                    upload["Initiated"])


def abort_stale_uploads(location: str, older_than: timedelta) -> list[PendingUpload]:
    """Abort the pending uploads under ``location`` started more than ``older_than`` ago (younger
    ones may belong to exports still running); returns those aborted."""
    limit = datetime.now(UTC) - older_than
    aborted = []
    for upload in list(pending_uploads(location)):
        if upload.initiated <= limit:
            url = S3Url.parse(upload.location)
            with _errors(url):
                connect().client.abort_multipart_upload(Bucket=url.bucket, Key=url.key,
                                                        UploadId=upload.upload_id)
            aborted.append(upload)
    return aborted


def cleanup(location: str, older_than: timedelta) -> list[str]:
    """``exports gc``: abort the stale uploads under ``location``; what was aborted, one line each."""
    return [f"{u.location} (upload {u.upload_id[:16]}..., started {u.initiated:%Y-%m-%d %H:%M})"
            for u in abort_stale_uploads(location, older_than)]


class RangeReader:
    """A read-only, seekable file over ranged GETs of one object, for :mod:`zipfile`: reads fetch
    at least :data:`READ_BLOCK` bytes and keep the last block, so zipfile's small reads of headers
    and its seeks between neighbouring entries cost no extra request. Memory: one block."""

    def __init__(self, location: str) -> None:
        import obstore

        self.location = location
        self._url = S3Url.parse(location)
        self._obstore = obstore
        with _errors(location):
            self._store = connect().store(self._url.bucket)
            try:
                meta = obstore.head(self._store, self._url.key)
            except FileNotFoundError:
                raise OutputError(f"{location}: no such object") from None
        self.size: int = meta["size"]
        self.etag: str | None = meta.get("e_tag")
        self._pos = 0
        self._start = 0
        self._block = b""

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = self.size - self._pos
        size = min(size, self.size - self._pos)
        if size <= 0:
            return b""
        start = self._pos - self._start
        if not (start >= 0 and start + size <= len(self._block)):
            # a block from here on; near the end, the whole last block (zipfile's first reads, the
            # end record and the central directory before it, then cost one request)
            begin = min(self._pos, max(0, self.size - max(size, READ_BLOCK)))
            length = min(max(size, READ_BLOCK), self.size - begin)
            with _errors(self.location):
                data = self._obstore.get_range(self._store, self._url.key, start=begin, length=length)
            self._block, self._start, start = bytes(data), begin, self._pos - begin
        out = self._block[start:start + size]
        self._pos += len(out)
        return out

    def close(self) -> None:
        self._block = b""

    def __enter__(self) -> RangeReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def presigned_get(location: str, seconds: int, *, filename: str, media_type: str) -> str:
    """A URL that GETs the object without credentials for ``seconds`` (SigV4, signed here with
    no request to the server); the response is named ``filename`` (``Content-Disposition``) so
    a browser saves it as the export, not as its key."""
    url = S3Url.parse(location)
    with _errors(url):
        return str(connect().client.generate_presigned_url(
            "get_object", ExpiresIn=seconds, Params={
                "Bucket": url.bucket, "Key": url.key, "ResponseContentType": media_type,
                "ResponseContentDisposition": f'attachment; filename="{filename}"'}))


class ObjectChanged(OutputError):
    """The object is not the one expected (its ETag differs): never send its bytes."""


async def read_range(location: str, start: int, end: int, *, etag: str | None,
                     chunk: int = READ_BLOCK) -> AsyncIterator[bytes]:
    """The bytes ``start`` to ``end`` (exclusive) of the object, as they arrive, in chunks of about
    ``chunk`` bytes: one ranged GET, read only as fast as the caller takes the chunks (memory: a
    chunk), dropped when the caller stops. ``etag`` (If-Match) makes a replaced object fail
    (:class:`ObjectChanged`) instead of mixing two objects' bytes. A GET that breaks after some
    bytes arrived (the store's request timeout on a slow reader) goes on from there with another
    ranged GET, still If-Match; one that breaks before any byte arrived raises OutputError."""
    import obstore

    url = S3Url.parse(location)
    store = connect().store(url.bucket)
    position = start
    while position < end:
        options: dict[str, Any] = {"range": (position, end)}
        if etag:
            options["if_match"] = etag
        began = position
        try:
            result = await obstore.get_async(store, url.key, options=options)  # type: ignore[arg-type]
            async for data in result.stream(min_chunk_size=chunk):
                data = data[: end - position]
                position += len(data)
                yield data
        except obstore.exceptions.PreconditionError:
            raise ObjectChanged(f"{location}: the object was replaced") from None
        except FileNotFoundError:
            raise OutputError(f"{location}: no such object") from None
        except OutputError:
            raise
        except Exception as exc:
            if position == began:
                raise OutputError(f"{location}: {reason(exc)}") from exc
            continue  # bytes came, then the GET broke: on from where it stopped
        if position == began:  # an empty answer: never loop on it
            raise OutputError(f"{location}: the server sent no bytes from {position}")


# --- the sink --------------------------------------------------------------------------------

class S3Sink(ByteSink):
    """One export's object: written as a multipart upload, completed by ``commit`` only.

    The first part is held here: an archive that fits in it is published by one (conditional, in
    directory mode) PUT, and a failure before it fills leaves nothing on the server at all.
    """

    def __init__(self, url: S3Url, *, overwrite: bool) -> None:
        self.url, self.overwrite = url, overwrite
        super().__init__(str(url))
        check_bucket(url)
        self._connection = connect()
        self._store = self._connection.store(url.bucket)
        self._wanted = url  #: the name asked for; taken ones move on to name_2, name_3...
        if not overwrite:
            self.url = self._free(url)
            self._location = str(self.url)
        self._part = part_size()
        self._head = bytearray()
        self._writer: Any = None

    def _free(self, url: S3Url) -> S3Url:
        """``url`` or the first of ``name_2``, ``name_3``... with no object yet."""
        n = 1
        candidate = url
        while head(str(candidate)) is not None:
            n += 1
            candidate = _numbered(url, n)
        return candidate

    def write(self, data: bytes | memoryview) -> None:
        try:
            self._write(data)
        except OutputError:
            raise
        except Exception as exc:
            raise OutputError(f"{self._location}: {reason(exc)}") from exc
        self._sha.update(data)
        self.size += len(data)

    def _write(self, data: bytes | memoryview) -> None:
        if self._writer is None:
            self._head += data
            if len(self._head) <= self._part:
                return
            import obstore

            self._writer = obstore.open_writer(self._store, self.url.key, buffer_size=self._part,
                                               max_concurrency=CONCURRENCY)
            data, self._head = self._head, bytearray()
        # obstore keeps the buffer it is given until the part is uploaded, without a copy, and
        # callers reuse theirs once write returns (the archive's read buffers): copy it
        self._writer.write(data if isinstance(data, bytes) else bytes(data))

    def commit(self) -> str:
        """Complete the upload; if that fails, abort it (nothing appears) and raise OutputError."""
        try:
            with _errors(self._location):
                return super().commit()
        except BaseException:
            self.abort()
            raise

    def _publish(self) -> str:
        import obstore

        if self._writer is None:  # one part: a single PUT, conditional in directory mode
            while True:
                try:
                    obstore.put(self._store, self.url.key, bytes(self._head),
                                mode="overwrite" if self.overwrite else "create", use_multipart=False)
                    break
                except obstore.exceptions.AlreadyExistsError:  # taken since __init__ looked
                    self.url = self._free(self._wanted)
            self._head = bytearray()
        else:
            self._writer.close()  # completes the multipart upload
            self._writer = None
        self._location = str(self.url)
        info = head(self._location)
        if info is None or info.size != self.size:
            found = "nothing" if info is None else f"{info.size} bytes"
            if info is not None:
                remove(self._location)  # not what was written: never leave it visible
            raise OutputError(f"{self._location}: {self.size} bytes uploaded, the server holds {found}")
        self.etag = info.etag
        return self._location

    def _discard(self) -> None:
        """Abort the multipart upload (its parts are deleted; no object appears)."""
        self._head = bytearray()
        writer, self._writer = self._writer, None
        if writer is not None:
            # an unreachable server keeps the upload pending: `exports gc` aborts it later
            with contextlib.suppress(Exception):
                writer.__exit__(OutputError, OutputError("aborted"), None)  # aborts the upload


def part_size() -> int:
    """:data:`PART_SIZE`, or ``PIPELINE_S3_PART_SIZE`` bytes."""
    import os

    value = os.environ.get("PIPELINE_S3_PART_SIZE")
    if value is None:
        return PART_SIZE
    if not value.isdigit() or int(value) < 1024:
        raise UsageError(f"PIPELINE_S3_PART_SIZE={value}: a number of bytes, at least 1024")
    return int(value)


def _numbered(url: S3Url, n: int) -> S3Url:
    folder, _, name = url.key.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    numbered = f"{stem}_{n}.{ext}" if ext else f"{stem}_{n}"
    return S3Url(url.bucket, f"{folder}/{numbered}" if folder else numbered)


def open_s3_sink(target: str, name: str | None) -> S3Sink:
    """``open_sink`` for ``s3://``: a folder (``name`` inside it, never overwriting) or a key
    (replaced)."""
    url = S3Url.parse(target)
    if url.is_folder:
        if name is None:
            raise UsageError(f"{target}: a folder; give an object name")
        return S3Sink(url.child(name), overwrite=False)
    return S3Sink(url, overwrite=True)
