"""The suite's shared set-up: the helper modules under tests/ (imported by name, as
pytest puts tests/ on sys.path) have their asserts rewritten like the tests' own, so that
a failed check in tests/fault_harness.py shows its values too."""

import pytest

pytest.register_assert_rewrite("fault_harness")
