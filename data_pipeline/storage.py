"""Where shard sets live: local folders, file:// URLs and s3:// URLs (AWS S3 or any S3-compatible store).

The one place that knows about URL schemes. Everything else asks for a `Store` and reads streams,
bytes and listings through it. S3 goes through one persistent boto3 client per process (no shell
`pipe:` commands); the endpoint, region and profile come from `S3Options` or the standard AWS
environment and credential chain. Credentials are never read, stored or printed here: boto3 finds
them itself.

Failure handling: botocore retries requests (connection errors, 5xx, throttling) with backoff; a
read that breaks mid-stream resumes from the byte it reached with a ranged GET. Anything still
failing becomes one `DataError` line saying what, where and how to fix it.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from data_pipeline.errors import DataError, NotFound


@dataclass(frozen=True)
class S3Options:
    endpoint_url: str | None = None  # None: AWS_ENDPOINT_URL(_S3) or AWS itself
    region: str | None = None  # None: AWS_REGION / AWS_DEFAULT_REGION / the profile's region
    profile: str | None = None  # None: AWS_PROFILE or the default credential chain
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    max_attempts: int = 5  # per request, and per broken stream

    def describe_endpoint(self) -> str:
        return (self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
                or "AWS S3")


def is_remote(location: str | os.PathLike) -> bool:
    return os.fspath(location).startswith("s3://")


def join(location: str | os.PathLike, *names: str) -> str:
    """`location/name/...` for a path or a URL (keeps the scheme; no double slashes)."""
    text = os.fspath(location)
    return "/".join([text.rstrip("/")] + [n.strip("/") for n in names])


def local_path(location: str | os.PathLike) -> Path:
    """The local path behind a path or file:// URL; a DataError for any other scheme."""
    text = os.fspath(location)
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    if "://" in text:
        raise DataError(f"unsupported location {text}; use a local path, a file:// URL or an s3://bucket/prefix URL")
    return Path(text).expanduser()


def split_s3_url(url: str) -> tuple[str, str]:
    rest = url[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise DataError(f"{url} names no bucket; write s3://BUCKET/PREFIX")
    return bucket, key


class LocalStore:
    def open(self, location: str) -> BinaryIO:
        path = local_path(location)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise NotFound(f"{path} does not exist") from None

    def read_bytes(self, location: str) -> bytes:
        with self.open(location) as f:
            return f.read()

    def exists(self, location: str) -> bool:
        return local_path(location).is_file()

    def list_sizes(self, prefix: str) -> dict[str, int]:
        """{path: bytes} of the files directly in the folder `prefix` (a path or file:// URL)."""
        folder = local_path(prefix)
        if not folder.is_dir():
            return {}
        return {str(p): p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}

    def delete(self, location: str) -> None:
        local_path(location).unlink(missing_ok=True)

    def put_file(self, source: Path, location: str) -> None:
        dest = local_path(location)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)


_CLIENTS: dict[tuple, object] = {}


def _s3_client(options: S3Options):
    """One client per process and options: boto3 clients are thread-safe but must not cross a fork."""
    key = (os.getpid(), options)
    if key not in _CLIENTS:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(profile_name=options.profile, region_name=options.region)
        config = Config(connect_timeout=options.connect_timeout_s, read_timeout=options.read_timeout_s,
                        retries={"total_max_attempts": options.max_attempts, "mode": "standard"},  # first one included
                        max_pool_connections=16)
        _CLIENTS[key] = session.client("s3", endpoint_url=options.endpoint_url, config=config)
    return _CLIENTS[key]


