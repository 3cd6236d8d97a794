"""Custom XLA:CPU kernels (C++ sources compiled on first use) behind config switches."""
