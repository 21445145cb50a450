"""Unit tests: no network."""
