"""Compiled kernels of fastrank, installed as the subpackage ``fastrank.kernels``."""
