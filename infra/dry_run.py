"""Cluster dry run: the real training job on a two-node Ray cluster, shards in S3, MLflow over HTTP.

    python -m infra.dry_run                  # about 1.5 minutes on 2 CPU cores
    python -m infra.dry_run --keep           # keep the folder with every log and the MLflow database
    python -m infra.dry_run train.epochs=2   # extra training overrides

The closest thing to a multi-node GPU cluster that runs on one CPU machine, with the commands a cluster
runs: `ray start --head` and `ray start --address=HEAD` (two Ray nodes of one CPU each, so the two
training workers must land on different nodes), token authentication on, an S3 server (SeaweedFS's S3
gateway, as in the tests) holding Fashion-MNIST shards and receiving the checkpoints, an `mlflow server`
reached over HTTP, and
`ray job submit --working-dir . -- python trainer/run.py ...`. Then it checks what a cluster run must
leave behind: the job succeeded, its workers ran on two nodes (Ray's state API), the MLflow server holds
the run and its probe metrics, and the checkpoint is in the bucket. tests/integration/test_cluster_dry_run.py runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# The smallest sensible job (the sizes of tests/helpers/runs.py's tiny_overrides): the point is the plumbing.
SMALL_JOB = ["data.prepare=false", "data.batch_size=32", "data.val_batch_size=64", "data.loader_workers=0",
             "data.shuffle_buffer=100", "model.encoder=convnet", "model.conv_width=8", "model.seq_len=2",
             "model.action_proj_dim=16", "seq_jepa.num_layers=1", "seq_jepa.pred_hidden=64", "probe.hidden=32",
             "probe.val_batches=2", "train.epochs=1", "train.steps_per_epoch=3", "train.log_every_steps=1",
             "tracking.log_model=false", "scaling.num_workers=2", "scaling.cpus_per_worker=1"]
PROBE_METRICS = ("train/loss", "val/inv/acc_agg", "val/inv/acc_enc", "val/equi/r2_enc", "val/equi/r2_agg", "val/loss")
BUCKET = "seq-jepa-dry-run"


class DryRunError(RuntimeError):
    """A step of the dry run failed; the message says which and where its logs are."""


@dataclasses.dataclass
class Report:
    """What the dry run found; `problems()` lists what a cluster run must not miss."""

    job_status: str = "NOT SUBMITTED"
    job_output: str = ""
    nodes: list = dataclasses.field(default_factory=list)  # ids of the alive Ray nodes
    worker_nodes: list = dataclasses.field(default_factory=list)  # node id of each training worker
    mlflow_status: str | None = None
    mlflow_metrics: dict = dataclasses.field(default_factory=dict)
    checkpoint_files: list = dataclasses.field(default_factory=list)  # files of the latest checkpoint in S3
    seconds: float = 0.0

    def problems(self) -> list[str]:
        found = []
        if self.job_status != "SUCCEEDED":
            found.append(f"the job ended {self.job_status}:\n{self.job_output[-3000:]}")
        if len(set(self.worker_nodes)) < 2:
            found.append(f"the training workers did not span two nodes: {self.worker_nodes}")
        if self.mlflow_status != "FINISHED":
            found.append(f"the MLflow run is {self.mlflow_status}")
        missing = [k for k in PROBE_METRICS if k not in self.mlflow_metrics]
        if missing:
            found.append(f"metrics missing from the MLflow server: {missing}")
        if not {".metadata", "__0_0.distcp", "__1_0.distcp"} <= set(self.checkpoint_files):
            found.append(f"no complete checkpoint in the bucket: {self.checkpoint_files}")
        return found


def say(text: str) -> None:
    print(f"[dry run] {text}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_cli() -> list[str]:
    """This interpreter's `ray` command (not whatever `ray` comes first on PATH)."""
    return [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.exit(main())"]


def wait_until(ready, what: str, process: subprocess.Popen | None = None, timeout_s: float = 120) -> None:
    """Poll `ready()` until it holds; a refused connection or a slow answer counts as not ready yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            if ready():
                return
        if process is not None and process.poll() is not None:
            raise DryRunError(f"{what}: the process exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise DryRunError(f"{what}: not ready after {timeout_s:.0f} s")
        time.sleep(0.5)


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status == 200


class Stack(contextlib.ExitStack):
    """Servers in their own process groups, logging under `logs`; closing the stack stops them all."""

    def __init__(self, logs: Path):
        super().__init__()
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str], env: dict, kill=signal.SIGTERM) -> subprocess.Popen:
        log = self.enter_context(open(self.logs / f"{name}.log", "w"))
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
                                   start_new_session=True)
        self.callback(_stop, process, kill)
        return process


def _stop(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)


def start_s3(stack: Stack, work: Path, env: dict) -> str:
    """SeaweedFS's S3 gateway, started as the tests start it (tests/helpers/object_store.py), the environment's key as
    its admin key; its data and log go to `work`/seaweedfs."""
    from tests.helpers.object_store import Key, SeaweedFS, unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        raise DryRunError(f"the S3 server (SeaweedFS): {reason}; or pass --s3-endpoint")
    server = SeaweedFS(work / "seaweedfs", Key(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]))
    try:
        server.start()
    except RuntimeError as err:
        raise DryRunError(f"the S3 server (SeaweedFS): {err}") from None
    stack.callback(server.stop)
    return server.url


def start_mlflow(stack: Stack, work: Path, env: dict) -> str:
    """`mlflow server` as a team runs it, here with sqlite for the database and artifacts served by it."""
    port = free_port()
    server = stack.start("mlflow", [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}",
        "--artifacts-destination", (work / "mlartifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1"], {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # no job runner: 2 GB less
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{url}/health"), "the MLflow server", server)
    return url


def start_ray_node(stack: Stack, name: str, env: dict, flags: list[str]) -> None:
    """`ray start --block` with one CPU and every port free and its own (other Ray instances may run here)."""
    # A short folder per node: Ray's unix sockets live under it and their paths must stay under 108 bytes.
    temp_dir = tempfile.mkdtemp(prefix=f"{name[:2]}-", dir="/tmp")
    stack.callback(shutil.rmtree, temp_dir, ignore_errors=True)
    ports = [f"--{flag}={free_port()}" for flag in ("node-manager-port", "object-manager-port", "metrics-export-port",
                                                     "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                     "runtime-env-agent-port")]
    stack.start(f"ray-{name}", ray_cli() + ["start", "--block", f"--temp-dir={temp_dir}", "--num-cpus=1",
                                            "--node-ip-address=127.0.0.1", f"--object-store-memory={256 * 2**20}",
                                            *ports, *flags], env, kill=signal.SIGKILL)  # Ray's daemons ignore SIGTERM


class Dashboard:
    """The head's HTTP API (jobs, state), with the cluster's token."""

    def __init__(self, url: str, token: str):
        self.url, self.headers = url, {"Authorization": f"Bearer {token}"}

    def state(self, resource: str, **filters) -> list[dict]:
        """Ray's state API (`ray list nodes|actors`) over HTTP, dead entries included."""
        query = "".join(f"&filter_keys={k}&filter_predicates=%3D&filter_values={v}" for k, v in filters.items())
        request = urllib.request.Request(f"{self.url}/api/v0/{resource}?detail=1&limit=1000{query}",
                                         headers=self.headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["data"]["result"]["result"]

    def alive_nodes(self) -> list[str]:
        return [node["node_id"] for node in self.state("nodes") if node["state"] == "ALIVE"]


def write_shards(s3_endpoint: str, url: str, cache_dir: str) -> None:
    """Fashion-MNIST shards straight into the bucket, as `python -m data_pipeline write --out s3://...` does."""
    import boto3
    from botocore.exceptions import ClientError

    from data_pipeline import S3Options, prepare_fashion_mnist_shards

    with contextlib.suppress(ClientError):  # already there: fine
        boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=url.split("/")[2])
    prepare_fashion_mnist_shards(url, None, cache_dir, samples_per_shard=400, limit=1600, progress=False,
                                 s3=S3Options(endpoint_url=s3_endpoint), system_packages=True)


def checkpoint_files(s3_endpoint: str, run_url: str) -> list[str]:
    """File names in the run's latest `checkpoint_<time>/` folder in the bucket."""
    import boto3

    bucket, _, prefix = run_url.removeprefix("s3://").partition("/")
    pages = boto3.client("s3", endpoint_url=s3_endpoint).get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{prefix}/")
    folders: dict[str, list[str]] = {}
    for key in (obj["Key"][len(prefix) + 1:] for page in pages for obj in page.get("Contents", [])):
        folder, _, name = key.partition("/")
        if folder.startswith("checkpoint_") and name:
            folders.setdefault(folder, []).append(name)
    return sorted(folders[max(folders)]) if folders else []


def mlflow_run(tracking_uri: str, name: str):
    """The run named `name` on the MLflow server, read back over its REST API."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("seq-jepa")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`seq_jepa.run_name` = '{name}'")
    return runs[0] if len(runs) == 1 else None


def submit(dashboard: str, env: dict, entrypoint: list[str], timeout_s: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(ray_cli() + ["job", "submit", "--address", dashboard, "--working-dir", ".", "--",
                                       *entrypoint], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout_s)


def dry_run(work: Path, *, s3_endpoint: str | None = None, cache_dir: str = "~/seq-jepa/data/cache",
            overrides: tuple[str, ...] = ()) -> Report:
    """Start the stack under `work`, run the job, collect a Report, stop everything."""
    started, report = time.monotonic(), Report()
    token = secrets.token_hex(32)  # this cluster's own token, not the user's ~/.ray/auth_token
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "MLFLOW_DISABLE_TELEMETRY": "true",
           "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "120",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # the job's `python`
    with Stack(work / "logs") as stack:
        if s3_endpoint is None:  # our own S3 server, with fake credentials (here too) that can never reach AWS
            fake = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1"}
            for values in (os.environ, env):
                values.update(fake)
                for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
                    values.pop(key, None)
            s3_endpoint = start_s3(stack, work, env)
        # Every node sees the endpoint, as a cluster's pods do (Ray Train writes the checkpoints with pyarrow).
        env["AWS_ENDPOINT_URL"] = s3_endpoint
        env.pop("RAY_ADDRESS", None)
        tracking_uri = start_mlflow(stack, work, env)
        env["MLFLOW_TRACKING_URI"] = tracking_uri  # as the pods get it from a Secret
        say(f"S3 at {s3_endpoint}, MLflow server at {tracking_uri}")

        gcs, dashboard_port = f"127.0.0.1:{free_port()}", free_port()
        dashboard_url = f"http://127.0.0.1:{dashboard_port}"
        start_ray_node(stack, "head", env, [
            "--head", f"--port={gcs.split(':')[1]}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
            f"--ray-client-server-port={free_port()}"])
        start_ray_node(stack, "worker", env, [f"--address={gcs}"])
        shards, runs = f"s3://{BUCKET}/fashion-mnist", f"s3://{BUCKET}/runs"
        write_shards(s3_endpoint, shards, str(Path(os.path.expanduser(cache_dir))))

        dashboard = Dashboard(dashboard_url, token)
        wait_until(lambda: len(dashboard.alive_nodes()) == 2, "two Ray nodes")
        # The dashboard answers before the head's job agent has registered: wait for a trivial job.
        wait_until(lambda: submit(dashboard_url, env, ["true"], 60).returncode == 0, "the Ray job server")
        say(f"Ray head at {gcs} (dashboard {dashboard_url}) and a worker node; shards in {shards}")

        name = f"dry-run-{time.strftime('%Y%m%d-%H%M%S')}"
        entrypoint = ["python", "trainer/run.py", *SMALL_JOB, f"data.shards={shards}",
                      f"data.s3_endpoint_url={s3_endpoint}", f"run.storage_path={runs}", f"run.name={name}",
                      f"tracking.tracking_uri={tracking_uri}", f"data.cache_dir={work / 'cache'}", *overrides]
        say(f"ray job submit --address {dashboard_url} --working-dir . -- {' '.join(entrypoint)}")
        done = submit(dashboard_url, env, entrypoint)
        report.job_output = done.stdout + done.stderr
        (stack.logs / "job.log").write_text(report.job_output)
        status = re.search(r"Job '\S+' (succeeded|failed|stopped)", done.stdout)
        report.job_status = status.group(1).upper() if status else f"UNKNOWN (exit code {done.returncode})"

        report.nodes = dashboard.alive_nodes()
        report.worker_nodes = [actor["node_id"] for actor in dashboard.state("actors", class_name="RayTrainWorker")]
        run = mlflow_run(tracking_uri, name)
        if run is not None:
            report.mlflow_status, report.mlflow_metrics = run.info.status, dict(run.data.metrics)
        report.checkpoint_files = checkpoint_files(s3_endpoint, f"{runs}/{name}")
    report.seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="extra training overrides (key=value)")
    parser.add_argument("--workdir", help="folder for logs and the MLflow database (default: a new temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--s3-endpoint", help="an S3 endpoint to use (credentials from the AWS chain) instead of "
                                              "starting a local S3 server")
    parser.add_argument("--cache-dir", default="~/seq-jepa/data/cache", help="where Fashion-MNIST is fetched to")
    args = parser.parse_args(argv)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="seq-jepa-dry-run-")).resolve()
    try:
        report = dry_run(work, s3_endpoint=args.s3_endpoint, cache_dir=args.cache_dir, overrides=tuple(args.overrides))
    except DryRunError as err:
        print(f"[dry run] error: {err}; logs in {work / 'logs'}", file=sys.stderr)
        return 1
    problems = report.problems()
    say(f"job {report.job_status} ({report.seconds:.0f} s in all); training workers on "
        f"{len(set(report.worker_nodes))} of {len(report.nodes)} Ray nodes; MLflow run {report.mlflow_status} "
        f"with {len(report.mlflow_metrics)} metrics; checkpoint files {report.checkpoint_files}")
    for problem in problems:
        print(f"[dry run] FAILED: {problem}", file=sys.stderr)
    if args.keep or problems:
        say(f"logs and the MLflow database are in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
