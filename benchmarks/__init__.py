"""Speed and scale benchmarks of lungjax: python -m benchmarks.<module> from the repository root (see each one)."""
