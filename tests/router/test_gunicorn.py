"""The router as shipped (gunicorn, 2 workers) in front of two real recommenders.

Reload under load, a killed arm, a slow arm: the client never sees an error, and every
fallback is counted with its reason.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from services.common.artifacts import Manifest
from services.common.events import is_movie_id
from tests.infra import wait_until
from tests.router.conftest import experiment, write_experiment
from tests.router.servers import (
    Load,
    Proc,
    register_models,
    start_recommender,
    start_router,
)
from tests.router.stub import StubRecommender

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Stack:
    """Two recommenders, the router, and the experiment file it reads."""

    models: dict[str, Manifest]
    arms: dict[str, Proc]
    router: Proc
    config: Path

    def urls(self) -> dict[str, str]:
        return {name: p.url for name, p in self.arms.items()}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("router-gunicorn")
    root = tmp / "registry"
    models = register_models(root)
    arms = {
        "control": start_recommender(root, "svd", tmp),
        "treatment": start_recommender(root, "als", tmp),
    }
    config = write_experiment(
        tmp / "experiment.yaml",
        experiment({n: p.url for n, p in arms.items()}, exposure=0.5),
    )
    router = start_router(config, tmp)
    try:
        yield Stack(models, arms, router, config)
    finally:
        for proc in (router, *arms.values()):
            proc.kill()


def check(stack: Stack, answers: list) -> None:  # type: ignore[type-arg]
    """Every answer is a valid list from the model its headers name."""
    versions = {m.version for m in stack.models.values()}
    for a in answers:
        ids = a.body.split(",")
        assert 0 < len(ids) == len(set(ids)) <= 20 and all(map(is_movie_id, ids))
        if a.headers["X-Served-By"] != "static":
            assert a.headers["X-Model-Version"] in versions


def test_arms_serve_their_models_with_provenance(stack: Stack) -> None:
    with requests.Session() as s:
        for user in range(1, 200):
            r = s.get(f"{stack.router.url}/recommend/{user}", timeout=2)
            assert r.status_code == 200, r.text
            arm = r.headers["X-Arm"]
            served = "control" if arm == "unexposed" else arm
            assert r.headers["X-Served-By"] == served
            assert r.headers["X-Model-Version"] == stack.models[served].version
            assert r.headers["X-Model-Name"] == stack.models[served].name
            assert r.headers["X-Experiment"] == "exp-1"
        bad = s.get(f"{stack.router.url}/recommend/12abc", timeout=2)
        assert bad.status_code == 400 and "\n" not in bad.text
    assert stack.router.total("marquee_router_requests_total", status="200") >= 199
    assert stack.router.total("marquee_router_requests_total", status="400") == 1
    assigned = stack.router.total("marquee_router_assignments_total")
    assert assigned >= 199
    assert stack.router.total("marquee_router_arm_weight", arm="treatment") == 50


def test_reload_under_load_with_zero_failed_requests(stack: Stack) -> None:
    urls = stack.urls()
    rejected = stack.router.total("marquee_router_config_reloads_total", result="rejected")
    load = Load(stack.router.url)
    try:
        time.sleep(0.5)
        for share in (0.2, 1.0):
            write_experiment(stack.config, experiment(urls, exposure=share))
            time.sleep(0.8)
        stack.config.write_text("experiment: broken\nexposure: 3\n")  # refused
        wait_until(
            lambda: stack.router.total("marquee_router_config_reloads_total", result="rejected")
            >= rejected + 2,  # every worker refuses it
            timeout=10,
        )
        refused = time.monotonic()
        time.sleep(0.8)
    finally:
        load.finish()
    assert not load.failures, load.failures[:5]
    check(stack, load.answers)
    assert load.arms()["unexposed"] > 0 and load.arms()["treatment"] > 0
    # The last valid config (exposure 1.0) keeps serving: nobody is unexposed after the refusal.
    late = [a for a in load.answers if a.at > refused]
    assert len(late) > 20 and all(a.headers["X-Arm"] != "unexposed" for a in late)
    write_experiment(stack.config, experiment(urls, exposure=0.5))


def test_interleaving_merges_both_real_models_lists(stack: Stack) -> None:
    write_experiment(stack.config, experiment(stack.urls(), mode="interleave"))
    time.sleep(1.0)
    try:
        with requests.Session() as s:
            from_both = 0
            for user in range(1, 60):
                r = s.get(f"{stack.router.url}/recommend/{user}", timeout=2)
                assert r.status_code == 200 and "X-Fallback" not in r.headers
                assert (r.headers["X-Arm"], r.headers["X-Served-By"]) == (
                    "interleave",
                    "control+treatment",
                )
                lists = {
                    arm: s.get(f"{p.url}/recommend/{user}", timeout=2).text.split(",")
                    for arm, p in stack.arms.items()
                }
                items = r.text.split(",")
                assert len(items) == len(set(items)) == 20
                assert set(items) <= set(lists["control"]) | set(lists["treatment"])
                # team draft: each list's top picks lead, in their own order
                for ranked in lists.values():
                    mine = [i for i in items if i in ranked and i not in lists_other(lists, ranked)]
                    assert mine == sorted(mine, key=ranked.index)
                from_both += any(i not in lists["treatment"] for i in items) and any(
                    i not in lists["control"] for i in items
                )
        assert from_both > 30, "the two models' lists differ, so the merge shows both"
        # the answer names control's model: the exposure's item tags say who gave what
        assert stack.router.total("marquee_router_requests_total", arm="interleave") >= 59
    finally:
        write_experiment(stack.config, experiment(stack.urls(), exposure=0.5))
        time.sleep(1.0)


def lists_other(lists: dict[str, list[str]], ranked: list[str]) -> set[str]:
    """The ids of the other arm's list."""
    return {i for arm_list in lists.values() if arm_list is not ranked for i in arm_list}


