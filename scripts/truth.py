"""The simulator's known truth about two arms, computed without the router or the monitor.

Each arm's recommender is asked directly (HTTP, no router, no Kafka, no ingest) by a fresh
world of the same seed, so the same simulated users meet each model in turn and list quality
is the only difference (``services.simulator.evaluation``).  Success is the contract's
(``services.common.online``): a listed movie started within 15 minutes.  The verdict is the
sign of the difference in conversion (share of users with a success, the monitor's default
metric) when its 99 % interval excludes zero, else ``none``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from scipy import stats

from services.common import online
from services.monitor.stats import mde_sequential
from services.simulator.evaluation import line_tables

Verdict = Literal["treatment", "control", "none"]
MonitorVerdict = Literal["treatment", "control", "none", "undecided", "invalid"]


@dataclass(frozen=True)
class ArmTruth:
    """One recommender's online outcome in the simulated world."""

    target: str
    lists: int
    successes: int
    users: int
    converted: int

    @property
    def watch_rate(self) -> float:
        """Successes per decided list."""
        return self.successes / self.lists if self.lists else math.nan

    @property
    def conversion(self) -> float:
        """Share of users with at least one success."""
        return self.converted / self.users if self.users else math.nan

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return asdict(self) | {
            "watch_rate": round(self.watch_rate, 4),
            "conversion": round(self.conversion, 4),
        }


@dataclass(frozen=True)
class Truth:
    """Control against treatment on the same simulated users."""

    control: ArmTruth
    treatment: ArmTruth
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "control": self.control.to_json(),
            "treatment": self.treatment.to_json(),
            "conversion_diff": round(self.diff, 4),
            "ci99": [round(self.ci_low, 4), round(self.ci_high, 4)],
            "p_value": self.p_value,
            "verdict": self.verdict,
        }


def judge_lines(lines: Iterable[str], target: str = "") -> ArmTruth:
    """Lists, successes, users and converted users of a stream's recommendation lines."""
    lists, seen = line_tables(lines)
    judged = online.outcomes(lists, seen)
    rate = online.summarize(judged)
    users = online.per_user(judged).table
    converted = int(sum(1 for s in users["successes"].to_pylist() if s > 0))
    return ArmTruth(target, rate.trials, rate.successes, users.num_rows, converted)


def compare(control: ArmTruth, treatment: ArmTruth, alpha: float = 0.01) -> Truth:
    """Difference in conversion (treatment - control), its interval, and the verdict."""
    p1, p2 = control.conversion, treatment.conversion
    diff = p2 - p1
    if not (control.users and treatment.users):
        return Truth(control, treatment, math.nan, math.nan, math.nan, 1.0, "none")
    se = math.sqrt(p1 * (1 - p1) / control.users + p2 * (1 - p2) / treatment.users)
    z = float(stats.norm.ppf(1 - alpha / 2))
    low, high = diff - z * se, diff + z * se
    p = float(2 * stats.norm.sf(abs(diff) / se)) if se > 0 else (0.0 if diff else 1.0)
    verdict: Verdict = "treatment" if low > 0 else "control" if high < 0 else "none"
    return Truth(control, treatment, diff, low, high, p, verdict)


def detectable(
    truth: Truth,
    users_per_arm: int,
    alpha: float = 0.05,
    power: float = 0.8,
    mixture_sd: float = 0.05,
) -> bool:
    """Whether the true difference is at least the MDE of ``users_per_arm`` users per arm for
    the test the monitor decides with: the always-valid mSPRT (``mixture_sd``, the policy's
    default), looked at continuously, as a monitor stepping every few seconds does."""
    if truth.verdict == "none":
        return False
    low = min(truth.control.conversion, truth.treatment.conversion)
    smallest = mde_sequential(low, users_per_arm, mixture_sd, alpha, power, paths=5000, tol=1e-3)
    return math.isfinite(smallest) and abs(truth.diff) >= smallest


def monitor_verdict(action: str | None, arm: str | None) -> MonitorVerdict:
    """What a monitor decision says about which arm is better."""
    if action == "promote":
        return "treatment" if arm != "control" else "control"
    if action == "rollback":
        return "control"
    if action == "stop_inconclusive":
        return "none"
    if action == "stop_srm":
        return "invalid"
    return "undecided"


def agreement(truth: Verdict, monitor: MonitorVerdict) -> str:
    """One line: whether the monitor's verdict matches the simulator's truth."""
    if monitor == "undecided":
        return f"the monitor had not decided yet; the truth says: {_says(truth)}"
    if monitor == "invalid":
        return "the monitor stopped for a sample-ratio mismatch: its numbers cannot be compared"
    if monitor == truth:
        return f"AGREE: both say {_says(truth)}"
    return f"DISAGREE: the monitor says {_says(monitor)}, the truth says {_says(truth)}"


def _says(verdict: str) -> str:
    return {
        "treatment": "the treatment is better",
        "control": "the control is better",
        "none": "no clear difference",
    }.get(verdict, verdict)
