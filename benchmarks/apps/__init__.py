"""Comparison apps for the end-to-end harness: the bare-Litestar ceiling and the Postgres row-lock floor."""
