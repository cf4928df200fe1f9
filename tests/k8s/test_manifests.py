"""The Kubernetes manifests: every overlay renders, validates offline, and keeps the invariants.

The invariants are the ones an operator relies on and a reviewer easily misses: every
container has requests and limits, every long-running one has probes, the Kafka topics are
exactly the catalogue of ``core.topics``, the Bytewax StatefulSets can form a cluster and
recover, and only the gateway and the API are reachable from outside the namespace.
"""

from __future__ import annotations

import base64
import copy
import os
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from core.config import Settings
from core.topics import PLANS_SITE, TELEMETRY_RAW, TOPICS, WORKFLOW_EVENTS, WORKFLOW_TASKS
from tests.k8s.manifests import (
    K8S,
    OVERLAYS,
    Obj,
    containers,
    env_value,
    label,
    named,
    of_kind,
    overlay,
    pod_spec,
    render,
    runs_project_image,
    validate,
    workloads,
)

# Pods published outside the namespace, and the container ports they publish.
EXTERNAL = {"edge-gateway": {8765}, "api": {8000}}
# Ports Prometheus (from the monitoring namespace) may scrape.
METRICS_PORTS = {9108, 8000, 3030, 9404}
# The dataflows and the topic each one's parallelism is bounded by.
DATAFLOWS = {"dataflows.telemetry:flow": TELEMETRY_RAW, "dataflows.control:flow": None,
             "dataflows.plans:flow": PLANS_SITE, "dataflows.bidding:flow": WORKFLOW_EVENTS}
# Dataflows whose whole state is one key (one PlanDesk): more processes would idle, so prod keeps one.
SINGLE_KEY_DATAFLOWS = {"plans"}
# Parts of `vpp up` (vpp/services.py) with no workload: the simulated fleet stands in for devices, which
# connect from outside the cluster; the simulated market runs in the dev overlay only.
NOT_DEPLOYED = {"prod": {"simulator", "market"}, "dev": {"simulator"}}
# Secrets created out of band (docs/deploy.md, Secrets): the token keys in every overlay (a key in
# git would be a usable default), the rest in prod only.
TOKEN_SECRETS = "vpp-token-secrets"
PROD_EXTERNAL_SECRETS = {"vpp-secrets", "vpp-api-tls", TOKEN_SECRETS}
DEV_EXTERNAL_SECRETS = {TOKEN_SECRETS}
# envFrom keys and the kinds they name.
_REF_KINDS = {"configMapRef": "ConfigMap", "secretRef": "Secret"}


@pytest.fixture(params=OVERLAYS)
def objects(request: pytest.FixtureRequest) -> tuple[Obj, ...]:
    """The rendered objects of each overlay in turn."""
    return overlay(request.param)


def settings_of(objects: tuple[Obj, ...], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The typed settings a pod of this overlay reads from vpp-config (and the Secret, if rendered)."""
    env = dict(named(objects, "ConfigMap", "vpp-config")["data"])
    for secret in of_kind(objects, "Secret"):
        env |= {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}
    for key in [key for key in os.environ if key.startswith("VPP_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def dataflow_sets(objects: tuple[Obj, ...]) -> list[Obj]:
    """The StatefulSets that run a Bytewax dataflow through deploy/run-dataflow.sh."""
    return [
        obj
        for obj in of_kind(objects, "StatefulSet")
        if any("run-dataflow.sh" in c.get("command", []) for c in containers(obj, init=False))
    ]


# -- rendering and schemas ---------------------------------------------------------------


def test_base_renders_on_its_own() -> None:
    """The base is a valid kustomization by itself (overlays only add to it)."""
    assert render(K8S / "base")


def test_every_object_validates(objects: tuple[Obj, ...]) -> None:
    """Built-in kinds against the Kubernetes OpenAPI schemas, CRs against k8s/crd-schemas."""
    for obj in objects:
        try:
            validate(obj)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as error:
            pytest.fail(f"{label(obj)}: {'.'.join(map(str, error.path))}: {error.message}")


@pytest.mark.parametrize("kind", ["Deployment", "KafkaTopic", "Kafka", "PodMonitor"])
def test_validation_rejects_a_misspelled_field(kind: str) -> None:
    """The schemas are strict: a field that does not exist fails, so typos cannot pass."""
    obj = copy.deepcopy(of_kind(overlay("dev"), kind)[0])
    obj["spec"]["replicaz"] = 1
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        validate(obj)


def test_overlays_set_namespace_and_image(objects: tuple[Obj, ...]) -> None:
    """Every namespaced object lands in the overlay's namespace; the project image is tagged."""
    (namespace,) = of_kind(objects, "Namespace")
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace["metadata"]["name"], label(obj)
    for workload in workloads(objects):
        for container in containers(workload, init=False) + containers(workload, init=True):
            image = container["image"]
            assert ":" in image.rpartition("/")[2] and not image.endswith(":latest"), image


# -- containers --------------------------------------------------------------------------


def test_every_container_has_requests_and_limits(objects: tuple[Obj, ...]) -> None:
    """Init containers too: the scheduler sizes a pod by its largest init container as well."""
    for workload in workloads(objects):
        for container in containers(workload, init=False) + containers(workload, init=True):
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), (
                    f"{label(workload)} container {container['name']} lacks {bound}"
                )


