"""Numeric kernels: pure functions on numpy arrays (no pydantic, no Sample, no I/O)."""
