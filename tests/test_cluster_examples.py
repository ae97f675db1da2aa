"""The deployment examples under benchmarks/cluster/ parse, match the pinned Ray, pass the same token to
every node and mount one shared folder everywhere; the `ray up` file passes Ray's own launcher schema."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import jsonschema
import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "benchmarks" / "cluster"


def _load(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


def test_every_example_is_valid_yaml() -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert {f.name for f in files} >= {"kuberay-raycluster.yaml", "ray-up.yaml"}
    for f in files:
        assert isinstance(yaml.safe_load(f.read_text()), dict), f


def test_kuberay_cluster_shape() -> None:
    doc = _load("kuberay-raycluster.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    spec = doc["spec"]
    assert spec["rayVersion"] == version("ray")
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    assert len(pods) >= 2
    secrets = set()
    for pod in pods:
        for container in pod["containers"]:
            env = {e["name"]: e for e in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            secrets.add(env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"])
            assert {m["mountPath"] for m in container["volumeMounts"]} == {"/shared"}
        assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert len(secrets) == 1  # one token for every node
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")]
    assert gpu_groups and all(g["template"]["spec"].get("nodeSelector") for g in gpu_groups)


def test_ray_up_config_passes_rays_launcher_schema() -> None:
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    doc = _load("ray-up.yaml")
    jsonschema.validate(doc, schema)
    assert doc["head_node_type"] in doc["available_node_types"]
    assert "~/.ray/auth_token" in doc["file_mounts"]
    assert all("RAY_AUTH_MODE=token" in c for c in (*doc["head_start_ray_commands"][1:],
                                                     *doc["worker_start_ray_commands"][1:]))
    broken = {**doc, "available_node_types": {**doc["available_node_types"], "head": {
        **doc["available_node_types"]["head"], "bogus": 1}}}
    with pytest.raises(jsonschema.ValidationError):  # the schema really checks the file's fields
        jsonschema.validate(broken, schema)
