"""Rows in the event store's schema, to write real stores with ingest's writer in tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from services.common.store import SCHEMAS


def store_table(
    kind: str, cols: dict[str, Any], first_offset: int, topic: str = "movielog"
) -> pa.Table:
    """Rows of ``kind`` from ``cols``; key columns (topic, partition, offset, digits) filled."""
    schema = SCHEMAS[kind]
    n = len(cols["time_ns"])
    full: dict[str, Any] = {}
    for f in schema:
        if f.name in cols:
            full[f.name] = pa.array(cols[f.name], f.type)
        elif f.name == "topic":
            full[f.name] = pa.array([topic] * n, pa.string()).dictionary_encode()
        elif f.name == "partition":
            full[f.name] = pa.array(np.zeros(n, np.int32))
        elif f.name == "offset":
            full[f.name] = pa.array(np.arange(first_offset, first_offset + n, dtype=np.int64))
        elif f.name == "time_digits":
            full[f.name] = pa.array(np.full(n, 3, np.int8))
        else:
            full[f.name] = pa.nulls(n, f.type)
    return pa.Table.from_pydict(full).cast(schema)
