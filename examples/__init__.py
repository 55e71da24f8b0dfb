"""Sweep configurations that reproduce the claims of the paper (read by fastrank.reproduce)."""
