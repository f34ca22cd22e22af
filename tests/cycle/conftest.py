"""The BFCL items and the scripted student of test_cycle.py, for the other cycle tests."""

from tests.cycle.test_cycle import items, student  # noqa: F401  (fixtures)
