"""The fault matrix: python -m tests.reliability.faults (from the repository root)."""
