"""Each known user's list, computed once per model version: repeat requests cost no scoring.

A known user's list depends only on the model (its scores and the history it excludes), so it
is the same until the next model; every ``LoadedModel`` owns its own cache, and a swap starts
from an empty one.  The cache is direct-mapped: ``slots`` entries, user ``u`` in slot
``u % slots``, a newer user evicting an older one in the same slot.  Its size is bounded
whatever the traffic, and a hit costs a list index and an integer comparison.  An entry is one
tuple stored by one assignment (atomic under the GIL), so threads never see half an entry.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class ListCache(Generic[T]):
    """Answers of known users for one model version, bounded to ``slots`` users."""

    __slots__ = ("_entries", "slots")

    def __init__(self, slots: int) -> None:
        self.slots = max(0, int(slots))
        self._entries: list[tuple[int, T] | None] = [None] * self.slots

    def get(self, user_id: int) -> T | None:
        """What was cached for ``user_id``, or None (never cached, evicted, or cache off)."""
        if not self.slots:
            return None
        entry = self._entries[user_id % self.slots]
        if entry is not None and entry[0] == user_id:
            return entry[1]
        return None

    def put(self, user_id: int, value: T) -> None:
        """Remember ``value`` for ``user_id`` (evicting whoever had its slot)."""
        if self.slots:
            self._entries[user_id % self.slots] = (user_id, value)

    def __len__(self) -> int:
        """Users cached now."""
        return sum(e is not None for e in self._entries)
