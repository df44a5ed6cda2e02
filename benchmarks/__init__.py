"""Benchmarks: pytest-benchmark suites (``test_*.py``) and the end-to-end harness (``python -m benchmarks.e2e``)."""
