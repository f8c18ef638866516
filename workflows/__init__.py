"""Deterministic orchestration only."""
