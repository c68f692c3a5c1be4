"""The monitor: online evaluation per arm, statistics, decisions and the experiment page."""
