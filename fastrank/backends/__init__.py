"""Compute backends: one module per device, all implementing fastrank.backends.base.Backend."""
