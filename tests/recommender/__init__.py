"""Tests of the recommendation server."""
