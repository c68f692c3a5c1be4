"""The monitor's step on simulated experiments: it finds the known truth and acts on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.artifacts import MANIFEST_FILE, Registry
from services.common.experiment import Status
from services.monitor.actions import FileConfigStore, to_yaml
from services.monitor.core import Monitor
from services.monitor.evaluation import EvaluationState
from services.monitor.history import History
from services.monitor.policy import Action
from services.monitor.sources import LinesSource
from tests.monitor.simab import Broken, SimulatedRun, experiment_config, simulate

pytestmark = pytest.mark.slow
MIN_NS = 60 * 1_000_000_000
POLICY = {"min_users": 150, "mixture_sd": 0.1}


def _source(tmp_path: Path, run: SimulatedRun) -> LinesSource:
    stream = tmp_path / "stream.log"
    stream.write_text("\n".join(run.stream) + "\n")
    exposures = tmp_path / "exposures.log"
    exposures.write_text("\n".join(run.exposures) + "\n")
    return LinesSource([stream, exposures])


def _registry(root: Path) -> Registry:
    reg = Registry(root)
    for v in ("v1", "v2"):
        (reg.path("treatment", v)).mkdir(parents=True)
        (reg.path("treatment", v) / MANIFEST_FILE).write_text("{}")
    reg.set_channel("treatment", "stable", "v1")
    reg.set_channel("treatment", "canary", "v2")
    return reg


def _stream(
    monitor: Monitor,
    src: LinesSource,
    run: SimulatedRun,
    step_min: int = 20,
    stop_on_action: bool = True,
) -> list:
    results = []
    t = run.start_ns
    while t < run.end_ns:
        t = min(run.end_ns, t + step_min * MIN_NS)
        src.visible_until = t
        r = monitor.step()
        if r is None:
            continue
        results.append(r)
        if stop_on_action and r.decision.action is not Action.CONTINUE:
            break
    return results


def test_the_monitor_promotes_the_oracle_over_popularity_and_acts(tmp_path: Path) -> None:
    cfg = experiment_config({"control": 50, "treatment": 50}, policy=POLICY)
    run = simulate(
        cfg, {"control": "popularity", "treatment": "oracle"}, users=2000, hours=8, seed=11
    )
    src = _source(tmp_path, run)
    path = tmp_path / "experiment.yaml"
    path.write_text(to_yaml(cfg))
    reg = _registry(tmp_path / "models")
    history = History(f"sqlite:///{tmp_path / 'h.sqlite3'}")
    history.migrate()
    mon = Monitor(
        src,
        FileConfigStore(path),
        checkpoint_dir=tmp_path / "ckpt",
        history=history,
        registry=reg,
        lateness_ns=MIN_NS,
    )
    results = _stream(mon, src, run)
    last = results[-1]
    assert last.decision.action is Action.PROMOTE and last.decision.arm == "treatment"
    written = FileConfigStore(path).read()
    assert written.status is Status.PROMOTED and written.winner == "treatment"
    assert reg.channel("treatment", "stable") == "v2"
    recorded = history.decisions("exp-1")
    assert recorded[0]["action"] == "promote" and not recorded[0]["dry_run"]
    assert history.arm_series("exp-1")
    # After promotion the experiment is no longer running: the monitor does nothing more.
    src.visible_until = run.end_ns
    assert mon.step().decision.action is Action.CONTINUE
    history.close()


def test_a_broken_treatment_is_rolled_back_by_guardrail_before_the_statistics_mature(
    tmp_path: Path,
) -> None:
    cfg = experiment_config({"control": 50, "treatment": 50}, policy={"min_users": 400})
    run = simulate(
        cfg,
        {"control": "popularity", "treatment": "popularity"},
        users=2000,
        hours=6,
        seed=12,
        broken={"treatment": Broken(error_share=0.3, latency_ms=650)},
    )
    src = _source(tmp_path, run)
    path = tmp_path / "experiment.yaml"
    path.write_text(to_yaml(cfg))
    mon = Monitor(src, FileConfigStore(path), checkpoint_dir=tmp_path / "ckpt", lateness_ns=MIN_NS)
    last = _stream(mon, src, run, step_min=10)[-1]
    assert last.decision.action is Action.ROLLBACK and "guardrail" in last.decision.reason
    assert max(a.users for a in last.analysis.arms) < 400  # before min_users: no statistics
    assert FileConfigStore(path).read().status is Status.ROLLED_BACK


def test_an_injected_45_55_split_is_stopped_for_sample_ratio_mismatch(tmp_path: Path) -> None:
    served = experiment_config({"control": 45, "treatment": 55})
    configured = experiment_config({"control": 50, "treatment": 50})
    run = simulate(
        served, {"control": "popularity", "treatment": "popularity"}, users=5000, hours=6, seed=13
    )
    src = _source(tmp_path, run)
    path = tmp_path / "experiment.yaml"
    path.write_text(to_yaml(configured))
    mon = Monitor(
        src,
        FileConfigStore(path),
        checkpoint_dir=tmp_path / "ckpt",
        lateness_ns=MIN_NS,
        dry_run=True,
    )
    results = _stream(mon, src, run, step_min=30)
    assert results[-1].decision.action is Action.STOP_SRM
    assert results[-1].analysis.srm["p_value"] < 0.001
    assert FileConfigStore(path).read().status is Status.RUNNING  # dry run: only reported


def test_a_restart_mid_stream_gives_the_same_metrics_as_one_run(tmp_path: Path) -> None:
    cfg = experiment_config({"control": 50, "treatment": 50})
    run = simulate(
        cfg, {"control": "popularity", "treatment": "oracle"}, users=1500, hours=5, seed=14
    )
    src = _source(tmp_path, run)
    path = tmp_path / "experiment.yaml"
    path.write_text(to_yaml(cfg))

    def monitor(ckpt: str) -> Monitor:
        return Monitor(
            src,
            FileConfigStore(path),
            checkpoint_dir=tmp_path / ckpt,
            lateness_ns=MIN_NS,
            dry_run=True,
        )

    whole = monitor("a")
    _stream(whole, src, run, step_min=25, stop_on_action=False)
    first = monitor("b")
    src.visible_until = run.start_ns + 150 * MIN_NS
    first.step()
    restarted = monitor("b")  # a new process: only the checkpoint survives
    _stream(restarted, src, run, step_min=25, stop_on_action=False)
    a = EvaluationState.load(tmp_path / "a" / "exp-1.parquet")
    b = EvaluationState.load(tmp_path / "b" / "exp-1.parquet")
    assert a.equals(b) and a.n_users > 500
    assert whole.latest is not None and restarted.latest is not None
    assert whole.latest.analysis.to_json()["arms"] == restarted.latest.analysis.to_json()["arms"]
