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
#: 3: runs stacked along one dimension. 4: a sweep with tangents (their datasets), so
#: that a fastrank that knows no tangents refuses the file rather than resume it without
#: them; files without tangents are written as 3 (FORMAT_VERSION_WITHOUT_TANGENTS).
FORMAT_VERSION = 4
FORMAT_VERSION_WITHOUT_TANGENTS = 3


def install_hint(extra: str) -> str:
    """The command that installs fastrank with its optional dependencies ``extra``."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


#: How to get CuPy: the extra for the CUDA major version of the driver.
GPU_INSTALL_HINT = f"{install_hint('gpu-cuda12')} or {install_hint('gpu-cuda13')}"
