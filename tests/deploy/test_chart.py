"""The Helm chart: lint, render over several value sets, strict schemas, and what it promises
(hardening, probes, resources, labels, RBAC, the trainer's CronJob, weight validation)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.cluster import CHART, Tools, run
from tests.deploy.render import dumps, find, helm_template, pod_specs, validate_strict

pytestmark = pytest.mark.integration  # helm is built from the Go module proxy (cached)

VALUE_SETS: dict[str, list[str]] = {
    "defaults": [],
    "development": [
        "--set", "simulator.enabled=true",
        "--set", "recommender.autoscaling.enabled=false",
        "--set", "router.autoscaling.enabled=false",
        "--set", "recommender.usersApiUrl=http://sim:8080",
        "--set", "ingest.enrichUrl=http://sim:8080",
        "--set", "experiment.canaryWeight=50",
    ],
    "production": [
        "--set", "image.registry=registry.example.com",
        "--set", "image.tag=1.2.3",
        "--set", "modelSigning.existingSecret=model-key",
        "--set", "monitor.databaseUrlSecret=monitor-db",
        "--set", "persistence.events.storageClassName=shared-rwx",
        "--set", "persistence.registry.storageClassName=shared-rwx",
        "--set-json", "experiment.exposure=0.05",
        "--set", "kafka.bootstrapServers=kafka-0:9092\\,kafka-1:9092",
    ],
    "minimal": [
        "--set", "recommender.canary.enabled=false",
        "--set", "experiment.canaryWeight=0",
        "--set", "monitor.enabled=false",
        "--set", "prometheus.enabled=false",
        "--set", "trainer.enabled=false",
        "--set", "networkPolicy.enabled=false",
        "--set", "grafana.dashboards.enabled=false",
    ],
    "three-arms": [
        "--set-json",
        'experiment.arms=[{"name":"control","url":"http://a:8082","weight":50},'
        '{"name":"als","url":"http://b:8082","weight":25,"model":"als","channel":"canary"},'
        '{"name":"knn","url":"http://c:8082","weight":25}]',
        "--set", "experiment.mode=split",
    ],
}  # fmt: skip

RECOMMENDED = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)


@pytest.fixture(scope="module")
def rendered(tools: Tools) -> dict[str, list[dict[str, Any]]]:
    """Every value set rendered once."""
    return {name: helm_template(tools, *args) for name, args in VALUE_SETS.items()}


def test_helm_lint_strict(tools: Tools) -> None:
    out = run([tools.helm, "lint", "--strict", str(CHART)], env=tools.env())
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_every_rendered_object_passes_strict_schema(
    rendered: dict[str, list[dict[str, Any]]], values: str
) -> None:
    objects = rendered[values]
    assert len(objects) >= 15
    validate_strict(objects)


def test_strict_validation_rejects_an_unknown_field(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The validation above can fail: a typo'd field is caught."""
    deployment = find(rendered["defaults"], "Deployment", "-router")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(AssertionError, match="readinesProbe"):
        validate_strict([deployment])


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_the_experiment_configmap_is_one_the_router_accepts(
    rendered: dict[str, list[dict[str, Any]]], values: str
) -> None:
    from services.router.config import parse_config

    cm = find(rendered[values], "ConfigMap", "-experiment")
    experiment = parse_config(cm["data"]["experiment.yaml"], "configmap")
    assert sum(arm.weight for arm in experiment.arms) == pytest.approx(100)


