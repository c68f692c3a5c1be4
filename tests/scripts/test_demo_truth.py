"""The demo's pure logic: the simulator's truth, the verdict comparison, the arms, the report."""

from __future__ import annotations

import math

import pytest

from scripts.demo import (
    lift_lines,
    offline_lift,
    popularity_online_lift,
    rate_p_value,
    report_lines,
)
from scripts.stack import Arms, Ports, choose_arms, experiment_doc, weakest
from scripts.truth import ArmTruth, agreement, compare, detectable, judge_lines, monitor_verdict
from services.common.experiment import validate_config

RECO = "recommendation request h:8082, status {}, result: {}, {} ms"


def _arm(users: int, converted: int, target: str = "m") -> ArmTruth:
    return ArmTruth(target, lists=users, successes=converted, users=users, converted=converted)


def _metrics(val: float | None) -> dict[str, object]:
    return {"val": {"ranking": {"ndcg@20": val}}, "test": {"ranking": {"ndcg@20": val}}}


def test_judge_lines_counts_lists_users_and_converted_users() -> None:
    lines = [
        f"2026-03-02T10:00:00,1,{RECO.format(200, 'a+1999, b+2000', 20)}",
        f"2026-03-02T10:01:00,1,{RECO.format(200, 'a+1999', 20)}",
        f"2026-03-02T10:00:00,2,{RECO.format(200, 'c+2001', 30)}",
        "2026-03-02T10:05:00,1,GET /data/m/b+2000/0.mpg",  # user 1: the first list succeeds
        "2026-03-02T10:30:00,2,GET /data/m/c+2001/0.mpg",  # user 2: too late (> 15 min)
        "2026-03-02T11:00:00,3,GET /data/m/x+1990/0.mpg",  # the data's end: every list decided
    ]
    t = judge_lines(lines, "pop")
    assert (t.lists, t.successes, t.users, t.converted) == (3, 1, 2, 1)
    assert t.conversion == 0.5 and t.watch_rate == pytest.approx(1 / 3)


def test_a_clear_difference_names_the_better_arm_and_no_difference_names_none() -> None:
    better = compare(_arm(2000, 900), _arm(2000, 1200))
    assert better.verdict == "treatment" and better.ci_low > 0 and better.p_value < 1e-6
    worse = compare(_arm(2000, 1200), _arm(2000, 900))
    assert worse.verdict == "control" and worse.ci_high < 0
    same = compare(_arm(2000, 1000), _arm(2000, 1010))
    assert same.verdict == "none" and same.ci_low < 0 < same.ci_high
    empty = compare(_arm(0, 0), _arm(10, 5))
    assert empty.verdict == "none" and math.isnan(empty.diff)


def test_detectable_compares_the_true_difference_with_the_planned_sample() -> None:
    truth = compare(_arm(20_000, 9_000), _arm(20_000, 9_400))  # +2 points, significant
    assert truth.verdict == "treatment"
    # The always-valid test's MDE (80 %, alpha 0.05, p ~ 0.45): 3.6 points at 5,000/arm, 1.6 at 30k
    assert not detectable(truth, 5_000)
    assert detectable(truth, 30_000)
    assert not detectable(compare(_arm(100, 50), _arm(100, 50)), 10**9)


@pytest.mark.parametrize(
    ("action", "arm", "verdict"),
    [
        ("promote", "treatment", "treatment"),
        ("rollback", "treatment", "control"),
        ("stop_inconclusive", None, "none"),
        ("stop_srm", None, "invalid"),
        ("continue", None, "undecided"),
        (None, None, "undecided"),
    ],
)
def test_monitor_verdicts(action: str | None, arm: str | None, verdict: str) -> None:
    assert monitor_verdict(action, arm) == verdict


def test_agreement_says_agree_only_when_both_name_the_same_arm() -> None:
    assert agreement("treatment", "treatment").startswith("AGREE")
    assert agreement("none", "none").startswith("AGREE")
    assert agreement("treatment", "control").startswith("DISAGREE")
    assert agreement("none", "treatment").startswith("DISAGREE")
    assert "not decided" in agreement("treatment", "undecided")
    assert "sample-ratio" in agreement("treatment", "invalid")


def test_arms_treatment_is_best_on_validation_control_is_popularity() -> None:
    metrics = {"popularity": _metrics(0.10), "ease": _metrics(0.12), "als": _metrics(0.05)}
    arms = choose_arms(metrics)
    assert (arms.control, arms.treatment) == ("popularity", "ease")
    assert weakest(metrics, exclude=["ease", "popularity"]) == "als"
    assert weakest({"ease": _metrics(0.1)}, exclude=["ease"]) is None


def test_when_popularity_is_best_the_next_best_model_challenges_it() -> None:
    arms = choose_arms({"popularity": _metrics(0.2), "ease": _metrics(0.12), "svd": _metrics(0.1)})
    assert (arms.control, arms.treatment) == ("popularity", "ease")
    assert "popularity is best" in arms.why
    with pytest.raises(RuntimeError, match="two registered models"):
        choose_arms({"popularity": _metrics(0.2)})


