"""Against a real kube-apiserver (kwok nodes schedule the Pods and report them Running): the dev
overlay applies and becomes available, the chart installs, upgrades (a canary weight change
rolls the router out) and passes `helm test`, the monitor's RBAC is exactly what it needs, the
monitor's cluster backend patches the experiment through the kubernetes client, and a server-side
dry run rejects a broken manifest."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.cluster import CHART, Cluster, run
from tests.deploy.render import find, kustomize
from tests.infra import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RELEASE = "it"
NAMESPACE = "helm-it"
STORAGE_CLASS = "kwok-local"


def local_volumes(namespace: str, release_prefix: str, sizes: dict[str, str]) -> str:
    """PersistentVolumes bound ahead to the chart's claims (kwok has no provisioner)."""
    docs = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"{namespace}-{name}"},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": STORAGE_CLASS,
                "persistentVolumeReclaimPolicy": "Delete",
                "claimRef": {"namespace": namespace, "name": f"{release_prefix}-{name}"},
                "hostPath": {"path": f"/var/lib/{namespace}/{name}"},
            },
        }
        for name, size in sizes.items()
    ]
    return yaml.safe_dump_all(docs)


@pytest.fixture(scope="module")
def release(cluster: Cluster) -> Iterator[str]:
    """The chart installed with --wait into its own namespace; the release's name prefix."""
    prefix = f"{RELEASE}-marquee"
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.kubectl(
        "apply", "-f", "-",
        input_text=local_volumes(NAMESPACE, prefix, {"events": "50Gi", "registry": "10Gi"}),
    )  # fmt: skip
    cluster.helm(
        "install", RELEASE, str(CHART), "-n", NAMESPACE, "--wait", "--timeout", "180s",
        "--set", "image.tag=dev",
        "--set", f"persistence.events.storageClassName={STORAGE_CLASS}",
        "--set", f"persistence.registry.storageClassName={STORAGE_CLASS}",
        timeout=300,
    )  # fmt: skip
    yield prefix
    cluster.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", check=False)