def test_canary_weight_sets_the_split(tools: Tools) -> None:
    from services.router.config import parse_config

    objects = helm_template(tools, "--set", "experiment.canaryWeight=35")
    experiment = parse_config(find(objects, "ConfigMap", "-experiment")["data"]["experiment.yaml"])
    weights = {arm.name: arm.weight for arm in experiment.arms}
    assert weights == {"control": 65, "canary": 35}
    urls = {arm.name: arm.url for arm in experiment.arms}
    assert urls["canary"] == "http://t-marquee-recommender-canary:8082"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "experiment.canaryWeight=150"], "canaryWeight"),
        (["--set-json", "experiment.exposure=1.5"], "exposure"),
        (
            ["--set-json", 'experiment.arms=[{"name":"control","url":"http://a:1","weight":40},'
             '{"name":"b","url":"http://b:1","weight":50}]'],
            "arm weights add up to 90, not 100",
        ),
        (["--set", "recommender.canary.enabled=false"], "canaryWeight is 10 but"),
        (["--set", "experiment.status=shipped"], "status"),
        (["--set", "routre.replicas=3"], "routre"),
    ],
    ids=["weight-over-100", "exposure-over-1", "weights-sum-90", "canary-off", "bad-status",
         "typo"],
)  # fmt: skip
def test_bad_values_fail_the_render(tools: Tools, args: list[str], message: str) -> None:
    out = helm_template(tools, *args, check=False)
    assert out.returncode != 0
    assert message in out.stderr