def test_every_long_running_container_has_probes(objects: tuple[Obj, ...]) -> None:
    """Deployments and StatefulSets run forever; a Job's container runs to completion."""
    for workload in workloads(objects):
        if workload["kind"] == "Job":
            continue
        for container in containers(workload, init=False):
            for probe in ("livenessProbe", "readinessProbe"):
                assert probe in container, f"{label(workload)} container {container['name']} lacks {probe}"


def test_project_pods_run_as_non_root(objects: tuple[Obj, ...]) -> None:
    """The image's user is 10001; the pods insist on a non-root user whatever the image says."""
    for workload in workloads(objects):
        if runs_project_image(workload):
            assert pod_spec(workload)["securityContext"]["runAsNonRoot"] is True, label(workload)


def test_referenced_configmaps_and_secrets_exist(objects: tuple[Obj, ...]) -> None:
    """A missing ConfigMap stops a pod from starting; only the documented Secrets are external."""
    present = {(obj["kind"], obj["metadata"]["name"]) for obj in objects}
    missing = {ref for ref in references(objects) if ref not in present}
    is_prod = objects == overlay("prod")
    external = PROD_EXTERNAL_SECRETS if is_prod else DEV_EXTERNAL_SECRETS
    assert missing == {("Secret", name) for name in external}


def test_no_token_key_is_in_git_and_the_gateway_and_api_require_theirs(objects: tuple[Obj, ...]) -> None:
    """Issue 20: no usable default secret; the pods that sign tokens cannot start without the keys."""
    for secret in of_kind(objects, "Secret"):
        keys = set(secret.get("data", {})) | set(secret.get("stringData", {}))
        assert not {k for k in keys if "TOKEN_SECRET" in k}, label(secret)
    for name in ("edge-gateway", "api"):
        (workload,) = [w for w in workloads(objects) if w["metadata"]["name"] == name]
        sources = [source for container in containers(workload, init=False)
                   for source in container.get("envFrom", [])]
        refs = [source["secretRef"] for source in sources if "secretRef" in source]
        assert {"name": TOKEN_SECRETS} in refs, name  # not optional: the pod waits for the Secret


def references(objects: tuple[Obj, ...]) -> set[tuple[str, str]]:
    """(kind, name) of every ConfigMap and Secret the workloads and the Ingress refer to."""
    refs: set[tuple[str, str]] = set()
    for workload in workloads(objects):
        for container in containers(workload, init=False) + containers(workload, init=True):
            for source in container.get("envFrom", []):
                refs |= {(kind, source[key]["name"]) for key, kind in _REF_KINDS.items() if key in source}
            for entry in container.get("env", []):
                value_from = entry.get("valueFrom", {})
                for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    if key in value_from:
                        refs.add((kind, value_from[key]["name"]))
    for ingress in of_kind(objects, "Ingress"):
        refs |= {("Secret", tls["secretName"]) for tls in ingress["spec"].get("tls", [])}
    return refs


# -- Kafka -------------------------------------------------------------------------------


