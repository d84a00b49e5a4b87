"""Integration tests: real processes and servers on loopback."""
