"""Rendering helpers of the deploy tests: helm template and kustomize, parsed and validated."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import yaml

from tests.cluster import CHART, Tools, run
from tests.infra import ROOT

KUBE_VERSION = "1.34.4"
WORKLOAD_KINDS = {"Deployment", "CronJob", "Job"}


def helm_template(tools: Tools, *args: str, check: bool = True) -> Any:
    """``helm template`` of the chart with extra arguments; the parsed objects (or the result)."""
    out = run(
        [tools.helm, "template", "t", str(CHART), "--namespace", "ns", "--kube-version",
         KUBE_VERSION, *args],
        env=tools.env(),
        check=check,
    )  # fmt: skip
    if not check:
        return out
    return parse(out.stdout)


def kustomize(tools: Tools, overlay: str) -> list[dict[str, Any]]:
    """``kubectl kustomize k8s/overlays/<overlay>``, parsed."""
    out = run(
        [tools.kubectl, "kustomize", str(ROOT / "k8s" / "overlays" / overlay)], env=tools.env()
    )
    return parse(out.stdout)


def parse(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a render."""
    return [d for d in yaml.safe_load_all(text) if d]


def validate_strict(objects: list[dict[str, Any]]) -> None:
    """Every object against Kubernetes 1.34's schema, unknown fields and wrong types rejected."""
    import kubernetes_validate

    for obj in objects:
        try:
            kubernetes_validate.validate(obj, "1.34", strict=True)
        except kubernetes_validate.ValidationError as exc:
            name = f"{obj['kind']}/{obj['metadata']['name']}"
            raise AssertionError(f"{name}: {exc.message} at {list(exc.path)}") from None


def find(objects: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    """The one object of ``kind`` whose name ends with ``suffix``."""
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"{kind} *{suffix}: {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, pod spec) of every workload."""
    for obj in objects:
        if obj["kind"] == "CronJob":
            yield obj["metadata"]["name"], obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif obj["kind"] in WORKLOAD_KINDS:
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def dumps(obj: Any) -> str:
    """Compact JSON for assertion messages."""
    return json.dumps(obj, sort_keys=True)[:2000]
