"""Alembic migrations of the monitor's history tables (``marquee monitor migrate``)."""
