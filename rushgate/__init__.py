"""Composition root: CLI, settings, process runner, embedded servers."""
