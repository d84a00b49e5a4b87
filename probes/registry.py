"""Every probe protocol, registered explicitly: importing this module fills ``PROBES``.

A new probe module is added to the import list below; there is no filesystem scanning, so what
the agent can run is exactly what this file names.
"""

from __future__ import annotations

from probes import http, kserve_v2, ollama, onnx, openai, scrape, tcp, tgi
from probes.base import PROBES, Probe

# Imported for their @register side effect; naming them keeps linters from calling them unused.
_MODULES = (http, kserve_v2, ollama, onnx, openai, scrape, tcp, tgi)


def probe_for(protocol: str) -> type[Probe]:
    """The probe class for ``protocol``.

    Raises:
        KeyError: for an unknown protocol; the message lists the known ones.
    """
    try:
        return PROBES[protocol]
    except KeyError:
        known = ", ".join(sorted(PROBES))
        raise KeyError(f"unknown probe protocol {protocol!r}; known: {known}") from None
