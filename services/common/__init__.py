"""Code every Marquee service shares: the event contract, bucketing, settings, logging, metrics."""
