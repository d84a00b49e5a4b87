"""The embedded demo: a tiny ONNX classifier and a KServe V2 server that serves it.

``vigil demo`` and the integration tests use these so Vigil can be tried, and tested, without
a GPU or a real model server. ``make_model`` is a dev-time tool (it needs the ``onnx`` package,
which is not a runtime dependency); the generated ``model.onnx`` is committed, and so are the
two later versions ``vigil demo`` offers to deploy (issue 16).
"""

from pathlib import Path

MODEL_PATH = Path(__file__).with_name("model.onnx")
"""The committed demo model: ``input`` FP32 [batch, 4] to ``probabilities`` FP32 [batch, 3]."""

BROKEN_PATH = Path(__file__).with_name("model-v2-broken.onnx")
"""Version 2, deliberately broken: the same network with other weights, so other answers (the
canary gate's golden check fails it and the deploy rolls back)."""

V3_PATH = Path(__file__).with_name("model-v3.onnx")
"""Version 3: version 1 re-exported (other bytes, the same weights and answers: promoted)."""
