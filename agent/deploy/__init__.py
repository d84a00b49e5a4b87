"""Deploys: versions and lineage, the deploy state machine, the canary gate, proxies.

An artifact (a file or a directory of weights, tokenizer and config) is identified by its content
hash (``artifacts``); each version and each deployment of a model is recorded with its lineage
in ``storage.versions`` and ``storage.deployments``. The engine (``engine``, with ``support``
and ``rows``) takes deploy, approval, rollback and record requests; a runner (``runner``) drives
each deployment through the persisted state machine; a strategy (``strategy``: ``in-place``
switches the ``current`` symlink, ``link``, and restarts the process, ``restart``) does its
steps; the canary gate (``gate``) judges the bake. This room builds on ``agent.alerting``,
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
    "DeployEngine": "engine",
    "DeployHost": "support",
    "DeployRequest": "engine",
    "DeployError": "errors",
    "BakeGate": "gate",
    "Baseline": "gate",
    "Verdict": "gate",
    "Strategy": "strategy",
    "InPlace": "strategy",
    "Rollout": "strategy",
    "LinkError": "link",
    "switch_link": "link",
}
__all__ = [
    "ArtifactChanged",
    "ArtifactDigest",
    "ArtifactError",
    "BakeGate",
    "Baseline",
    "ConnectionHashCache",
    "DeployEngine",
    "DeployError",
    "DeployHost",
    "DeployRequest",
    "FileDigest",
    "HashCache",
    "HashStopped",
    "InPlace",
    "LinkError",
    "Rollout",
    "Strategy",
    "Verdict",
    "WriterHashCache",
    "digest_artifact",
    "hash_artifact",
    "switch_link",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
