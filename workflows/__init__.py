"""Deterministic orchestration only: one module per workflow."""