def test_the_experiment_is_valid_50_50_everyone_exposed_with_the_policy() -> None:
    doc = experiment_doc(
        Arms("popularity", "ease", "why"),
        Ports.from_base(30_000),
        ["a+1999", "b+2000"],
        {"metric": "conversion", "min_users": 300},
    )
    cfg = validate_config(doc)
    assert cfg.exposure == 1.0 and [a.weight for a in cfg.arms] == [50, 50]
    assert [(a.model, a.channel) for a in cfg.arms] == [
        ("popularity", "stable"),
        ("ease", "canary"),
    ]
    assert cfg.arms[1].url == "http://127.0.0.1:30006"
    assert cfg.policy is not None and cfg.policy.min_users == 300


def test_offline_lift_is_the_ratio_to_popularity() -> None:
    lift = offline_lift({"popularity": _metrics(0.1), "ease": _metrics(0.13)}, "ease")
    assert lift["val_lift"] == 1.3 and lift["test_lift"] == 1.3
    assert offline_lift({"ease": _metrics(0.13)}, "ease")["val_lift"] is None


def test_the_report_says_verdict_changes_truth_agreement_lift_and_addresses() -> None:
    truth = compare(_arm(3000, 1300), _arm(3000, 1700))
    summary = {
        "experiment": "popularity-vs-ease",
        "arms": {"control": "popularity", "treatment": "ease", "why": "best on validation"},
        "decision": {
            "action": "promote",
            "reason": "arm 'treatment' beats 'control'",
            "numbers": {"diff": 0.12, "arms": {"ignored": 1}},
        },
        "config_before": {"status": "running", "exposure": 1.0, "weights": {"c": 50}},
        "config_after": {
            "status": "promoted",
            "exposure": 1.0,
            "winner": "treatment",
            "weights": {"c": 50},
        },
        "registry_before": {
            "ease": {"stable": None, "canary": "v2"},
            "popularity": {"stable": "v1"},
        },
        "registry_after": {
            "ease": {"stable": "v2", "canary": "v2"},
            "popularity": {"stable": "v1"},
        },
        "truth": truth.to_json(),
        "agreement": agreement(truth.verdict, "treatment"),
        "offline_lift": offline_lift({"popularity": _metrics(0.1), "ease": _metrics(0.13)}, "ease"),
        "online_by_arm": {
            "control": {"users": 900, "conversion": 0.43, "watch_rate": 0.41},
            "treatment": {"users": 910, "conversion": 0.55, "watch_rate": 0.52},
            "unexposed": {"users": 0, "conversion": None, "watch_rate": None},
        },
        "popularity_online": {
            "popularity": 0.43,
            "served": 0.57,
            "diff": 0.14,
            "p_value": 1.2e-9,
            "popularity_conversion": 0.45,
            "served_conversion": 0.6,
            "oracle": 0.71,
            "oracle_gap_closed": 0.5,
        },
        "addresses": {"experiment page (monitor)": "http://127.0.0.1:18090/"},
    }
    text = "\n".join(report_lines(summary))
    assert "monitor verdict: promote -- arm 'treatment' beats 'control'" in text
    assert '"diff": 0.12' in text and "ignored" not in text
    assert "status running -> promoted" in text and "winner None -> treatment" in text
    assert "registry ease: stable None -> v2" in text and "registry popularity: unchanged" in text
    assert "-> treatment" in text and "AGREE: both say the treatment is better" in text
    assert "watch rate 0.5200" in text and "unexposed" not in text
    assert "http://127.0.0.1:18090/" in text
    lift = "\n".join(lift_lines(summary))
    assert "served: ease, the treatment (best on validation)" in lift
    assert "validation period:" in lift and "ease 0.1300 vs popularity 0.1000  ->  1.30x" in lift
    assert "ease 0.570 vs popularity 0.430  ->  +14.0 points (+0.140, p = 1.2e-09)" in lift
    assert "closing 50% of the gap between popularity and the simulator's oracle (0.710" in lift
    assert "ease 0.600 vs popularity 0.450  ->  +15.0 points" in lift
    assert "(live experiment, monitor): ease 0.520 vs popularity 0.410  ->  +11.0 points" in lift
    summary["decision"] = None
    assert "monitor verdict: none within the live phase" in "\n".join(report_lines(summary))
    del summary["popularity_online"]
    assert "not measured (popularity was not the control)" in "\n".join(lift_lines(summary))


def test_the_online_lift_over_popularity_comes_from_the_first_truth_run() -> None:
    pop, best, weak = _arm(2000, 800, "popularity"), _arm(2000, 1000, "rerank"), _arm(2000, 500)
    kept = Arms("popularity", "rerank", "why")
    p = popularity_online_lift(compare(pop, best), {}, kept, "popularity")
    assert p is not None and p["diff"] == pytest.approx(0.1) and p["p_value"] < 1e-9
    # A weaker control replaced popularity: the lift still compares with popularity's run.
    notes = {"first": {"control": pop.to_json(), **compare(pop, best).to_json()}}
    swapped = Arms("als", "rerank", "why")
    p = popularity_online_lift(compare(weak, best), notes, swapped, "popularity")
    assert p is not None and p["popularity"] == 0.4 and p["served"] == 0.5
    assert popularity_online_lift(compare(weak, best), notes, swapped, "als") is None


def test_rate_p_value_is_small_for_a_clear_difference_and_one_for_none() -> None:
    assert rate_p_value((400, 1000), (500, 1000)) < 1e-5
    assert rate_p_value((400, 1000), (400, 1000)) == pytest.approx(1.0)
    assert rate_p_value((0, 0), (5, 10)) == 1.0
