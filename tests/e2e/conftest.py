"""Fixtures of the end-to-end tier; the plumbing itself is in harness.py."""

from tests.e2e.harness import bucket, simulator

__all__ = ["bucket", "simulator"]
