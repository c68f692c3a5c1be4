"""Marquee benchmarks: ``make bench`` runs every ``bench_*.py`` module and writes JSON results."""
