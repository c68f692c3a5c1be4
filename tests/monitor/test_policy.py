"""Decisions: SRM stops, guardrails roll back early, significance promotes, ramps step up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.common.artifacts import MANIFEST_FILE, Registry
from services.common.experiment import Status
from services.monitor.actions import ConfigMapStore, FileConfigStore, apply, to_yaml
from services.monitor.analysis import analyze
from services.monitor.policy import Action, decide
from services.router.config import load_config
from tests.monitor.factory import config, state


def test_a_45_55_split_of_a_50_50_experiment_stops_for_srm() -> None:
    cfg = config()
    d = decide(cfg, analyze(state({"control": (4500, 0.2), "treatment": (5500, 0.3)}), cfg))
    assert d.action is Action.STOP_SRM
    assert d.numbers["srm_p"] < 0.001 and d.config is not None
    assert d.config.status is Status.PAUSED and not d.registry


def test_a_fair_split_raises_no_srm_alarm() -> None:
    cfg = config()
    a = analyze(state({"control": (5020, 0.2), "treatment": (4980, 0.2)}), cfg)
    assert a.srm["p_value"] > 0.1 and decide(cfg, a).action is not Action.STOP_SRM


def test_a_broken_treatment_is_rolled_back_by_guardrail_before_statistics_mature() -> None:
    cfg = config()
    st = state({"control": (120, 0.2), "treatment": (120, 0.2)}, errors={"treatment": 0.2})
    d = decide(cfg, analyze(st, cfg))
    assert d.action is Action.ROLLBACK and "error_rate" in d.reason
    assert d.config is not None and d.config.status is Status.ROLLED_BACK
    assert [(m.op, m.model, m.channel) for m in d.registry] == [("rollback", "als", "canary")]


def test_slow_treatment_breaks_the_latency_guardrail() -> None:
    cfg = config()
    st = state(
        {"control": (200, 0.2), "treatment": (200, 0.2)},
        latency_ms={"control": 120, "treatment": 900},
    )
    d = decide(cfg, analyze(st, cfg))
    assert d.action is Action.ROLLBACK and "latency_p99_ms" in d.reason
    assert d.numbers["check"] == "vs_control" and "control's 120" in d.reason
    assert (d.numbers["treatment"], d.numbers["control"], d.numbers["threshold"]) == (900, 120, 180)


@pytest.mark.parametrize(
    ("kind", "name"),
    [("errors", "error_rate"), ("fallbacks", "fallback_rate"), ("empty", "coverage")],
)
def test_a_treatment_worse_than_control_is_rolled_back_with_both_arms_in_the_reason(
    kind: str, name: str
) -> None:
    # Both arms suffer a shared 3 % (well under the backstops); treatment 8 % more on top.
    cfg = config()
    st = state(
        {"control": (1000, 0.2), "treatment": (1000, 0.2)},
        **{kind: {"control": 0.03, "treatment": 0.11}},
    )
    d = decide(cfg, analyze(st, cfg))
    assert d.action is Action.ROLLBACK and d.arm == "treatment" and name in d.reason
    assert d.config is not None and d.config.status is Status.ROLLED_BACK
    n = d.numbers
    assert n["guardrail"] == name and n["check"] == "vs_control" and n["p_value"] < 0.001
    assert f"control's {n['control']:.4g}" in d.reason and f"{n['treatment']:.4g}" in d.reason
    gap = n["treatment"] - n["control"]
    assert (gap if name != "coverage" else -gap) == pytest.approx(0.08, abs=0.025)
    assert n["requests"] >= 1000 and n["control_requests"] >= 1000


def test_both_arms_equally_degraded_roll_nothing_back() -> None:
    # A slow shared dependency: a quarter of both arms' answers are fallbacks, p99 at 900 ms.
    cfg = config()
    st = state(
        {"control": (300, 0.2), "treatment": (300, 0.2)},
        errors={"control": 0.05, "treatment": 0.05},
        fallbacks={"control": 0.25, "treatment": 0.25},
        latency_ms=900,
    )
    a = analyze(st, cfg)
    d = decide(cfg, a)
    assert d.action is Action.CONTINUE and not d.changes
    assert a.arm("treatment").fallback_rate > 0.2  # type: ignore[union-attr]


def test_a_treatment_worse_only_within_the_margin_is_not_rolled_back() -> None:
    cfg = config(policy={"min_users": 500, "guardrails": {"fallback_rate_margin": 0.05}})
    st = state(
        {"control": (1000, 0.2), "treatment": (1000, 0.2)},
        fallbacks={"control": 0.02, "treatment": 0.04},
    )
    d = decide(cfg, analyze(st, cfg))
    assert d.action is not Action.ROLLBACK


def test_the_absolute_limit_still_acts_when_control_is_as_bad() -> None:
    cfg = config()
    st = state(
        {"control": (300, 0.2), "treatment": (300, 0.2)},
        fallbacks={"control": 0.6, "treatment": 0.6},
    )
    d = decide(cfg, analyze(st, cfg))
    assert d.action is Action.ROLLBACK and d.numbers["check"] == "limit"
    assert "absolute limit 0.5" in d.reason and "control's" in d.reason
    assert d.numbers["control"] > 0.5 and d.numbers["treatment"] > 0.5


def test_guardrails_are_not_judged_on_few_requests() -> None:
    # About 120 requests per arm, under min_requests (200): not even a 50 % error rate counts.
    cfg = config()
    st = state({"control": (60, 0.2), "treatment": (60, 0.2)}, errors={"treatment": 0.5})
    assert decide(cfg, analyze(st, cfg)).action is Action.CONTINUE
    # The same arm over enough requests is rolled back.
    more = state({"control": (150, 0.2), "treatment": (150, 0.2)}, errors={"treatment": 0.5})
    assert decide(cfg, analyze(more, cfg)).action is Action.ROLLBACK


def test_a_clearly_better_treatment_is_promoted() -> None:
    cfg = config()
    d = decide(cfg, analyze(state({"control": (3000, 0.15), "treatment": (3000, 0.25)}), cfg))
    assert d.action is Action.PROMOTE and d.arm == "treatment"
    assert d.config is not None and d.config.status is Status.PROMOTED
    assert d.config.winner == "treatment"
    assert [(m.op, m.model, m.channel, m.version) for m in d.registry] == [
        ("promote", "als", "stable", "canary")
    ]


def test_a_clearly_worse_treatment_is_rolled_back() -> None:
    cfg = config()
    d = decide(cfg, analyze(state({"control": (3000, 0.25), "treatment": (3000, 0.15)}), cfg))
    assert d.action is Action.ROLLBACK and "worse" in d.reason


def test_no_verdict_before_min_users() -> None:
    cfg = config()
    d = decide(cfg, analyze(state({"control": (300, 0.1), "treatment": (300, 0.3)}), cfg))
    assert d.action is Action.CONTINUE


def test_exposure_ramps_step_by_step() -> None:
    cfg = config(exposure=0.01, policy={"ramp": [0.01, 0.05, 0.25, 0.5], "ramp_min_users": 100})
    st = state({"control": (150, 0.2), "treatment": (150, 0.2)})
    d = decide(cfg, analyze(st, cfg))
    assert d.action is Action.RAMP and d.config is not None and d.config.exposure == 0.05
    # Not again until ramp_min_users more users per arm arrive at the new step.
    d2 = decide(d.config, analyze(st, d.config), {"users_at_change": 150})
    assert d2.action is Action.CONTINUE


def test_planned_sample_without_a_verdict_stops_for_control() -> None:
    cfg = config(policy={"min_users": 500, "max_users": 2000})
    d = decide(cfg, analyze(state({"control": (2000, 0.2), "treatment": (2000, 0.2)}), cfg))
    assert d.action is Action.STOP_INCONCLUSIVE


def test_an_experiment_that_is_not_running_is_left_alone() -> None:
    cfg = config(status="paused")
    d = decide(cfg, analyze(state({"control": (3000, 0.1), "treatment": (3000, 0.3)}), cfg))
    assert d.action is Action.CONTINUE and not d.changes


def _registry(tmp_path: Path) -> Registry:
    reg = Registry(tmp_path / "models")
    for v in ("v1", "v2"):
        path = reg.path("als", v)
        path.mkdir(parents=True)
        (path / MANIFEST_FILE).write_text("{}")
    reg.set_channel("als", "stable", "v1")
    reg.set_channel("als", "canary", "v1")
    reg.set_channel("als", "canary", "v2")
    return reg


def test_promote_rewrites_the_config_the_router_reads_and_moves_the_registry(
    tmp_path: Path,
) -> None:
    cfg = config()
    path = tmp_path / "experiment.yaml"
    path.write_text(to_yaml(cfg))
    reg = _registry(tmp_path)
    d = decide(cfg, analyze(state({"control": (3000, 0.15), "treatment": (3000, 0.25)}), cfg))
    done = apply(d, FileConfigStore(path), reg, dry_run=False)
    assert done.config_written and not done.errors
    routed = load_config(path)  # the router accepts what the monitor wrote
    assert routed.status is Status.PROMOTED and routed.winner == "treatment"
    assert reg.channel("als", "stable") == "v2"


def test_rollback_moves_the_canary_pointer_back(tmp_path: Path) -> None:
    cfg = config()
    path = tmp_path / "experiment.yaml"
    path.write_text(to_yaml(cfg))
    reg = _registry(tmp_path)
    st = state({"control": (300, 0.2), "treatment": (300, 0.2)}, errors={"treatment": 0.5})
    done = apply(decide(cfg, analyze(st, cfg)), FileConfigStore(path), reg, dry_run=False)
    assert load_config(path).status is Status.ROLLED_BACK
    assert reg.channel("als", "canary") == "v1" and done.registry[0]["done"]


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    cfg = config()
    path = tmp_path / "experiment.yaml"
    path.write_text(to_yaml(cfg))
    before = path.read_bytes()
    reg = _registry(tmp_path)
    d = decide(cfg, analyze(state({"control": (3000, 0.15), "treatment": (3000, 0.25)}), cfg))
    done = apply(d, FileConfigStore(path), reg, dry_run=True)
    assert done.dry_run and not done.config_written
    assert path.read_bytes() == before and reg.channel("als", "stable") == "v1"


class _FakeCoreV1:
    """The two calls ConfigMapStore makes, on an in-memory ConfigMap."""

    def __init__(self, data: dict[str, str]) -> None:
        self.data = data
        self.patches: list[Any] = []

    def read_namespaced_config_map(self, name: str, namespace: str) -> Any:
        assert (name, namespace) == ("router-experiment", "marquee")
        return type("CM", (), {"data": dict(self.data)})()

    def patch_namespaced_config_map(self, name: str, namespace: str, body: Any) -> None:
        self.patches.append(json.loads(json.dumps(body)))
        self.data.update(body["data"])


def test_the_configmap_store_patches_one_key() -> None:
    cfg = config()
    api = _FakeCoreV1({"experiment.yaml": to_yaml(cfg)})
    store = ConfigMapStore("marquee", "router-experiment", api=api)
    assert store.read() == cfg
    d = decide(cfg, analyze(state({"control": (3000, 0.25), "treatment": (3000, 0.15)}), cfg))
    apply(d, store, None, dry_run=False)
    assert store.read().status is Status.ROLLED_BACK and len(api.patches) == 1


@pytest.mark.parametrize("ramp", [[0.5, 0.1], [0.0, 0.5]])
def test_bad_ramps_are_refused_with_a_clear_message(ramp: list[float]) -> None:
    from services.common.experiment import ConfigError

    with pytest.raises(ConfigError, match=r"policy\.ramp"):
        config(policy={"ramp": ramp})
