"""k8s/: the kustomize base is the chart's render, and the dev and prod overlays build into
valid, namespaced, hardened manifests."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cluster import Tools, run
from tests.deploy.render import find, kustomize, pod_specs, validate_strict
from tests.infra import ROOT

pytestmark = pytest.mark.integration  # helm and kubectl are built from the Go module proxy

CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "ClusterRole", "ClusterRoleBinding"}


@pytest.fixture(scope="module")
def overlays(tools: Tools) -> dict[str, list[dict[str, Any]]]:
    """Both overlays built once."""
    return {name: kustomize(tools, name) for name in ("dev", "prod")}


def test_base_is_the_charts_render(tools: Tools) -> None:
    out = run([str(ROOT / "scripts" / "k8s-base.sh"), "--check"], env=tools.env(), check=False)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlay_objects_pass_strict_schema(
    overlays: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    validate_strict(overlays[overlay])


@pytest.mark.parametrize(("overlay", "namespace"), [("dev", "marquee-dev"), ("prod", "marquee")])
def test_overlay_puts_everything_in_its_namespace(
    overlays: dict[str, list[dict[str, Any]]], overlay: str, namespace: str
) -> None:
    objects = overlays[overlay]
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"]["namespace"] == namespace, obj["metadata"]["name"]
    for kind in ("RoleBinding",):
        for binding in (o for o in objects if o["kind"] == kind):
            assert {s["namespace"] for s in binding["subjects"]} == {namespace}


def test_overlays_are_hardened_and_without_duplicate_settings(
    overlays: dict[str, list[dict[str, Any]]],
) -> None:
    for overlay, objects in overlays.items():
        for name, spec in pod_specs(objects):
            assert spec["securityContext"]["runAsNonRoot"] is True, (overlay, name)
            for c in spec["containers"]:
                assert c["securityContext"]["readOnlyRootFilesystem"] is True, (overlay, name)
                envs = [e["name"] for e in c.get("env", [])]
                assert len(envs) == len(set(envs)), (overlay, name, envs)


def test_dev_overlay_runs_small_with_the_simulator_on_local_volumes(
    overlays: dict[str, list[dict[str, Any]]],
) -> None:
    objects = overlays["dev"]
    assert find(objects, "Deployment", "marquee-simulator")["spec"]["replicas"] == 1
    for hpa in (o for o in objects if o["kind"] == "HorizontalPodAutoscaler"):
        assert hpa["spec"]["minReplicas"] == 1
    claims = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PersistentVolumeClaim"}
    volumes = [o for o in objects if o["kind"] == "PersistentVolume"]
    assert {v["spec"]["claimRef"]["name"] for v in volumes} == set(claims)
    for v in volumes:
        claim = claims[v["spec"]["claimRef"]["name"]]
        assert claim["spec"]["storageClassName"] == v["spec"]["storageClassName"]
        assert claim["spec"]["resources"]["requests"]["storage"] == v["spec"]["capacity"]["storage"]
    images = {c["image"] for _, s in pod_specs(objects) for c in s["containers"]}
    assert "localhost/marquee-recommender:dev" in images


def test_prod_overlay_uses_the_registry_and_a_database_secret(
    overlays: dict[str, list[dict[str, Any]]],
) -> None:
    objects = overlays["prod"]
    images = {c["image"] for _, s in pod_specs(objects) for c in s["containers"]}
    assert "registry.example.com/marquee/router:0.1.0" in images
    assert not any(i.startswith("localhost/") for i in images)
    monitor = find(objects, "Deployment", "marquee-monitor")["spec"]["template"]["spec"]
    db = [e for e in monitor["containers"][0]["env"] if e["name"] == "MARQUEE_MONITOR_DB_URL"]
    assert db == [
        {
            "name": "MARQUEE_MONITOR_DB_URL",
            "valueFrom": {"secretKeyRef": {"name": "marquee-monitor-db", "key": "url"}},
        }
    ]
    assert find(objects, "Deployment", "marquee-simulator")["spec"]["replicas"] == 0
    assert find(objects, "HorizontalPodAutoscaler", "marquee-router")["spec"]["minReplicas"] == 3
