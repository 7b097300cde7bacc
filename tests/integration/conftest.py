"""Everything under tests/integration is a whole run: marked slow here, so that no file can
forget it and `pytest -m "not slow"` is the fast unit suite."""
import pytest


def pytest_itemcollected(item):
    # this conftest's hooks see only the items collected under tests/integration
    item.add_marker(pytest.mark.slow)
