"""Integration tests against the real OpenZFS lab.

A package, so that its conftest does not shadow tests/conftest.py as module `conftest`.
"""
