"""Version of the package and of the results-file format, and the name it installs by,
kept in one place."""

__version__ = "0.1.0"

#: The name on the package index ("fastrank" there is another project); the import
#: package and the command are ``fastrank``.
DISTRIBUTION = "fastrank-sim"

#: Magic string stored in every results file's root attributes.
FORMAT_NAME = "fastrank-results"
#: Integer format version; bump it when the layout of results files changes.
#: 2: per-row ``tier`` dataset (full spectrum or Gram tier only). Readers accept 1.
FORMAT_VERSION = 3


def install_hint(extra: str) -> str:
    """The command that installs fastrank with its optional dependencies ``extra``."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


#: How to get CuPy: the extra for the CUDA major version of the driver.
GPU_INSTALL_HINT = f"{install_hint('gpu-cuda12')} or {install_hint('gpu-cuda13')}"
