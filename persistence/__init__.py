"""Postgres: SQL migrations, the stream-to-Postgres writer, read models."""
