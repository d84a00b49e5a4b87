"""Names of the files an agent keeps in its data dir, shared by the daemon and local tools."""

API_FILE = "api.json"
"""Written once the API is bound: ``{"url": ..., "pid": ..., "started_ms": ...}``."""
