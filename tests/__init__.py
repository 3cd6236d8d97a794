"""lungjax's tests (python -m pytest) and, in tests/reliability/, the fault matrix (python -m tests.reliability.faults)."""