def test_workloads_are_hardened_probed_and_sized(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for values, objects in rendered.items():
        for name, spec in pod_specs(objects):
            pod_sc = spec["securityContext"]
            assert pod_sc["runAsNonRoot"] is True, (values, name)
            assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", (values, name)
            for c in spec["containers"]:
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True, (values, name)
                assert sc["allowPrivilegeEscalation"] is False, (values, name)
                assert sc["capabilities"]["drop"] == ["ALL"], (values, name)
                assert {"cpu", "memory"} <= set(c["resources"]["requests"]), (values, name)
                assert "memory" in c["resources"]["limits"], (values, name)
                assert not c["image"].endswith(":latest"), (values, name)
                envs = [e["name"] for e in c.get("env", [])]
                assert len(envs) == len(set(envs)), f"{name}: duplicate env {envs}"
                if c.get("ports") and "marquee" in c["image"]:
                    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", name
                    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", name


def test_public_binds_are_explicit(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Services bind loopback by default: every server in the chart says 0.0.0.0 itself."""
    objects = rendered["development"]
    for suffix in ("-recommender-stable", "-recommender-canary", "-router"):
        c = find(objects, "Deployment", suffix)["spec"]["template"]["spec"]["containers"][0]
        assert c["args"] == ["--bind", "0.0.0.0:8082"]
    envs = {
        suffix: {
            e["name"]: e.get("value")
            for e in find(objects, "Deployment", suffix)["spec"]["template"]["spec"]["containers"][
                0
            ]["env"]
        }
        for suffix in ("-ingest", "-monitor")
    }
    assert envs["-ingest"]["MARQUEE_INGEST_HTTP_HOST"] == "0.0.0.0"
    assert envs["-monitor"]["MARQUEE_MONITOR_HTTP_HOST"] == "0.0.0.0"
    sim = find(objects, "Deployment", "-simulator")["spec"]["template"]["spec"]["containers"][0]
    assert sim["args"][:3] == ["api", "--host", "0.0.0.0"]


def test_every_object_carries_the_recommended_labels(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for obj in rendered["defaults"]:
        labels = obj["metadata"]["labels"]
        missing = [k for k in RECOMMENDED if k not in labels]
        assert not missing, f"{obj['kind']}/{obj['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/instance"] == "t"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_trainer_is_a_forbidding_cronjob_running_the_cli(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    from tests.infra import ROOT

    cron = find(rendered["defaults"], "CronJob", "-trainer")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["successfulJobsHistoryLimit"] == 3
    assert cron["spec"]["failedJobsHistoryLimit"] == 3
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    # The trainer image's entrypoint is `marquee train` (deploy/Containerfile): together,
    # exactly `marquee train --snapshot latest --register canary`.
    containerfile = (ROOT / "deploy" / "Containerfile").read_text()
    trainer_stage = containerfile.split("AS trainer", 1)[1]
    assert 'ENTRYPOINT ["marquee", "train"]' in trainer_stage
    assert container["args"] == ["--snapshot", "latest", "--register", "canary"]
    assert container["image"].endswith("/marquee-trainer:0.1.0")


def test_scaling_objects(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["defaults"]
    hpas = {
        o["spec"]["scaleTargetRef"]["name"]
        for o in objects
        if o["kind"] == "HorizontalPodAutoscaler"
    }
    assert hpas == {"t-marquee-router", "t-marquee-recommender-stable"}
    pdbs = {o["metadata"]["name"] for o in objects if o["kind"] == "PodDisruptionBudget"}
    assert {"t-marquee-router", "t-marquee-recommender-stable"} <= pdbs
    # The HPA owns the replica count: the Deployment must not fight it on every upgrade.
    assert "replicas" not in find(objects, "Deployment", "-router")["spec"]
    ingest = find(objects, "Deployment", "-ingest")
    assert ingest["spec"]["replicas"] == 1 and ingest["spec"]["strategy"]["type"] == "Recreate"


def test_monitor_may_patch_only_the_experiment(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["defaults"]
    role = find(objects, "Role", "-monitor")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["t-marquee-experiment"],
            "verbs": ["get", "patch"],
        }
    ]
    binding = find(objects, "RoleBinding", "-monitor")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "t-marquee-monitor", "namespace": "ns"}
    ]
    tokens = {
        o["metadata"]["name"]: o["automountServiceAccountToken"]
        for o in objects
        if o["kind"] == "ServiceAccount"
    }
    assert [n for n, mounted in tokens.items() if mounted] == [
        "t-marquee-monitor",
        "t-marquee-prometheus",
    ]


def test_helm_test_hook_asks_the_router(rendered: dict[str, list[dict[str, Any]]]) -> None:
    job = find(rendered["defaults"], "Job", "-test-recommendation")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "test"
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-1] == "http://t-marquee-router:8082/recommend/1"


def test_prometheus_and_dashboards_ship_the_repository_files(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["defaults"]
    prom = find(objects, "ConfigMap", "-prometheus")
    for path in (CHART / "files" / "prometheus" / "rules").glob("*.rules.yml"):
        assert prom["data"][path.name] == path.read_text()
    config = prom["data"]["prometheus.yml"]
    assert "kubernetes_sd_configs" in config and "/etc/prometheus/config/*.rules.yml" in config
    boards = find(objects, "ConfigMap", "-dashboards")
    assert boards["metadata"]["labels"]["grafana_dashboard"] == "1"
    names = {p.name for p in (CHART / "files" / "grafana" / "dashboards").glob("*.json")}
    assert set(boards["data"]) == names and len(names) == 3


def test_network_policies_default_deny_and_open_the_router(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["defaults"]
    deny = find(objects, "NetworkPolicy", "-default-deny")
    assert deny["spec"]["policyTypes"] == ["Ingress"] and "ingress" not in deny["spec"]
    reco = find(objects, "NetworkPolicy", "-recommender")
    sources = [
        p["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for p in reco["spec"]["ingress"][0]["from"]
    ]
    assert sources == ["router", "prometheus"]
    assert dumps(find(objects, "NetworkPolicy", "-router")["spec"]["ingress"]) == dumps(
        [{"ports": [{"port": 8082, "protocol": "TCP"}]}]
    )


def test_chart_prometheus_config_passes_promtool(
    rendered: dict[str, list[dict[str, Any]]], tools: Tools, tmp_path: Any
) -> None:
    """promtool of the Prometheus the chart deploys (2.53, with Kubernetes discovery) accepts
    the scrape config and the rules it loads."""
    prom = find(rendered["defaults"], "ConfigMap", "-prometheus")
    for name, text in prom["data"].items():
        (tmp_path / name).write_text(text.replace("/etc/prometheus/config/", f"{tmp_path}/"))
    out = run(
        [str(tools.bin_dir / "promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
        env=tools.env(),
    )
    assert re.search(r"SUCCESS: \d+ rules found", out.stdout), out.stdout