def test_every_topic_has_a_kafka_topic(objects: tuple[Obj, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    """Names, compaction and configs from core.topics; sizes as the pods' settings say."""
    settings = settings_of(objects, monkeypatch)
    (kafka,) = of_kind(objects, "Kafka")
    by_name = {obj["spec"]["topicName"]: obj for obj in of_kind(objects, "KafkaTopic")}
    assert set(by_name) == {spec.name for spec in TOPICS}
    for spec in TOPICS:
        topic = by_name[spec.name]
        config = topic["spec"].get("config", {})
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        assert topic["spec"]["partitions"] == settings.partitions_of(spec.name), spec.name
        assert topic["spec"]["replicas"] == settings.replication_factor, spec.name
        assert spec.topic_configs().items() <= config.items(), spec.name
        assert (config.get("cleanup.policy") == "compact") == spec.compacted, spec.name
        assert spec.compacted or "retention.ms" in config, f"{spec.name} has no retention"


def test_kafka_runs_kraft_with_node_pools(objects: tuple[Obj, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    """No ZooKeeper: the brokers come from node pools, and the clients find the bootstrap Service."""
    (kafka,) = of_kind(objects, "Kafka")
    name = kafka["metadata"]["name"]
    annotations = kafka["metadata"]["annotations"]
    assert annotations["strimzi.io/kraft"] == annotations["strimzi.io/node-pools"] == "enabled"
    pools = of_kind(objects, "KafkaNodePool")
    assert pools and all(pool["metadata"]["labels"]["strimzi.io/cluster"] == name for pool in pools)
    assert {"controller", "broker"} <= {role for pool in pools for role in pool["spec"]["roles"]}
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    assert settings_of(objects, monkeypatch).kafka == f"{name}-kafka-bootstrap:{listener['port']}"


def test_prod_replicates_kafka_and_dev_stays_small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dev: one broker, replication 1. Prod: three brokers, replication 3, two in sync."""
    for name, brokers in (("dev", 1), ("prod", 3)):
        objects = overlay(name)
        (pool,) = of_kind(objects, "KafkaNodePool")
        assert pool["spec"]["replicas"] == brokers
        assert {topic["spec"]["replicas"] for topic in of_kind(objects, "KafkaTopic")} == {brokers}
        config = of_kind(objects, "Kafka")[0]["spec"]["kafka"]["config"]
        assert config["default.replication.factor"] == brokers
        assert config["min.insync.replicas"] == max(1, brokers - 1)


# -- dataflows ---------------------------------------------------------------------------


def test_every_dataflow_runs(objects: tuple[Obj, ...]) -> None:
    """One StatefulSet per dataflow of the platform."""
    flows = {containers(obj, init=False)[0]["command"][-1] for obj in dataflow_sets(objects)}
    assert flows == set(DATAFLOWS)


def test_dataflow_process_id_comes_from_the_pod_ordinal(objects: tuple[Obj, ...]) -> None:
    """run-dataflow.sh reads POD_INDEX (the StatefulSet's pod-index label), else the HOSTNAME suffix."""
    for sts in dataflow_sets(objects):
        for container in containers(sts, init=False) + containers(sts, init=True):
            field = env_value(container, "POD_INDEX")["valueFrom"]["fieldRef"]["fieldPath"]
            assert field == "metadata.labels['apps.kubernetes.io/pod-index']", label(sts)
        main = containers(sts, init=False)[0]
        assert env_value(main, "POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
        assert main["command"][:2] == ["run-dataflow.sh", "run"]


def test_dataflows_have_a_headless_service(objects: tuple[Obj, ...]) -> None:
    """Peers resolve as <pod>.<service>; DNS must publish them before they are ready.

    The processes start together and restart together: a cluster forms only when all are up.
    """
    for sts in dataflow_sets(objects):
        service = named(objects, "Service", sts["spec"]["serviceName"])
        assert service["spec"]["clusterIP"] == "None", label(service)
        assert service["spec"]["publishNotReadyAddresses"] is True, label(service)
        pod_labels = sts["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items(), label(service)
        assert 2101 in {port["port"] for port in service["spec"]["ports"]}
        main = containers(sts, init=False)[0]
        assert env_value(main, "DATAFLOW_SERVICE")["value"] == service["metadata"]["name"]
        assert sts["spec"]["podManagementPolicy"] == "Parallel", label(sts)
        assert sts["spec"]["updateStrategy"] == {"type": "OnDelete"}, label(sts)


def test_dataflow_recovery_lives_on_claimed_volumes(objects: tuple[Obj, ...]) -> None:
    """Each pod's recovery partition is on its own PersistentVolumeClaim, created by the init container."""
    recovery_dir = named(objects, "ConfigMap", "dataflow-config")["data"]["BYTEWAX_RECOVERY_DIRECTORY"]
    for sts in dataflow_sets(objects):
        claims = {claim["metadata"]["name"] for claim in sts["spec"]["volumeClaimTemplates"]}
        (init,) = containers(sts, init=True)
        assert init["command"] == ["run-dataflow.sh", "init"], label(sts)
        for container in (init, containers(sts, init=False)[0]):
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get(recovery_dir) in claims, f"{label(sts)} {container['name']}"


def test_dataflow_process_counts_agree(objects: tuple[Obj, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    """Replicas = DATAFLOW_PROCESSES; every partition is owned (partitions <= processes); no idle input."""
    settings = settings_of(objects, monkeypatch)
    for sts in dataflow_sets(objects):
        main = containers(sts, init=False)[0]
        (init,) = containers(sts, init=True)
        processes = int(env_value(main, "DATAFLOW_PROCESSES")["value"])
        partitions = int(env_value(init, "DATAFLOW_RECOVERY_PARTITIONS")["value"])
        assert sts["spec"]["replicas"] == processes, label(sts)
        assert 1 <= partitions <= processes, label(sts)
        topic = DATAFLOWS[main["command"][-1]]
        assert topic is None or processes <= settings.partitions_of(topic), label(sts)


def test_dataflows_are_probed_on_their_own_readiness_and_liveness(objects: tuple[Obj, ...],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Not Bytewax's /metrics (it answers while the flow waits on a dead Redis): the flow's /readyz
    and /livez, on the port its settings bind, on every interface."""
    settings = settings_of(objects, monkeypatch)
    config = named(objects, "ConfigMap", "dataflow-config")["data"]
    flows = {"dataflows.telemetry:flow": "VPP_TELEMETRY_PROBE_PORT",
             "dataflows.control:flow": "VPP_CONTROL_PROBE_PORT",
             "dataflows.plans:flow": "VPP_PLANS_PROBE_PORT",
             "dataflows.bidding:flow": "VPP_BIDDING_PROBE_PORT"}
    assert settings.host == "0.0.0.0"
    for sts in dataflow_sets(objects):
        main = containers(sts, init=False)[0]
        ports = {port["name"]: port["containerPort"] for port in main["ports"]}
        assert ports["probes"] == int(config[flows[main["command"][-1]]]), label(sts)
        assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "probes"}, label(sts)
        assert main["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "probes"}, label(sts)


def test_prod_runs_more_dataflow_processes() -> None:
    """Prod scales the dataflows out; dev runs one process each."""
    dev = {obj["metadata"]["name"]: obj["spec"]["replicas"] for obj in dataflow_sets(overlay("dev"))}
    prod = {obj["metadata"]["name"]: obj["spec"]["replicas"] for obj in dataflow_sets(overlay("prod"))}
    assert set(dev.values()) == {1}
    assert all(prod[name] > 1 for name in dev if name not in SINGLE_KEY_DATAFLOWS)
    assert all(prod[name] == 1 for name in SINGLE_KEY_DATAFLOWS)


def _what_runs(argv: list[str]) -> str:
    """A process's identity across the two columns: its dataflow, else its command after the interpreter."""
    flows = [arg for arg in argv if arg.endswith(":flow")]
    return flows[0] if flows else " ".join(argv[1:])


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_long_running_part_of_vpp_up_has_a_workload(name: str) -> None:
    """What `vpp up` runs locally runs in the cluster too (issues 15, 16: bidding, plans, forecast)."""
    from vpp.services import Services

    objects = overlay(name)
    deployed = {_what_runs(containers(w, init=False)[0].get("command", []))
                for w in workloads(objects) if w["kind"] != "Job"}
    local = {service.name: _what_runs(service.argv()) for service in Services(Settings()).services()}
    missing = {part for part, runs in local.items() if runs not in deployed}
    assert missing == NOT_DEPLOYED[name]


def test_bidding_workers_are_a_pool_and_the_orchestrator_recovers(objects: tuple[Obj, ...],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Several worker pods of one consumer group (the group id is in the code, not per pod), no more
    than workflow.tasks has partitions; the orchestrator is a recovering dataflow; the simulated market
    is a dev-only part."""
    workers = named(objects, "Deployment", "bid-worker")
    assert 1 < workers["spec"]["replicas"] <= settings_of(objects, monkeypatch).partitions_of(WORKFLOW_TASKS)
    (worker,) = containers(workers, init=False)
    assert worker["command"][-2:] == ["bid", "worker"]
    assert not [e for e in worker.get("env", []) if "GROUP" in e["name"]], "one group for every pod"
    orchestrator = named(objects, "StatefulSet", "bidding")
    assert orchestrator in dataflow_sets(objects) and orchestrator["spec"]["volumeClaimTemplates"]
    markets = [w for w in workloads(objects) if w["metadata"]["name"] == "market"]
    assert len(markets) == (objects == overlay("dev"))


# -- exposure ----------------------------------------------------------------------------


def test_only_gateway_and_api_are_exposed(objects: tuple[Obj, ...]) -> None:
    """Only the gateway has an external Service; only the API is behind an Ingress."""
    exposed = {
        svc["metadata"]["name"]
        for svc in of_kind(objects, "Service")
        if svc["spec"].get("type") in ("LoadBalancer", "NodePort") or svc["spec"].get("externalIPs")
    }
    assert exposed == {"edge-gateway"}
    backends = {
        path["backend"]["service"]["name"]
        for ingress in of_kind(objects, "Ingress")
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert backends == {"api"}


def test_network_policies_deny_by_default(objects: tuple[Obj, ...]) -> None:
    """A policy selecting every pod with no ingress rule isolates the namespace."""
    assert any(
        policy["spec"]["podSelector"] == {}
        and "Ingress" in policy["spec"]["policyTypes"]
        and not policy["spec"].get("ingress")
        for policy in of_kind(objects, "NetworkPolicy")
    )


def test_network_policies_admit_outsiders_only_to_gateway_and_api(objects: tuple[Obj, ...]) -> None:
    """A rule open to other namespaces or addresses targets the gateway/API ports, or metrics."""
    for policy in of_kind(objects, "NetworkPolicy"):
        target = policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
        for rule in policy["spec"].get("ingress", []):
            if not admits_outsiders(rule):
                continue
            ports = {port["port"] for port in rule.get("ports", [])}
            if target in EXTERNAL:
                assert ports and ports <= EXTERNAL[target], label(policy)
            else:
                assert ports and ports <= METRICS_PORTS, label(policy)
                assert all("namespaceSelector" in peer for peer in rule["from"]), label(policy)


def admits_outsiders(rule: dict[str, Any]) -> bool:
    """True for a rule with no source restriction or a peer outside the namespace."""
    peers = rule.get("from")
    return not peers or any("namespaceSelector" in peer or "ipBlock" in peer for peer in peers)


def test_gateway_scales_and_survives_disruption(objects: tuple[Obj, ...]) -> None:
    """An autoscaler owns the gateway's replica count; a budget keeps it up through node drains."""
    (hpa,) = of_kind(objects, "HorizontalPodAutoscaler")
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "edge-gateway"}
    assert hpa["spec"]["scaleTargetRef"] == target
    assert "replicas" not in named(objects, "Deployment", "edge-gateway")["spec"]
    (pdb,) = of_kind(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "edge-gateway"}


# -- monitoring --------------------------------------------------------------------------


def test_prometheus_scrapes_every_project_process(objects: tuple[Obj, ...]) -> None:
    """Each long-running project pod matches a PodMonitor on a port it declares."""
    monitors = of_kind(objects, "PodMonitor")
    for workload in workloads(objects):
        if workload["kind"] == "Job" or not runs_project_image(workload):
            continue
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        ports = {port["name"] for c in containers(workload, init=False) for port in c.get("ports", [])}
        assert any(
            selects(monitor["spec"]["selector"], pod_labels)
            and any(endpoint["port"] in ports for endpoint in monitor["spec"]["podMetricsEndpoints"])
            for monitor in monitors
        ), label(workload)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, In/NotIn/Exists/DoesNotExist) selects ``labels``."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    tests = {
        "In": lambda e: labels.get(e["key"]) in e["values"],
        "NotIn": lambda e: labels.get(e["key"]) not in e["values"],
        "Exists": lambda e: e["key"] in labels,
        "DoesNotExist": lambda e: e["key"] not in labels,
    }
    return all(tests[expr["operator"]](expr) for expr in selector.get("matchExpressions", []))


def test_pods_log_one_json_object_per_line(objects: tuple[Obj, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    """A cluster's log shipper reads JSON lines: every platform process gets VPP_LOG_FORMAT=json."""
    settings = settings_of(objects, monkeypatch)
    assert (settings.log_format, settings.log_level) == ("json", "INFO")
