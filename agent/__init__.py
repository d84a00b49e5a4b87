"""Vigil's agent: the daemon that probes, measures, supervises and serves its API."""

__version__ = "0.1.0"
