"""``marquee monitor plan``: the fixed-horizon and the always-valid test's users per arm."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.common.experiment import Policy
from services.monitor import stats
from services.monitor.actions import to_yaml
from services.monitor.cli import main
from tests.monitor.simab import experiment_config


def test_plan_gives_the_fixed_and_the_sequential_sample_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = experiment_config({"control": 50, "treatment": 50})
    path = tmp_path / "exp.yaml"
    path.write_text(to_yaml(cfg.model_copy(update={"policy": Policy(mixture_sd=0.1)})))
    args = ["plan", "--control", "0.3", "--treatment", "0.4", "--looks", "10", "--paths", "2000"]
    assert main([*args, "--config", str(path), "--users", "300", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["mixture_sd"] == 0.1 and doc["alpha"] == 0.05
    assert doc["fixed_horizon_users_per_arm"] == stats.sample_size_proportions(0.3, 0.4, exact=True)
    seq = stats.sample_size_sequential(0.3, 0.4, 0.1, looks=10, paths=2000)
    assert doc["sequential_users_per_arm"] == seq > doc["fixed_horizon_users_per_arm"]
    assert doc["sequential_power_at_fixed_plan"] < 0.8
    assert doc["at_users"]["power_sequential"] < doc["at_users"]["power_fixed"]
    assert main([*args, "--mixture-sd", "0.1"]) == 0
    text = capsys.readouterr().out
    assert f"{seq} users per arm <- policy.max_users" in text and "fixed-horizon" in text
    assert "note: policy.min_users" not in text
    big = ["plan", "--control", "0.3", "--treatment", "0.6", "--paths", "2000"]
    assert main(big) == 0
    assert "note: policy.min_users is 500" in capsys.readouterr().out
    assert main(["plan", "--control", "0.3", "--treatment", "0.3"]) == 2
    assert "two rates" in capsys.readouterr().err
    assert main([*args, "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err
