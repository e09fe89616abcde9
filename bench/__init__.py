"""Benchmarks of SPEC section 12 (``python -m bench``); not part of the test suite."""
