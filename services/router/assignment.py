"""Which arm serves a user: two independent stable hashes, one for exposure, one for the arm.

* exposure bucket ``bucket(salt + ":exposure", user)`` < ``exposure * 10000`` → exposed;
* arm bucket ``bucket(salt, user)`` falls in one arm's range; ranges are laid out in the
  config's arm order, each ``weight`` percent of the 10,000 buckets wide;
* shadow bucket ``bucket(salt + ":shadow", user)`` < ``shadow.share * 10000`` → copied.

Because the arm bucket ignores the exposure share, ramping exposure up only moves users from
"not exposed" into the arm they would always have had; it never moves anyone between arms.
Changing weights moves only the users whose arm bucket lies where the ranges moved: shifting
weight between two *adjacent* arms moves the fewest users possible (only from the arm that
lost weight to the one that gained it).  A new salt reshuffles everyone.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Final

from services.common.assignment import BUCKETS, bucket
from services.router.config import INTERLEAVE, UNEXPOSED, Experiment, Status

EXPOSURE_SUFFIX: Final = ":exposure"
SHADOW_SUFFIX: Final = ":shadow"


@dataclass(frozen=True)
class Assignment:
    """Where one request goes: the label recorded, the arms asked, and whether it is exposed."""

    label: str
    """Arm label of the exposure event: an arm name, ``unexposed`` or ``interleave``."""
    arms: tuple[str, ...]
    """Arms to ask: one, or both arms of an interleaved answer."""
    exposed: bool
    """True when the user counts as exposed to the experiment."""
    shadow: bool
    """True when a copy of the request goes to the shadow arm."""


class Assigner:
    """Assignment under one experiment config (build a new one when the config changes)."""

    def __init__(self, config: Experiment) -> None:
        self.config = config
        self._exposure_salt = config.salt + EXPOSURE_SUFFIX
        self._shadow_salt = config.salt + SHADOW_SUFFIX
        self._exposed_below = round(config.exposure * BUCKETS)
        self._shadow_below = round(config.shadow.share * BUCKETS) if config.shadow else 0
        self._names = [a.name for a in config.arms]
        # Upper bounds of the arms' bucket ranges; zero-weight arms get empty ranges.
        bounds, total = [], 0
        for arm in config.arms:
            total += round(arm.weight * BUCKETS / 100)
            bounds.append(total)
        self._bounds = bounds
        status = config.status
        self._experimenting = status is Status.RUNNING
        if status is Status.PROMOTED:
            assert config.winner is not None  # the config validator guarantees it
            self._everyone = config.winner
        else:
            self._everyone = config.control

    def arm_of(self, user_id: int) -> str:
        """The arm ``user_id`` has while exposed (whatever the exposure share)."""
        b = bucket(self.config.salt, user_id)
        i = bisect_right(self._bounds, b)
        return self._names[min(i, len(self._names) - 1)]

    def exposed(self, user_id: int) -> bool:
        """True when ``user_id`` is inside the exposure share (regardless of status)."""
        return bucket(self._exposure_salt, user_id) < self._exposed_below

    def assign(self, user_id: int) -> Assignment:
        """The assignment of ``user_id`` under this config."""
        shadow = self._shadow_below > 0 and bucket(self._shadow_salt, user_id) < self._shadow_below
        if not self._experimenting or not self.exposed(user_id):
            return Assignment(UNEXPOSED, (self._everyone,), False, shadow)
        if self.config.mode == "interleave":
            return Assignment(INTERLEAVE, tuple(self._names), True, shadow)
        arm = self.arm_of(user_id)
        return Assignment(arm, (arm,), True, shadow)
