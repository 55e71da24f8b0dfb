"""CUDA C sources, compiled at run time by cupy.RawModule (GPU backend)."""
