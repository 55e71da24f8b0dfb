"""Version of the package and of the results-file format, kept in one place."""

__version__ = "0.1.0"

#: Magic string stored in every results file's root attributes.
FORMAT_NAME = "fastrank-results"
#: Integer format version; bump it when the layout of results files changes.
#: 2: per-row ``tier`` dataset (full spectrum or Gram tier only). Readers accept 1.
FORMAT_VERSION = 3
