"""infra/: the KubeRay manifests and the Ray cluster launcher config pass their schemas and fit together.

Kubernetes objects and every pod template are checked against the Kubernetes JSON schemas that
`kubernetes-validate` ships (strict: an unknown field is an error). No registry package ships the KubeRay
CRD schemas, so RayCluster and RayJob fields are checked here against the keys and required fields of
KubeRay 1.7.0's CRDs (ray.io/v1). The launcher config is checked against the schema inside Ray itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.helpers.paths import INFRA, KUBERAY

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (dev extra)")

K8S_VERSION = "1.33"
# KubeRay 1.7.0, ray-operator/config/crd/bases: the fields of ray.io/v1 specs.
RAYCLUSTER_KEYS = {"authOptions", "autoscalerOptions", "enableInTreeAutoscaling", "gcsFaultToleranceOptions",
                   "headGroupSpec", "headServiceAnnotations", "historyServerOptions", "managedBy", "networkPolicy",
                   "rayVersion", "suspend", "tlsOptions", "upgradeStrategy", "workerGroupSpecs"}
HEAD_KEYS = {"enableIngress", "headService", "ingressOptions", "labels", "rayStartParams", "resources",
             "serviceType", "template"}
WORKER_KEYS = {"groupName", "idleTimeoutSeconds", "labels", "maxReplicas", "minReplicas", "numOfHosts", "priority",
               "rayStartParams", "replicas", "resources", "scaleStrategy", "suspend", "template"}
WORKER_REQUIRED = {"groupName", "maxReplicas", "minReplicas", "template"}
AUTOSCALER_KEYS = {"args", "command", "env", "envFrom", "idleTimeoutSeconds", "image", "imagePullPolicy",
                   "resources", "securityContext", "upscalingMode", "version", "volumeMounts"}
RAYJOB_KEYS = {"activeDeadlineSeconds", "backoffLimit", "clusterSelector", "deletionStrategy", "entrypoint",
               "entrypointNumCpus", "entrypointNumGpus", "entrypointResources", "jobId", "managedBy", "metadata",
               "preRunningDeadlineSeconds", "rayClusterSpec", "runtimeEnvYAML", "shutdownAfterJobFinishes",
               "submissionMode", "submitterConfig", "submitterPodTemplate", "suspend", "ttlSecondsAfterFinished"}


def documents() -> list[tuple[str, dict]]:
    return [(path.name, doc) for path in KUBERAY for doc in yaml.safe_load_all(path.read_text()) if doc]


def cluster_specs() -> list[tuple[str, dict]]:
    return [(name, doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"])
            for name, doc in documents() if doc["kind"] in ("RayCluster", "RayJob")]


def pod_templates(spec: dict) -> list[dict]:
    return [spec["headGroupSpec"]["template"]] + [group["template"] for group in spec["workerGroupSpecs"]]


def _unknown(found: dict, allowed: set, where: str) -> None:
    assert set(found) <= allowed, f"{where}: fields KubeRay does not know: {set(found) - allowed}"


def test_every_yaml_and_json_file_parses():
    paths = [p for folder in (INFRA, INFRA.parent / "docker") for p in folder.rglob("*")
             if p.suffix in (".yaml", ".yml", ".json")]
    assert len(paths) >= 7
    for path in paths:
        docs = list(yaml.safe_load_all(path.read_text())) if path.suffix != ".json" else [json.loads(path.read_text())]
        assert docs and all(isinstance(doc, dict) for doc in docs), f"{path.name}: not a mapping"


def test_kubernetes_objects_pass_the_kubernetes_schema():
    native = [(name, doc) for name, doc in documents() if doc["kind"] not in ("RayCluster", "RayJob")]
    assert {doc["kind"] for _, doc in native} == {"Secret", "ServiceAccount", "PersistentVolumeClaim"}
    for _, doc in native:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name,spec", cluster_specs(), ids=lambda v: v if isinstance(v, str) else "")
def test_ray_clusters_pass_the_kuberay_fields_and_pod_templates_the_kubernetes_schema(name, spec):
    _unknown(spec, RAYCLUSTER_KEYS, f"{name} spec")
    _unknown(spec.get("autoscalerOptions", {}), AUTOSCALER_KEYS, f"{name} autoscalerOptions")
    assert spec.get("authOptions", {}).get("mode") == "token", f"{name}: Ray token authentication must be on"
    head = spec["headGroupSpec"]
    _unknown(head, HEAD_KEYS, f"{name} headGroupSpec")
    assert spec["workerGroupSpecs"], f"{name}: no worker group"
    for group in spec["workerGroupSpecs"]:
        _unknown(group, WORKER_KEYS, f"{name} worker group")
        assert WORKER_REQUIRED <= set(group), f"{name}: worker group lacks {WORKER_REQUIRED - set(group)}"
        assert 0 <= group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]
    for params in [head.get("rayStartParams", {})] + [g.get("rayStartParams", {}) for g in spec["workerGroupSpecs"]]:
        assert all(isinstance(v, str) for v in params.values()), f"{name}: rayStartParams values must be strings"
    for template in pod_templates(spec):
        doc = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": template}
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name,spec", cluster_specs(), ids=lambda v: v if isinstance(v, str) else "")
def test_ray_pods_have_resources_shared_memory_gpus_and_the_job_environment(name, spec):
    secrets = {(d["metadata"]["name"], key) for n, d in documents() if d["kind"] == "Secret" for key in d["stringData"]}
    images = set()
    for template in pod_templates(spec):
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        images.add(container["image"])
        assert container["resources"]["requests"] and container["resources"]["limits"], f"{name}: set both"
        shm = [v for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"]
        assert any(m["mountPath"] == "/dev/shm" and m["name"] == shm[0]["name"] for m in container["volumeMounts"])
        refs = {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
                for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
        assert refs <= secrets, f"{name}: Secret keys not in secrets.example.yaml: {refs - secrets}"
        names = {e["name"] for e in container["env"]}
        assert {"MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL"} <= names
        assert not any(e.get("value") for e in container["env"]), f"{name}: env values come from Secrets"
    assert len(images) == 1, f"{name}: head and workers must run the same image (same Ray, Python, code)"
    for group in spec["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        assert container["resources"]["limits"].get("nvidia.com/gpu", 0) >= 1, f"{name}: a GPU worker group"
    assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", f"{name}: keep training off the head"


def test_the_long_lived_cluster_autoscales_its_gpu_workers():
    ((_, spec),) = [(n, s) for n, s in cluster_specs() if n == "raycluster.yaml"]
    assert spec["enableInTreeAutoscaling"] is True
    (group,) = spec["workerGroupSpecs"]
    assert group["minReplicas"] < group["maxReplicas"]


@pytest.mark.parametrize("name", ["rayjob-train.yaml", "rayjob-sweep.yaml"])
def test_ray_jobs_pass_the_kuberay_fields_and_run_in_the_image(name):
    ((_, job),) = [(n, d) for n, d in documents() if n == name]
    _unknown(job["spec"], RAYJOB_KEYS, f"{name} spec")
    assert job["spec"]["entrypoint"].startswith("python ")
    assert job["spec"]["shutdownAfterJobFinishes"] is True, "a job's GPUs go back when it ends"
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert runtime_env == {"working_dir": "/app"}  # the image's WORKDIR (docker/Dockerfile)
    assert "WORKDIR /app" in (INFRA.parent / "docker" / "Dockerfile").read_text()


def test_the_training_job_has_one_gpu_pod_per_worker():
    ((_, job),) = [(n, d) for n, d in documents() if n == "rayjob-train.yaml"]
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    workers = [int(a.split("=")[1]) for a in job["spec"]["entrypoint"].split() if a.startswith("scaling.num_workers=")]
    assert workers == [group["replicas"]] and group["minReplicas"] == group["replicas"], \
        "trainer/run.py checks the cluster's CPUs at start: the worker pods must all be there"


def test_the_sweep_keeps_its_state_on_the_shared_volume():
    docs = dict((d["kind"], d) for n, d in documents() if n in ("rayjob-sweep.yaml", "shared-storage.yaml"))
    claim = docs["PersistentVolumeClaim"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    spec = docs["RayJob"]["spec"]
    storage = [a.split("=", 1)[1] for a in spec["entrypoint"].split() if a.startswith("storage_path=")]
    for template in pod_templates(spec["rayClusterSpec"]):
        volume = next(v for v in template["spec"]["volumes"] if "persistentVolumeClaim" in v)
        assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        (container,) = template["spec"]["containers"]
        mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
        assert storage and storage[0].startswith(mount["mountPath"] + "/")


def test_the_cluster_launcher_config_passes_rays_schema():
    import ray
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((INFRA / "aws" / "cluster.yaml").read_text())
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(config)]
    assert not errors, errors
    validate_config(prepare_config(config))  # what `ray up` runs first


def test_the_launcher_uses_instance_roles_and_a_gpu_worker_type():
    config = yaml.safe_load((INFRA / "aws" / "cluster.yaml").read_text())
    text = (INFRA / "aws" / "cluster.yaml").read_text()
    assert "AWS_SECRET_ACCESS_KEY" not in text and "aws_access_key_id" not in text.lower()
    for name, node in config["available_node_types"].items():
        assert node["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::"), name
    workers = [n for k, n in config["available_node_types"].items() if k != config["head_node_type"]]
    assert any(n["node_config"]["InstanceType"].startswith(("g", "p")) for n in workers)
    assert config["docker"]["worker_run_options"] == ["--gpus all"]
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}
    # The env file holds the Ray token; the file it is copied from is an example with placeholders only.
    (target,) = config["file_mounts"]
    assert all(f". ~/{os.path.basename(target)}" in " ".join(config[k]) for k in
               ("head_start_ray_commands", "worker_start_ray_commands"))
    example = (INFRA / "aws" / "cluster.env.example").read_text()
    assert "RAY_AUTH_TOKEN=REPLACE-ME" in example and "RAY_AUTH_MODE=token" in example
