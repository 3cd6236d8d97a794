"""Command-line tools outside the training path (lungjax segment, ...)."""
