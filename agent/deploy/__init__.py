"""Deploys: versions and lineage, the deploy state machine, the canary gate, proxies.

An artifact (a file or a directory of weights, tokenizer and config) is identified by its content
hash (``artifacts``); each version and each deployment of a model is recorded with its lineage
in ``storage.versions`` and ``storage.deployments``. This room builds on ``agent.alerting``,
``agent.supervise``, ``agent.health``, ``agent.config``, ``probes`` and ``storage``; the API,
the reports, the runtime and the CLI build on it.
"""

from agent._rooms import lazy_exports

_EXPORTS: dict[str, str] = {
    "ArtifactChanged": "artifacts",
    "ArtifactDigest": "artifacts",
    "ArtifactError": "artifacts",
    "FileDigest": "artifacts",
    "HashCache": "artifacts",
    "HashStopped": "artifacts",
    "digest_artifact": "artifacts",
    "hash_artifact": "artifacts",
    "ConnectionHashCache": "hashcache",
    "WriterHashCache": "hashcache",
}
__all__ = [
    "ArtifactChanged",
    "ArtifactDigest",
    "ArtifactError",
    "ConnectionHashCache",
    "FileDigest",
    "HashCache",
    "HashStopped",
    "WriterHashCache",
    "digest_artifact",
    "hash_artifact",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