def test_a_slow_arm_falls_back_within_the_budget(stack: Stack) -> None:
    slow = StubRecommender("treatment")
    slow.mode, slow.delay_s = "slow", 2.0
    urls = {**stack.urls(), "treatment": slow.url}
    write_experiment(stack.config, experiment(urls, exposure=1.0))
    time.sleep(1.0)
    try:
        with requests.Session() as s:
            seen = 0
            for user in range(1, 120):
                t = time.perf_counter()
                r = s.get(f"{stack.router.url}/recommend/{user}", timeout=0.6)
                took = time.perf_counter() - t
                assert r.status_code == 200
                if r.headers["X-Arm"] == "treatment":
                    seen += 1
                    assert r.headers["X-Fallback"] in ("timeout", "circuit_open")
                    assert r.headers["X-Served-By"] == "control"
                    assert took < 0.6  # inside the client's deadline, always
        assert seen > 10
        assert stack.router.total("marquee_router_fallbacks_total", arm="treatment",
                                  reason="timeout") > 0  # fmt: skip
    finally:
        write_experiment(stack.config, experiment(stack.urls(), exposure=0.5))
        time.sleep(1.0)
        slow.close()


def test_an_arm_killed_mid_load_costs_no_client_error(stack: Stack) -> None:
    before = stack.router.total("marquee_router_fallbacks_total", arm="treatment")
    load = Load(stack.router.url)
    try:
        time.sleep(1.0)
        stack.arms["treatment"].kill()  # SIGKILL the whole recommender
        killed = time.monotonic()
        time.sleep(2.0)
    finally:
        load.finish()
    assert not load.failures, load.failures[:5]
    check(stack, load.answers)
    fell = [a for a in load.answers if a.headers.get("X-Fallback")]
    assert fell and all(a.headers["X-Served-By"] == "control" for a in fell)
    counted = stack.router.total("marquee_router_fallbacks_total", arm="treatment") - before
    assert counted == len(fell)
    assert stack.router.total("marquee_router_circuit_state", arm="treatment") == 2
    # Once the circuit is open the dead arm costs nothing: fallbacks say so.
    assert any(a.headers["X-Fallback"] == "circuit_open" for a in fell if a.at > killed + 1)
