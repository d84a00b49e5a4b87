"""Unit tests: fast, in-process, on temporary databases."""
