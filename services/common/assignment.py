"""User bucketing: the single source of experiment-arm assignment for the router and the monitor."""

from __future__ import annotations

import hashlib
from typing import Final

BUCKETS: Final = 10_000
"""Buckets per salt; a 1% canary is 100 buckets."""


def bucket(salt: str, user_id: int) -> int:
    """Return a stable bucket in ``[0, BUCKETS)`` for ``user_id`` under ``salt``.

    BLAKE2b of ``"<salt>:<user_id>"``: the same on every process, host and Python version
    (unlike the salted built-in ``hash``), and uniform enough that buckets are fair shares.
    """
    digest = hashlib.blake2b(f"{salt}:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS
