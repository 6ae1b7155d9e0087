"""One set of versions everywhere: the images and cluster definitions agree with pyproject.toml and .ci/run.

The paths the tests of infra/ and docker/ share are in tests/helpers/paths.py.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tests.helpers.paths import DOCKER, INFRA, KUBERAY, PROJECT_ROOT, tomllib


@functools.cache
def pins() -> dict:
    """The versions the project pins: its own, Python's range, torch (.ci/run), ray and mlflow (pyproject)."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    deps = {re.split(r"[\[=<>!~ ;]", d, maxsplit=1)[0]: d for d in project["dependencies"]}
    torch = re.search(r"torch==([\w.]+)", (PROJECT_ROOT / ".ci" / "run").read_text()).group(1)
    return {"version": project["version"], "python": SpecifierSet(project["requires-python"]),
            "torch": torch, "torch_range": SpecifierSet(deps["torch"].removeprefix("torch")),
            "ray": re.search(r"==([\w.]+)", deps["ray"]).group(1),
            "mlflow": re.search(r"==([\w.]+)", deps["mlflow"]).group(1)}


def dockerfile_args(path: Path) -> dict[str, str]:
    """ARG defaults of a Dockerfile."""
    return dict(re.findall(r"^ARG (\w+)=(\S*)", path.read_text(), re.M))


def cuda_suffix() -> str:
    """The tag suffix of the CUDA image, from the CUDA version of its base: cuda13.0 -> cu130."""
    flavor = dockerfile_args(DOCKER / "Dockerfile")["CUDA_FLAVOR"]
    major, minor = re.match(r"cuda(\d+)\.(\d+)-", flavor).groups()
    return f"cu{major}{minor}"


def images(tree) -> list[str]:
    """Every `image:` value in a parsed YAML tree."""
    if isinstance(tree, dict):
        return [v for k, v in tree.items() if k == "image" and isinstance(v, str)] + \
            [i for v in tree.values() for i in images(v)]
    if isinstance(tree, list):
        return [i for v in tree for i in images(v)]
    return []


def test_the_image_pins_the_ci_torch_inside_the_project_range():
    args, p = dockerfile_args(DOCKER / "Dockerfile"), pins()
    assert args["TORCH_VERSION"] == p["torch"], "docker/Dockerfile and .ci/run pin different torch versions"
    assert Version(p["torch"]) in p["torch_range"], f"torch {p['torch']} is outside pyproject's {p['torch_range']}"
    base = re.search(r"^FROM (\S+) AS base-cuda", (DOCKER / "Dockerfile").read_text(), re.M).group(1)
    assert base == "pytorch/pytorch:${TORCH_VERSION}-${CUDA_FLAVOR}"
    assert re.fullmatch(r"cuda\d+\.\d+-cudnn\d+-runtime", args["CUDA_FLAVOR"]), args["CUDA_FLAVOR"]


def test_image_pythons_satisfy_requires_python():
    for dockerfile in (DOCKER / "Dockerfile", DOCKER / "mlflow.Dockerfile"):
        python = dockerfile_args(dockerfile)["PYTHON_VERSION"]
        assert Version(python) in pins()["python"], f"{dockerfile.name}: Python {python} vs {pins()['python']}"


def test_the_mlflow_server_runs_the_clients_mlflow():
    assert dockerfile_args(DOCKER / "mlflow.Dockerfile")["MLFLOW_VERSION"] == pins()["mlflow"]
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert compose["services"]["mlflow"]["image"] == f"seq-jepa-mlflow:{pins()['mlflow']}"


def test_every_kuberay_cluster_declares_the_pinned_ray():
    found = 0
    for path in KUBERAY:
        for doc in yaml.safe_load_all(path.read_text()):
            spec = doc["spec"].get("rayClusterSpec", doc["spec"]) if doc["kind"] in ("RayJob", "RayCluster") else None
            if spec is not None:
                assert spec["rayVersion"] == pins()["ray"], f"{path.name}: rayVersion {spec['rayVersion']}"
                found += 1
    assert found == 3


def test_image_tags_name_the_project_version_and_the_build():
    """seq-jepa:<version>-cu130 on GPU clusters, seq-jepa:<version>-cpu in the local stack."""
    gpu_tag = f"seq-jepa:{pins()['version']}-{cuda_suffix()}"
    cluster_images = [i for path in KUBERAY for doc in yaml.safe_load_all(path.read_text()) for i in images(doc)]
    launcher = yaml.safe_load((INFRA / "aws" / "cluster.yaml").read_text())
    for image in cluster_images + [launcher["docker"]["image"]]:
        assert image.endswith("/" + gpu_tag), f"{image} is not the training image {gpu_tag}"
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    for name in ("ray-head", "ray-worker"):
        service = compose["services"][name]
        assert service["image"] == f"seq-jepa:{pins()['version']}-cpu"
        assert service["build"]["args"]["VARIANT"] == "cpu"
    assert "ray.__version__" in launcher["setup_commands"][0]  # the launcher checks the image it runs