def _s3_error(err: Exception, url: str, options: S3Options, action: str) -> DataError:
    """Translate a boto3/botocore failure into one line: what, where, how to fix."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ProfileNotFound,
    )

    if isinstance(err, S3UploadFailedError) and isinstance(err.__context__, ClientError):
        err = err.__context__  # upload_file re-raises a PutObject ClientError as this: classify the real one
    where = f"{url} (endpoint {options.describe_endpoint()})"
    if isinstance(err, (EndpointConnectionError, ConnectTimeoutError)):
        return DataError(f"cannot reach the object store to {action} {where} after {options.max_attempts} attempts; "
                         "check the endpoint URL (data.s3_endpoint_url or AWS_ENDPOINT_URL) and the network")
    if isinstance(err, NoCredentialsError):
        return DataError(f"no AWS credentials found to {action} {where}; set AWS_PROFILE, AWS_ACCESS_KEY_ID/"
                         "AWS_SECRET_ACCESS_KEY or an instance role")
    if isinstance(err, ProfileNotFound):
        return DataError(f"AWS profile {options.profile!r} not found to {action} {where}; check data.s3_profile "
                         "and ~/.aws/config")
    if isinstance(err, ClientError):
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchBucket",):
            return DataError(f"bucket {split_s3_url(url)[0]!r} does not exist at {options.describe_endpoint()}; "
                             "create it or fix the URL")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"):
            return DataError(f"access denied ({code}) to {action} {where}; check the credentials and the bucket "
                             "policy")
        if code in ("NoSuchKey", "404", "NotFound"):
            return NotFound(f"{url} does not exist in the object store")
        return DataError(f"object store error {code} to {action} {where}: {err}")
    return DataError(f"failed to {action} {where}: {type(err).__name__}: {err}")


def _transient_stream_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import ConnectionClosedError, IncompleteReadError, ReadTimeoutError, ResponseStreamingError
    from urllib3.exceptions import ProtocolError

    return (ConnectionError, ConnectionClosedError, IncompleteReadError, ReadTimeoutError, ResponseStreamingError,
            ProtocolError, TimeoutError)


class _ResumingS3Reader(io.RawIOBase):
    """A readable stream over one S3 object that survives connection resets mid-body.

    It remembers how many bytes it delivered; when the body breaks it asks for the rest with a
    ranged GET (after a short backoff), so the reader above never sees the failure.
    """

    def __init__(self, store: "S3Store", url: str):
        self.store, self.url = store, url
        self.bucket, self.key = split_s3_url(url)
        self.offset = 0
        self.body = None
        self.resumes = 0
        self._open_body()

    def _open_body(self) -> None:
        kwargs = {"Range": f"bytes={self.offset}-"} if self.offset else {}
        try:
            self.body = self.store.client.get_object(Bucket=self.bucket, Key=self.key, **kwargs)["Body"]
        except Exception as err:  # noqa: BLE001 - translated into one readable line
            raise _s3_error(err, self.url, self.store.options, "read") from None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        transient = _transient_stream_errors()
        while True:
            try:
                data = self.body.read(len(buffer))
                break
            except transient as err:
                self.resumes += 1
                if self.resumes >= self.store.options.max_attempts:
                    raise DataError(f"reading {self.url} (endpoint {self.store.options.describe_endpoint()}) kept "
                                    f"failing ({type(err).__name__}: {err}) after {self.resumes} resumes; check the "
                                    "object store's health") from None
                time.sleep(min(2.0, 0.1 * 2 ** self.resumes))
                self._open_body()
        buffer[:len(data)] = data
        self.offset += len(data)
        return len(data)

    def close(self) -> None:
        if self.body is not None:
            self.body.close()
        super().close()


class S3Store:
    def __init__(self, options: S3Options):
        self.options = options
        try:
            self.client = _s3_client(options)
        except Exception as err:  # noqa: BLE001 - e.g. an unknown profile
            raise _s3_error(err, "s3://", options, "connect to") from None

    def _call(self, action: str, url: str, fn, **kwargs):
        try:
            return fn(**kwargs)
        except Exception as err:  # noqa: BLE001 - translated into one readable line
            raise _s3_error(err, url, self.options, action) from None

    def open(self, url: str) -> BinaryIO:
        return io.BufferedReader(_ResumingS3Reader(self, url), buffer_size=1 << 20)

    def read_bytes(self, url: str) -> bytes:
        with self.open(url) as f:
            return f.read()

    def exists(self, url: str) -> bool:
        from botocore.exceptions import ClientError

        bucket, key = split_s3_url(url)
        try:
            self.client.head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as err:
            if str(err.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise _s3_error(err, url, self.options, "look up") from None
        except Exception as err:  # noqa: BLE001
            raise _s3_error(err, url, self.options, "look up") from None

    def list_sizes(self, prefix: str) -> dict[str, int]:
        """{url: bytes} of the objects directly under `prefix` (a folder-like listing, paginated)."""
        bucket, key = split_s3_url(prefix)
        key = key.rstrip("/") + "/" if key else ""
        sizes: dict[str, int] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=key, Delimiter="/"):
                # Not the folder's own marker object ("prefix/", which Ray Train's pyarrow writes): no file.
                sizes.update({f"s3://{bucket}/{obj['Key']}": int(obj["Size"]) for obj in page.get("Contents", [])
                              if obj["Key"] != key})
        except Exception as err:  # noqa: BLE001
            raise _s3_error(err, prefix, self.options, "list") from None
        return dict(sorted(sizes.items()))

    def list_folders(self, prefix: str) -> list[str]:
        """URLs (no trailing slash) of the folder-like prefixes directly under `prefix`, sorted."""
        bucket, key = split_s3_url(prefix)
        key = key.rstrip("/") + "/" if key else ""
        folders: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=key, Delimiter="/"):
                folders += [f"s3://{bucket}/{p['Prefix'].rstrip('/')}" for p in page.get("CommonPrefixes", [])]
        except Exception as err:  # noqa: BLE001
            raise _s3_error(err, prefix, self.options, "list") from None
        return sorted(folders)

    def delete(self, url: str) -> None:
        bucket, key = split_s3_url(url)
        self._call("delete", url, self.client.delete_object, Bucket=bucket, Key=key)

    def put_file(self, source: Path, url: str) -> None:
        bucket, key = split_s3_url(url)
        self._call("upload to", url, self.client.upload_file, Filename=str(source), Bucket=bucket, Key=key)


def store_for(location: str | os.PathLike, options: S3Options | None = None) -> LocalStore | S3Store:
    return S3Store(options or S3Options()) if is_remote(location) else LocalStore()


def expand_urls(pattern: str) -> list[str]:
    """Brace expansion of a shard list: `s3://b/p/shard-{000000..000009}.tar` -> 10 URLs."""
    import braceexpand

    try:
        return list(braceexpand.braceexpand(pattern))
    except Exception as err:  # noqa: BLE001 - unbalanced braces and the like
        raise DataError(f"cannot expand the shard pattern {pattern}: {err}") from None
