"""Fake servers for tests and benchmarks: real HTTP on loopback, misbehaving on demand."""