def deployments(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    """{name: Deployment} in a namespace."""
    items = cluster.kubectl_json("get", "deployments", "-n", namespace)["items"]
    return {d["metadata"]["name"]: d for d in items}


def test_dev_overlay_applies_and_every_deployment_becomes_available(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-k", str(ROOT / "k8s" / "overlays" / "dev"))
    cluster.kubectl(
        "wait", "-n", "marquee-dev", "--for=condition=Available", "deployment", "--all",
        "--timeout=180s",
    )  # fmt: skip
    names = set(deployments(cluster, "marquee-dev"))
    assert names == {
        "marquee-recommender-stable", "marquee-recommender-canary", "marquee-router",
        "marquee-ingest", "marquee-monitor", "marquee-simulator", "marquee-prometheus",
    }  # fmt: skip
    pods = cluster.kubectl_json("get", "pods", "-n", "marquee-dev")["items"]
    running = [p for p in pods if p["status"]["phase"] == "Running"]
    assert len(running) == len(names), [p["metadata"]["name"] for p in pods]
    claims = cluster.kubectl_json("get", "pvc", "-n", "marquee-dev")["items"]
    assert {c["status"]["phase"] for c in claims} == {"Bound"}
    assert cluster.kubectl_json("get", "cronjob", "marquee-trainer", "-n", "marquee-dev")


def test_helm_install_waits_for_every_deployment(cluster: Cluster, release: str) -> None:
    found = deployments(cluster, NAMESPACE)
    assert {f"{release}-router", f"{release}-recommender-stable", f"{release}-ingest"} <= set(found)
    for name, d in found.items():
        assert d["status"].get("availableReplicas", 0) >= 1, name
    status = json.loads(cluster.helm("status", RELEASE, "-n", NAMESPACE, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    notes = cluster.helm("get", "notes", RELEASE, "-n", NAMESPACE).stdout
    assert f"port-forward svc/{release}-router 8082:8082" in notes
    assert f"canary: 10% -> http://{release}-recommender-canary:8082" in notes


def test_helm_upgrade_of_the_canary_weight_rolls_the_router_out(
    cluster: Cluster, release: str
) -> None:
    router = f"{release}-router"
    before = deployments(cluster, NAMESPACE)[router]
    revision = int(before["metadata"]["annotations"]["deployment.kubernetes.io/revision"])
    cluster.helm(
        "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--reuse-values", "--wait",
        "--timeout", "180s", "--set", "experiment.canaryWeight=40",
    )  # fmt: skip
    cluster.kubectl("rollout", "status", f"deployment/{router}", "-n", NAMESPACE, "--timeout=120s")
    after = deployments(cluster, NAMESPACE)[router]
    revision_key = "deployment.kubernetes.io/revision"
    assert int(after["metadata"]["annotations"][revision_key]) == revision + 1
    assert (
        after["spec"]["template"]["metadata"]["annotations"]["checksum/experiment"]
        != before["spec"]["template"]["metadata"]["annotations"]["checksum/experiment"]
    )
    text = cluster.kubectl_json("get", "configmap", f"{release}-experiment", "-n", NAMESPACE)[
        "data"
    ]["experiment.yaml"]
    weights = {a["name"]: a["weight"] for a in yaml.safe_load(text)["arms"]}
    assert weights == {"control": 60, "canary": 40}
    # The old ReplicaSet is scaled away: every router pod runs the new template.
    sets = cluster.kubectl_json(
        "get", "replicasets", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=router"
    )["items"]
    live = [s for s in sets if s["spec"]["replicas"] > 0]
    assert len(live) == 1
    assert live[0]["metadata"]["annotations"][revision_key] == str(revision + 1)


def test_helm_test_hook_succeeds(cluster: Cluster, release: str) -> None:
    out = cluster.helm("test", RELEASE, "-n", NAMESPACE, "--timeout", "120s")
    assert "Phase:          Succeeded" in out.stdout


CAN_I = [
    ("patch", "configmap/{prefix}-experiment", "yes"),
    ("get", "configmap/{prefix}-experiment", "yes"),
    ("update", "configmap/{prefix}-experiment", "no"),
    ("delete", "configmap/{prefix}-experiment", "no"),
    ("patch", "configmap/{prefix}-prometheus", "no"),
    ("list", "configmaps", "no"),
    ("create", "configmaps", "no"),
    ("get", "secrets", "no"),
    ("patch", "deployment/{prefix}-router", "no"),
    ("create", "pods", "no"),
]


@pytest.mark.parametrize(("verb", "resource", "expected"), CAN_I)
def test_monitor_may_patch_the_experiment_and_nothing_else(
    cluster: Cluster, release: str, verb: str, resource: str, expected: str
) -> None:
    account = f"system:serviceaccount:{NAMESPACE}:{release}-monitor"
    out = cluster.kubectl(
        "auth", "can-i", verb, resource.format(prefix=release), "-n", NAMESPACE, "--as", account,
        check=False,
    )  # fmt: skip
    assert out.strip() == expected, (verb, resource)


def monitor_api(cluster: Cluster, release: str) -> Any:
    """A kubernetes CoreV1Api authenticated as the monitor's ServiceAccount (a real token)."""
    from kubernetes import client

    token = cluster.kubectl(
        "create", "token", f"{release}-monitor", "-n", NAMESPACE, "--duration=10m"
    ).strip()
    kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
    server = kubeconfig["clusters"][0]["cluster"]
    config = client.Configuration()
    config.host = server["server"]
    config.api_key = {"BearerToken": token}
    config.api_key_prefix = {"BearerToken": "Bearer"}
    if "certificate-authority-data" in server:
        ca = cluster.workdir / "ca.crt"
        ca.write_bytes(base64.b64decode(server["certificate-authority-data"]))
        config.ssl_ca_cert = str(ca)
    elif "certificate-authority" in server:
        config.ssl_ca_cert = server["certificate-authority"]
    else:
        config.verify_ssl = False
    return client.CoreV1Api(client.ApiClient(config))


def test_monitor_backend_patches_the_experiment_configmap(cluster: Cluster, release: str) -> None:
    from kubernetes.client.exceptions import ApiException

    from services.common.experiment import Status
    from services.monitor.actions import ConfigMapStore

    api = monitor_api(cluster, release)
    store = ConfigMapStore(NAMESPACE, f"{release}-experiment", api=api)
    current = store.read()
    assert current.status == "running"
    store.write(current.model_copy(update={"status": Status.PAUSED}))
    text = cluster.kubectl_json("get", "configmap", f"{release}-experiment", "-n", NAMESPACE)[
        "data"
    ]["experiment.yaml"]
    assert yaml.safe_load(text)["status"] == "paused"
    assert store.read().status == "paused"
    # The same credentials cannot touch any other ConfigMap.
    with pytest.raises(ApiException) as denied:
        ConfigMapStore(NAMESPACE, f"{release}-prometheus", api=api).write(current)
    assert denied.value.status == 403


def test_server_side_dry_run_rejects_a_broken_manifest(cluster: Cluster, tools: Any) -> None:
    objects = kustomize(tools, "dev")
    router = find(objects, "Deployment", "marquee-router")
    cluster.kubectl("create", "namespace", "dry-run")
    router["metadata"]["namespace"] = "dry-run"
    good = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input_text=json.dumps(router))
    assert "(server dry run)" in good
    # Labels the selector does not match: well-formed YAML, rejected by the API server.
    broken = json.loads(json.dumps(router))
    broken["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] = "other"
    out = run(
        [cluster.tools.kubectl, "apply", "--dry-run=server", "-f", "-"],
        env=cluster.env, input_text=json.dumps(broken), check=False,
    )  # fmt: skip
    assert out.returncode != 0
    assert "selector" in out.stderr and "does not match template" in out.stderr, out.stderr
    result = cluster.kubectl_json("get", "deployments", "-n", "dry-run")
    assert result["items"] == []  # nothing was created by either dry run
