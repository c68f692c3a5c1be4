"""The recommendation server: top-20 movie ids per user from a hot-swappable registry model."""
