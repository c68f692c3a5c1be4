"""``make demo``: start the real parts, run the main job end to end, and say what happened."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from services.common.cli import count_lines
from services.common.kafka import make_consumer, make_producer
from services.common.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[1]
BOOTSTRAP = "127.0.0.1:19092"


def say(msg: str) -> None:
    """A demo step, on stderr so stdout stays for results."""
    print(f"\n==> {msg}", file=sys.stderr, flush=True)


def main() -> int:
    """Run the demo."""
    say("starting Apache Kafka (KRaft) on 127.0.0.1:19092 with scripts/kafka.sh")
    subprocess.run([str(ROOT / "scripts/kafka.sh"), "start"], check=True)
    settings = KafkaSettings(kafka_bootstrap_servers=BOOTSTRAP)

    sys.path.insert(0, str(ROOT))
    from tests.common.linegen import generate

    n = 20_000
    topic = "movielog"
    gen = generate(n, seed=int(time.time()))
    say(f"streaming {n:,} simulated lines (all four shapes, ~5% malformed) to topic {topic}")
    producer = make_producer(settings)
    for line in gen.lines:
        producer.send(topic, line.encode())
    producer.flush()
    producer.close()

    say("consuming them back and parsing every line with services.common.events")
    consumer = make_consumer(settings, [topic], group_id=f"demo-{time.time_ns()}")
    got: list[bytes] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=2000)
        if not batch and got:
            break
        for records in batch.values():
            got.extend(r.value for r in records)
    consumer.close()
    counts = count_lines(got)
    print(json.dumps({"lines_consumed": len(got), **counts}, indent=2))
    say("done; Kafka keeps running (scripts/kafka.sh stop to stop it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
